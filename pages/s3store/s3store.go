// Package s3store implements pages.Store on an S3-compatible object store
// (MinIO in tests and most deployments) through minio-go.
//
// It owns how keys become object names in one bucket (Config.Prefix + key),
// how S3 answers become pages errors (NoSuchKey is pages.ErrNotFound,
// InvalidRange or a short range is a *pages.RangeError), and retrying
// transient failures (see retryPolicy). It does not know what the objects
// hold.
//
// Every call costs the requests it must and no more in the common case: Put
// is one PUT (multipart only above Config.PartSize), Read and ReadRange one
// GET, Delete one DELETE, List one request per 1,000 keys. Error paths may add
// a HEAD (a ReadRange past the end learns the object's size that way).
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cambiumdb/cambium/pages"
)

// Defaults for the zero fields of Config.
const (
	DefaultRegion     = "us-east-1"
	DefaultMaxRetries = 5
	DefaultRetryBase  = 50 * time.Millisecond
	DefaultRetryMax   = 2 * time.Second
	DefaultPartSize   = 16 << 20 // bytes; larger objects are uploaded in parts
)

// minPartSize is S3's smallest part of a multipart upload (except the last).
const minPartSize = 5 << 20

// Config says where a Store keeps its objects and how it retries.
type Config struct {
	// Endpoint is the S3 API's host and port, without a scheme, e.g.
	// "127.0.0.1:9000" or "s3.eu-west-1.amazonaws.com". Required.
	Endpoint string
	// Bucket holds the objects; Open creates it if missing. Required.
	Bucket string
	// AccessKey and SecretKey sign requests (AWS signature v4).
	AccessKey, SecretKey string
	// Region of the bucket; DefaultRegion if empty. Naming it spares a
	// bucket-location request.
	Region string
	// Secure selects HTTPS.
	Secure bool
	// Prefix is prepended to every key to name its object, so several stores
	// can share a bucket ("volumes-a/"). Keys List yields do not include it.
	// It must be empty or a valid List prefix.
	Prefix string

	// MaxRetries bounds the retries of one call after its first attempt;
	// 0 means DefaultMaxRetries and a negative value means no retries.
	MaxRetries int
	// RetryBase is the pause before the first retry, doubled for each next
	// one, with jitter; 0 means DefaultRetryBase.
	RetryBase time.Duration
	// RetryMax caps any one pause; 0 means DefaultRetryMax.
	RetryMax time.Duration

	// PartSize is the part size of a multipart upload, used only for objects
	// larger than it; 0 means DefaultPartSize. At least 5 MiB.
	PartSize uint64

	// Transport carries the requests; nil means a transport of this Store's
	// own (minio.DefaultTransport). Timeouts of a call come from its context.
	Transport http.RoundTripper
}

var _ pages.Store = (*Store)(nil)

// Store is a pages.Store on one S3 bucket. It is safe for concurrent use.
type Store struct {
	client *minio.Client
	core   minio.Core // single-request calls that return the response headers
	bucket string
	prefix string
	region string
	part   uint64
	retry  retryPolicy
}

// Open connects to the S3 endpoint cfg names and returns a Store on
// cfg.Bucket, creating the bucket if it does not exist. A bucket created
// concurrently by another Open is fine. Open retries transient failures like
// every other call and fails on any other error, e.g. wrong credentials.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s, err := newStore(cfg)
	if err != nil {
		return nil, fmt.Errorf("open s3store: %w", err)
	}
	if err := s.retry.do(ctx, s.ensureBucket); err != nil {
		return nil, fmt.Errorf("open s3store %s/%s: %w", cfg.Endpoint, cfg.Bucket, err)
	}
	return s, nil
}

func newStore(cfg Config) (*Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("endpoint and bucket are required")
	}
	if !pages.ValidPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("prefix %q: %w", cfg.Prefix, pages.ErrInvalidKey)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize {
		return nil, fmt.Errorf("part size %d is below the S3 minimum of %d", cfg.PartSize, minPartSize)
	}
	tr := cfg.Transport
	if tr == nil {
		t, err := minio.DefaultTransport(cfg.Secure)
		if err != nil {
			return nil, err
		}
		tr = t
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Region:    cfg.Region,
		Transport: tr,
		// 1 attempt: minio-go's own retries are off for this client; see
		// retryPolicy for why we retry ourselves.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, err
	}
	return &Store{
		client: client,
		core:   minio.Core{Client: client},
		bucket: cfg.Bucket,
		prefix: cfg.Prefix,
		region: cfg.Region,
		part:   cfg.PartSize,
		retry:  retryPolicy{maxRetries: cfg.MaxRetries, base: cfg.RetryBase, max: cfg.RetryMax},
	}, nil
}

