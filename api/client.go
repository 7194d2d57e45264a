package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cambiumdb/cambium/commit"
)

// Client talks to a cambiumd server. Its methods return the same typed
// errors the server's packages return (errors.Is / errors.As work across
// the wire); transport failures are returned wrapped as they are.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:7070
	HTTP    *http.Client // http.DefaultClient if nil
	Token   string       // bearer token, when the server authenticates
}

// NewClient returns a client for the server at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/")}
}

func (c *Client) http() *http.Client {
	if c.HTTP == nil {
		return http.DefaultClient
	}
	return c.HTTP
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxJSONBytes))
	var e Error
	if err := json.Unmarshal(b, &e); err != nil || e.Code == "" {
		return &RemoteError{Status: resp.StatusCode, Code: "http", Msg: strings.TrimSpace(string(b))}
	}
	return e.Err(resp.StatusCode)
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, ct, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &MalformedError{Reason: "response: " + err.Error()}
	}
	return nil
}

func volumePath(name string, rest string) string {
	return "/v1/volumes/" + url.PathEscape(name) + rest
}

// CreateVolume creates a volume; pageSize 0 means DefaultPageSize.
func (c *Client) CreateVolume(ctx context.Context, name string, pageSize int) (VolumeInfo, error) {
	var v VolumeInfo
	err := c.doJSON(ctx, http.MethodPost, "/v1/volumes", CreateVolumeRequest{Name: name, PageSize: pageSize}, &v)
	return v, err
}

// Volumes lists the server's volumes by name.
func (c *Client) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	var vs []VolumeInfo
	err := c.doJSON(ctx, http.MethodGet, "/v1/volumes", nil, &vs)
	return vs, err
}

// Volume returns one volume with its current head.
func (c *Client) Volume(ctx context.Context, name string) (VolumeInfo, error) {
	var v VolumeInfo
	err := c.doJSON(ctx, http.MethodGet, volumePath(name, ""), nil, &v)
	return v, err
}

// Push sends commits to a volume and returns one decision per commit, in
// order; a rejected commit's Result.Err is the typed reason. An error return
// means the outcome is unknown: push the same commits again, which is safe.
func (c *Client) Push(ctx context.Context, volume string, reqs []commit.Request) ([]commit.Result, error) {
	res, err := c.PushRaw(ctx, volume, AppendPush(nil, reqs))
	if err == nil && len(res) != len(reqs) {
		return nil, &MalformedError{Reason: fmt.Sprintf("push response: %d results for %d commits", len(res), len(reqs))}
	}
	return res, err
}

// PushRaw sends an encoded push body (AppendPush) as it is: for tools and
// tests that need to send exactly these bytes.
func (c *Client) PushRaw(ctx context.Context, volume string, body []byte) ([]commit.Result, error) {
	resp, err := c.do(ctx, http.MethodPost, volumePath(volume, "/push"), "application/x-cambium-push", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var pr PushResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		return nil, &MalformedError{Reason: "push response: " + err.Error()}
	}
	out := make([]commit.Result, len(pr.Results))
	for i, r := range pr.Results {
		out[i] = commit.Result{Seq: r.Seq, Decision: commit.Decision(r.Decision), Version: r.Version, Reason: r.Reason, Duplicate: r.Duplicate}
		if r.Error != nil {
			out[i].Err = r.Error.Err(http.StatusConflict)
		}
	}
	return out, nil
}

// Pull streams the pages of volume changed after version from, up to the
// head at the time of the request, each page once, to fn. It returns the
// stream's header (the head reached and its page count) once every page
// was delivered; a stream cut short is an error, so a caller applying pages
// must apply them only after Pull returns nil.
func (c *Client) Pull(ctx context.Context, volume string, from int64, fn func(StreamedPage) error) (PageStreamHeader, error) {
	resp, err := c.do(ctx, http.MethodGet, volumePath(volume, "/pull?from="+strconv.FormatInt(from, 10)), "", nil)
	if err != nil {
		return PageStreamHeader{}, err
	}
	defer resp.Body.Close()
	return readPageStream(resp.Body, fn)
}

// Changes returns the numbers of the pages changed in (from, head], with
// the head and its page count.
func (c *Client) Changes(ctx context.Context, volume string, from int64) (Changes, error) {
	var out Changes
	err := c.doJSON(ctx, http.MethodGet, volumePath(volume, "/changes?from="+strconv.FormatInt(from, 10)), nil, &out)
	return out, err
}

// ReadPages streams the given pages of snapshot (volume, version) to fn;
// pages the snapshot does not have are left out.
func (c *Client) ReadPages(ctx context.Context, volume string, version int64, pageNos []uint32, fn func(StreamedPage) error) (PageStreamHeader, error) {
	b, err := json.Marshal(ReadPagesRequest{Version: version, Pages: pageNos})
	if err != nil {
		return PageStreamHeader{}, err
	}
	resp, err := c.do(ctx, http.MethodPost, volumePath(volume, "/pages"), "application/json", bytes.NewReader(b))
	if err != nil {
		return PageStreamHeader{}, err
	}
	defer resp.Body.Close()
	return readPageStream(resp.Body, fn)
}

func readPageStream(r io.Reader, fn func(StreamedPage) error) (PageStreamHeader, error) {
	pr, err := NewPageReader(r)
	if err != nil {
		return PageStreamHeader{}, err
	}
	for {
		p, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return pr.Header, nil
		}
		if err != nil {
			return pr.Header, err
		}
		if err := fn(p); err != nil {
			return pr.Header, err
		}
	}
}
