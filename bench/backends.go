package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/pages/s3store"
)

// openBackends gives the run a corner of each external service: a
// PostgreSQL schema of its own and an object prefix of its own, so that
// runs never see each other's volumes and a run can clean up after itself.
// The returned cleanup drops them, unless Config.Keep.
func (rn *runner) openBackends(ctx context.Context) (func() error, error) {
	cfg := rn.cfg
	var cleanups []func() error
	cleanup := func() error {
		var errs []error
		for _, f := range cleanups {
			errs = append(errs, f())
		}
		return errors.Join(errs...)
	}
	if cfg.PostgresURL != "" {
		schema := "cambium_bench_" + rn.id
		if err := pgExec(ctx, cfg.PostgresURL, "CREATE SCHEMA "+schema); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		sep := "?"
		if strings.Contains(cfg.PostgresURL, "?") {
			sep = "&"
		}
		rn.pgURL = cfg.PostgresURL + sep + "search_path=" + schema
		if !cfg.Keep {
			cleanups = append(cleanups, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return pgExec(ctx, cfg.PostgresURL, "DROP SCHEMA "+schema+" CASCADE")
			})
		}
	}
	if cfg.S3 != nil {
		s := cfg.S3
		rn.s3 = &s3Config{Endpoint: s.Endpoint, Bucket: s.Bucket, Region: s.Region, Secure: s.Secure,
			AccessKey: s.AccessKey, SecretKey: s.SecretKey, Prefix: s.Prefix + "cambium-bench-" + rn.id + "/"}
		if !cfg.Keep {
			cleanups = append(cleanups, func() error { return deletePrefix(rn.s3) })
		}
	}
	return cleanup, nil
}

func pgExec(ctx context.Context, url, q string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, q)
	return err
}

// deletePrefix deletes every object of the run.
func deletePrefix(c *s3Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	store, err := s3store.Open(ctx, *c.store())
	if err != nil {
		return err
	}
	keys := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 8 {
		wg.Go(func() {
			for k := range keys {
				if err := store.Delete(ctx, k); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for obj, err := range store.List(ctx, "") {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			break
		}
		keys <- obj.Key
	}
	close(keys)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("delete objects under %s/%s: %w (and %d more)", c.Bucket, c.Prefix, errs[0], len(errs)-1)
	}
	return nil
}

// redactURL hides a password in a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