// ensureBucket makes the bucket unless it exists. Another process may create
// it between the check and MakeBucket: that answers BucketAlreadyOwnedByYou
// (same account) or, on some servers, BucketAlreadyExists, which is fine as
// long as we can then see it.
func (s *Store) ensureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil || ok {
		return err
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
	if err == nil {
		return nil
	}
	resp, _ := asErrorResponse(err)
	switch resp.Code {
	case "BucketAlreadyOwnedByYou":
		return nil
	case "BucketAlreadyExists":
		if ok, err2 := s.client.BucketExists(ctx, s.bucket); err2 == nil && ok {
			return nil
		}
	}
	return err
}

// Bucket returns the name of the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// name returns the object name of a valid key.
func (s *Store) name(key string) string { return s.prefix + key }

// check validates key and the context before an operation named op.
func check(ctx context.Context, op, key string) error {
	if !pages.ValidKey(key) {
		return fmt.Errorf("%s %q: %w", op, key, pages.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return nil
}

// isNotFound reports whether err says the object does not exist. A missing
// bucket is not a missing object: it is returned as is.
func isNotFound(err error) bool {
	resp, ok := asErrorResponse(err)
	return ok && (resp.Code == minio.NoSuchKey ||
		resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket)
}

// isInvalidRange reports whether err is S3's answer to a range that starts
// at or after the end of the object.
func isInvalidRange(err error) bool {
	resp, ok := asErrorResponse(err)
	return ok && (resp.Code == minio.InvalidRange || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable)
}

// Put uploads data as object key with one PUT of known length (a multipart
// upload above Config.PartSize). S3 makes the object visible only once it
// is whole and stored, so readers never see part of it. Retrying the same
// bytes after a lost answer is harmless: the object is replaced by itself.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if err := check(ctx, "put", key); err != nil {
		return err
	}
	denied := 0
	err := s.retry.do(ctx, func(ctx context.Context) error {
		_, err := s.client.PutObject(ctx, s.bucket, s.name(key), bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: s.part})
		// MinIO on a single drive answers AccessDenied when its final rename
		// races a Delete that removes the now-empty parent directory
		// (minio/minio#12914, #3519): garbage collection deleting segments
		// while commits upload them does exactly that. Seen here in the
		// conformance suite's concurrent test. A real policy denial costs
		// the few extra attempts below before it is returned.
		if resp, ok := asErrorResponse(err); ok && resp.Code == "AccessDenied" && denied < putAccessDeniedRetries {
			denied++
			return retryableError{err}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// putAccessDeniedRetries bounds Put's retries of an AccessDenied answer.
const putAccessDeniedRetries = 2

// ReadRange returns length bytes of object key from offset with one ranged
// GET, whose body it reads in full and checks against the length asked. A
// missing object is ErrNotFound; a range not inside the object is a
// *pages.RangeError, whose Size costs a HEAD when the GET did not tell it.
// A zero length (valid for 0 <= offset <= size) costs a HEAD instead of the
// GET, since HTTP ranges cannot be empty.
func (s *Store) ReadRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	if err := check(ctx, "read range", key); err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 || offset > math.MaxInt64-length {
		return s.readRangeStat(ctx, key, offset, length)
	}
	var buf []byte
	err := s.retry.do(ctx, func(ctx context.Context) error {
		var err error
		buf, err = s.getRange(ctx, key, offset, length)
		return err
	})
	var rangeErr *pages.RangeError
	switch {
	case err == nil:
		return buf, nil
	case errors.As(err, &rangeErr):
		return nil, fmt.Errorf("read range: %w", err)
	case isNotFound(err):
		return nil, fmt.Errorf("read range %s: %w", key, pages.ErrNotFound)
	case isInvalidRange(err):
		// The range starts at or past the end; learn the size for the error.
		return s.readRangeStat(ctx, key, offset, length)
	}
	return nil, fmt.Errorf("read range %s [%d, %d): %w", key, offset, offset+length, err)
}

// getRange is one attempt of ReadRange: a GET of bytes [offset,
// offset+length), which S3 answers with 206 and a Content-Range
// "bytes first-last/size", cutting a range that runs past the end short.
func (s *Store) getRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+length-1); err != nil {
		return nil, err
	}
	body, _, header, err := s.core.GetObject(ctx, s.bucket, s.name(key), opts)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	cr := header.Get("Content-Range")
	first, last, size, err := parseContentRange(cr)
	if err != nil {
		return nil, err
	}
	if first != offset || last < first {
		return nil, fmt.Errorf("asked for bytes %d-%d, got Content-Range %q", offset, offset+length-1, cr)
	}
	if got := last - first + 1; got < length {
		return nil, &pages.RangeError{Key: key, Offset: offset, Length: length, Size: size}
	}
	buf := make([]byte, length)
	if n, err := io.ReadFull(body, buf); err != nil {
		return nil, fmt.Errorf("read body: got %d of %d bytes: %w", n, length, err)
	}
	return buf, nil
}

