package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// retryPolicy retries transient failures with capped exponential backoff and
// jitter.
//
// Retries are ours, not minio-go's: the client is built with
// minio.Options.MaxRetries = 1, which turns off minio-go's own loop for that
// client only (the package-level minio.MaxRetry stays untouched). Left on,
// minio-go would retry each request up to 10 times on its own schedule, which
// multiplies with ours, retries some codes we treat as permanent (ExpiredToken,
// any request error that is not a TLS one), and cannot retry a GET whose body
// breaks mid-read, because it returns once the headers arrive. Here one
// policy, bounded by Config.MaxRetries and the caller's context, covers the
// whole operation, body included.
type retryPolicy struct {
	maxRetries int           // retries after the first attempt; 0 means none
	base, max  time.Duration // first backoff, and cap on any backoff
}

// do calls fn until it returns nil or a non-transient error, the retries are
// used up, or ctx is done. It never starts an attempt on a done context.
func (p retryPolicy) do(ctx context.Context, fn func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctxError(ctx, err)
		}
		if !transient(err) {
			return err
		}
		if attempt >= p.maxRetries {
			return fmt.Errorf("giving up after %d attempts: %w", attempt+1, err)
		}
		if werr := p.wait(ctx, attempt); werr != nil {
			return ctxError(ctx, err)
		}
	}
}

// retryableError marks an error the operation itself judged worth retrying,
// though transient alone would not.
type retryableError struct{ err error }

func (e retryableError) Error() string { return e.err.Error() }
func (e retryableError) Unwrap() error { return e.err }

// backoff returns the pause before retry number attempt+1: a random duration
// in [d/2, d] where d = min(max, base·2^attempt). Half the range is random so
// that clients failing together do not retry in lockstep ("equal jitter").
func (p retryPolicy) backoff(attempt int) time.Duration {
	d := p.base
	for i := 0; i < attempt && d < p.max; i++ {
		d *= 2 // d < max, so no overflow
	}
	d = min(d, p.max)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// wait sleeps for backoff(attempt), or returns ctx.Err() if ctx is done first.
func (p retryPolicy) wait(ctx context.Context, attempt int) error {
	t := time.NewTimer(p.backoff(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ctxError returns an error for an operation ended by ctx: it wraps ctx.Err()
// so errors.Is(err, context.Canceled) holds, and keeps the last error's text.
func ctxError(ctx context.Context, last error) error {
	cerr := ctx.Err()
	if last == nil {
		return cerr
	}
	if errors.Is(last, cerr) {
		return last
	}
	return fmt.Errorf("%w (last error: %v)", cerr, last)
}

// transient reports whether err is worth retrying: the server was busy or
// failed (HTTP 429, 500, 502, 503, 504, or an S3 code saying so), or the
// connection failed (refused, reset, closed early, timed out, cut mid-body). Everything
// else, in particular every other 4xx (NoSuchKey, InvalidRange, AccessDenied,
// SignatureDoesNotMatch), means the request itself is wrong and is returned
// at once. The caller checks its own context first, so a timeout seen here is
// one of the transport's, not the caller's deadline.
func transient(err error) bool {
	var r retryableError
	if errors.As(err, &r) {
		return true
	}
	if resp, ok := asErrorResponse(err); ok {
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		switch resp.Code {
		case "SlowDown", "SlowDownRead", "SlowDownWrite", "RequestTimeout", "InternalError",
			"ServiceUnavailable", "Throttling", "ThrottlingException", "RequestLimitExceeded",
			"RequestThrottled", "XMinioServerNotInitialized":
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	// A failed dial, read or write on the connection: refused, reset, or
	// closed under a request being written (net.ErrClosed, when the
	// transport closes a connection the server hung up on). Only a name
	// that does not resolve is not worth a retry.
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		var dnsErr *net.DNSError
		return !errors.As(err, &dnsErr) || !dnsErr.IsNotFound
	}
	for _, target := range []error{
		context.DeadlineExceeded, // an http.Client or transport timeout
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT,
		io.EOF, io.ErrUnexpectedEOF, // the connection closed before or during the response
		net.ErrClosed,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	// minio-go replaces an EOF from the transport with this message, losing
	// io.EOF (minio-go api.go, Client.do).
	var urlErr *url.Error
	if errors.As(err, &urlErr) && strings.HasPrefix(urlErr.Err.Error(), "Connection closed by foreign host") {
		return true
	}
	return false
}

// asErrorResponse returns the S3 error response err wraps, if any.
func asErrorResponse(err error) (minio.ErrorResponse, bool) {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp, true
	}
	var respPtr *minio.ErrorResponse
	if errors.As(err, &respPtr) && respPtr != nil {
		return *respPtr, true
	}
	return minio.ErrorResponse{}, false
}
