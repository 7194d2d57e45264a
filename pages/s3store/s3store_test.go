package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/pagestest"
)

// These tests run against the real MinIO that scripts/with-services starts;
// without it testutil.MustS3 fails them.

// testConfig returns a Config for the test MinIO server and a bucket name no
// other test uses, and removes that bucket with its objects when t ends.
func testConfig(t testing.TB) Config {
	t.Helper()
	s3 := testutil.MustS3(t)
	cfg := Config{
		Endpoint:  s3.Endpoint,
		Bucket:    "cambium-test-" + testutil.RandomName(6),
		AccessKey: s3.AccessKey,
		SecretKey: s3.SecretKey,
		RetryBase: time.Millisecond,
		RetryMax:  10 * time.Millisecond,
	}
	t.Cleanup(func() { removeBucket(t, cfg) })
	return cfg
}

// rawClient returns a plain minio-go client for cfg, to look at the bucket
// behind a Store's back.
func rawClient(t testing.TB, cfg Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Region: DefaultRegion,
	})
	if err != nil {
		t.Fatalf("minio.New: %v", err)
	}
	return c
}

// removeBucket deletes cfg's bucket and everything in it, if it exists,
// after checking that no multipart upload was left incomplete.
func removeBucket(t testing.TB, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := rawClient(t, cfg)
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		t.Errorf("cleanup: bucket %s: %v", cfg.Bucket, err)
		return
	}
	if !ok {
		return
	}
	// Like bbolt's MustCheck: a Store must not leave half-done multipart
	// uploads behind.
	for u := range c.ListIncompleteUploads(ctx, cfg.Bucket, "", true) {
		if u.Err != nil {
			t.Errorf("cleanup: list incomplete uploads in %s: %v", cfg.Bucket, u.Err)
			break
		}
		t.Errorf("cleanup: incomplete multipart upload left in %s: %s", cfg.Bucket, u.Key)
	}
	objects := c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true})
	for res := range c.RemoveObjects(ctx, cfg.Bucket, objects, minio.RemoveObjectsOptions{}) {
		if res.Err != nil {
			t.Errorf("cleanup: remove %s/%s: %v", cfg.Bucket, res.ObjectName, res.Err)
		}
	}
	if err := c.RemoveBucket(ctx, cfg.Bucket); err != nil {
		t.Errorf("cleanup: remove bucket %s: %v", cfg.Bucket, err)
	}
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open(%s/%s)=%v", cfg.Endpoint, cfg.Bucket, err)
	}
	return s
}

func TestStore(t *testing.T) {
	pagestest.Run(t, func(t *testing.T) pages.Store {
		return mustOpen(t, testConfig(t))
	})
}

func TestStore_Prefix(t *testing.T) {
	cfg := testConfig(t)
	a, b := cfg, cfg
	a.Prefix, b.Prefix = "vol-a/", "vol-b/"
	sa := mustOpen(t, a)
	// The prefixed store passes the whole suite too.
	pagestest.Run(t, func(t *testing.T) pages.Store {
		c := cfg
		c.Prefix = "suite-" + testutil.RandomName(4) + "/"
		return mustOpen(t, c)
	})
	sb := mustOpen(t, b)
	ctx := t.Context()
	if err := sa.Put(ctx, "segments/1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := sb.Put(ctx, "segments/1", []byte("bb")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		s    *Store
		want string
	}{{sa, "a"}, {sb, "bb"}} {
		got, err := tt.s.Read(ctx, "segments/1")
		if err != nil || string(got) != tt.want {
			t.Fatalf("Read(segments/1)=%q, %v; want %q", got, err, tt.want)
		}
		var keys []string
		for o, err := range tt.s.List(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, o.Key)
		}
		if !slices.Equal(keys, []string{"segments/1"}) {
			t.Fatalf("List()=%q, want [segments/1]", keys)
		}
	}
	info, err := rawClient(t, cfg).StatObject(ctx, cfg.Bucket, "vol-b/segments/1", minio.StatObjectOptions{})
	if err != nil || info.Size != 2 {
		t.Fatalf("StatObject(vol-b/segments/1)=%d bytes, %v; want 2 bytes", info.Size, err)
	}
}