// parseContentRange parses "bytes first-last/size" (RFC 9110, 14.4).
func parseContentRange(s string) (first, last, size int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	span, total, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if size, err = strconv.ParseInt(total, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	return first, last, size, nil
}

// readRangeStat answers the ReadRange calls a GET cannot: empty or invalid
// ranges, and ranges S3 refused. It learns the size with a HEAD and returns
// an empty slice or the *pages.RangeError.
func (s *Store) readRangeStat(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	size, err := s.size(ctx, key)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("read range %s: %w", key, pages.ErrNotFound)
		}
		return nil, fmt.Errorf("read range %s: %w", key, err)
	}
	if offset < 0 || length < 0 || offset > size || length > size-offset {
		return nil, fmt.Errorf("read range: %w",
			&pages.RangeError{Key: key, Offset: offset, Length: length, Size: size})
	}
	if length == 0 {
		return []byte{}, nil
	}
	// S3 refused a range that the object's size says is inside it.
	return nil, fmt.Errorf("read range %s [%d, %d): refused as invalid, but the object has %d bytes",
		key, offset, offset+length, size)
}

// size returns the size of object key with a HEAD request.
func (s *Store) size(ctx context.Context, key string) (int64, error) {
	var size int64
	err := s.retry.do(ctx, func(ctx context.Context) error {
		info, err := s.client.StatObject(ctx, s.bucket, s.name(key), minio.StatObjectOptions{})
		size = info.Size
		return err
	})
	return size, err
}

// Read returns the whole object key with one GET, or ErrNotFound. The body
// is read in full and checked against the length the server announced.
func (s *Store) Read(ctx context.Context, key string) ([]byte, error) {
	if err := check(ctx, "read", key); err != nil {
		return nil, err
	}
	var buf []byte
	err := s.retry.do(ctx, func(ctx context.Context) error {
		body, info, _, err := s.core.GetObject(ctx, s.bucket, s.name(key), minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer body.Close()
		if info.Size < 0 {
			buf, err = io.ReadAll(body)
			return err
		}
		buf = make([]byte, info.Size)
		if n, err := io.ReadFull(body, buf); err != nil {
			return fmt.Errorf("read body: got %d of %d bytes: %w", n, info.Size, err)
		}
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("read %s: %w", key, pages.ErrNotFound)
		}
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf, nil
}

// Delete removes object key with one DELETE. S3 answers a DELETE of a
// missing object with success, so Delete returns nil for it, and a retried
// Delete is harmless.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key); err != nil {
		return err
	}
	err := s.retry.do(ctx, func(ctx context.Context) error {
		err := s.client.RemoveObject(ctx, s.bucket, s.name(key), minio.RemoveObjectOptions{})
		if isNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List yields the objects whose key starts with prefix in ascending key
// order, as S3's ListObjectsV2 returns them (UTF-8 byte order), 1,000 per
// request. A transient failure between pages resumes after the last key
// yielded, with the same retry policy as other calls. Breaking out of the
// loop cancels the listing.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[pages.Object, error] {
	return func(yield func(pages.Object, error) bool) {
		if !pages.ValidPrefix(prefix) {
			yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, pages.ErrInvalidKey))
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		fetchOwner := false
		last := "" // object name of the last object yielded
		for failures := 0; ; {
			if err := ctx.Err(); err != nil {
				yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, err))
				return
			}
			var err error
			for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
				Prefix:     s.prefix + prefix,
				Recursive:  true,
				StartAfter: last,
				FetchOwner: &fetchOwner,
			}) {
				if info.Err != nil {
					err = info.Err
					break
				}
				if last != "" && info.Key <= last {
					yield(pages.Object{}, fmt.Errorf("list %q: server listed %q after %q", prefix, info.Key, last))
					return
				}
				last = info.Key
				failures = 0
				o := pages.Object{Key: strings.TrimPrefix(info.Key, s.prefix), Size: info.Size, ModTime: info.LastModified}
				if !yield(o, nil) {
					return
				}
			}
			switch {
			case ctx.Err() != nil:
				// minio-go ends a listing silently when its context is done,
				// so a short listing must not pass for a complete one.
				yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, ctxError(ctx, err)))
				return
			case err == nil:
				return
			case !transient(err):
				yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, err))
				return
			case failures >= s.retry.maxRetries:
				yield(pages.Object{}, fmt.Errorf("list %q: giving up after %d attempts: %w", prefix, failures+1, err))
				return
			}
			if werr := s.retry.wait(ctx, failures); werr != nil {
				yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, ctxError(ctx, err)))
				return
			}
			failures++
		}
	}
}