// TestStore_Put_Multipart puts an object larger than PartSize, which goes up
// in parts, and reads it back across a part boundary.
func TestStore_Put_Multipart(t *testing.T) {
	cfg := testConfig(t)
	cfg.PartSize = minPartSize
	s := mustOpen(t, cfg)
	ctx := t.Context()
	data := make([]byte, 2*minPartSize+12345)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	if err := s.Put(ctx, "segments/big", data); err != nil {
		t.Fatalf("Put of %d bytes=%v", len(data), err)
	}
	// A multipart upload's ETag ends in "-<parts>".
	info, err := rawClient(t, cfg).StatObject(ctx, cfg.Bucket, "segments/big", minio.StatObjectOptions{})
	if err != nil || !strings.HasSuffix(info.ETag, "-3") {
		t.Fatalf("StatObject: ETag %q, %v; want a 3-part upload", info.ETag, err)
	}
	got, err := s.Read(ctx, "segments/big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Read=%d bytes, %v; want the %d bytes put", len(got), err, len(data))
	}
	got, err = s.ReadRange(ctx, "segments/big", minPartSize-10, 20)
	if err != nil || !bytes.Equal(got, data[minPartSize-10:minPartSize+10]) {
		t.Fatalf("ReadRange across a part boundary=%v, %v; want %v", got, err, data[minPartSize-10:minPartSize+10])
	}
}

func TestOpen(t *testing.T) {
	t.Run("CreatesBucket", func(t *testing.T) {
		cfg := testConfig(t)
		c := rawClient(t, cfg)
		if ok, err := c.BucketExists(t.Context(), cfg.Bucket); err != nil || ok {
			t.Fatalf("before Open: BucketExists=%v, %v; want false", ok, err)
		}
		mustOpen(t, cfg)
		if ok, err := c.BucketExists(t.Context(), cfg.Bucket); err != nil || !ok {
			t.Fatalf("after Open: BucketExists=%v, %v; want true", ok, err)
		}
		// Opening an existing bucket keeps its objects.
		s := mustOpen(t, cfg)
		if err := s.Put(t.Context(), "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if got, err := mustOpen(t, cfg).Read(t.Context(), "k"); err != nil || string(got) != "v" {
			t.Fatalf("Read(k) after reopening=%q, %v; want v", got, err)
		}
	})
	t.Run("ConcurrentCreate", func(t *testing.T) {
		cfg := testConfig(t)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				s, err := Open(t.Context(), cfg)
				if err == nil {
					err = s.ensureBucket(t.Context()) // and MakeBucket on an existing one
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Open of one new bucket: %v", err)
		}
	})
	t.Run("MakeBucketRace", func(t *testing.T) {
		// The loser of a creation race sees BucketAlreadyOwnedByYou.
		cfg := testConfig(t)
		s := mustOpen(t, cfg)
		err := s.client.MakeBucket(t.Context(), cfg.Bucket, minio.MakeBucketOptions{Region: DefaultRegion})
		if resp, _ := asErrorResponse(err); resp.Code != "BucketAlreadyOwnedByYou" {
			t.Fatalf("MakeBucket of an existing bucket=%v, want BucketAlreadyOwnedByYou", err)
		}
	})
	t.Run("InvalidConfig", func(t *testing.T) {
		ok := Config{Endpoint: "127.0.0.1:1", Bucket: "b"}
		for name, mutate := range map[string]func(*Config){
			"NoEndpoint": func(c *Config) { c.Endpoint = "" },
			"NoBucket":   func(c *Config) { c.Bucket = "" },
			"Scheme":     func(c *Config) { c.Endpoint = "http://127.0.0.1:1" },
			"PartSize":   func(c *Config) { c.PartSize = 1 << 20 },
			"Prefix":     func(c *Config) { c.Prefix = "/abs/" },
		} {
			cfg := ok
			mutate(&cfg)
			if _, err := Open(t.Context(), cfg); err == nil {
				t.Errorf("Open with %s=nil, want an error", name)
			}
		}
		cfg := ok
		cfg.Prefix = "../"
		if _, err := Open(t.Context(), cfg); !errors.Is(err, pages.ErrInvalidKey) {
			t.Errorf("Open with prefix ../=%v, want ErrInvalidKey", err)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tt := range []struct {
		in                string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 90-99/100", 90, 99, 100, true},
		{"bytes */100", 0, 0, 0, false},
		{"bytes 0-99/*", 0, 0, 0, false},
		{"0-99/100", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		first, last, size, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || tt.ok && (first != tt.first || last != tt.last || size != tt.size) {
			t.Errorf("parseContentRange(%q)=%d, %d, %d, %v; want %d, %d, %d, ok=%v",
				tt.in, first, last, size, err, tt.first, tt.last, tt.size, tt.ok)
		}
	}
}

// BenchmarkPut4K measures one bare 4 KiB Put against the real MinIO: the
// floor under any commit that uploads a segment.
func BenchmarkPut4K(b *testing.B) {
	s := mustOpen(b, testConfig(b))
	data := bytes.Repeat([]byte{0x5A}, 4096)
	ctx := b.Context()
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		if err := s.Put(ctx, fmt.Sprintf("segments/%08d", i), data); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
