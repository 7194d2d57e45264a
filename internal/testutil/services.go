// Package testutil holds test helpers shared by Cambium's packages: finding
// the real PostgreSQL and MinIO servers that scripts/with-services starts, and
// giving each test an isolated corner of them. It holds no domain code.
//
// A test that needs a service and does not find it fails loudly, so CI can
// never count a silently skipped service test as passing. Only under
// `go test -short` does it skip instead, for a quick unit-only run.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables exported by scripts/with-services.
const (
	EnvPostgresURL = "CAMBIUM_TEST_PG_URL"        // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	EnvS3Endpoint  = "CAMBIUM_TEST_S3_ENDPOINT"   // 127.0.0.1:PORT (plain HTTP)
	EnvS3AccessKey = "CAMBIUM_TEST_S3_ACCESS_KEY" // MinIO root user
	EnvS3SecretKey = "CAMBIUM_TEST_S3_SECRET_KEY" // MinIO root password
)

// S3 is where the test MinIO server listens and how to sign in.
type S3 struct {
	Endpoint  string
	AccessKey string
	SecretKey string
}

func requireEnv(tb testing.TB, names ...string) []string {
	tb.Helper()
	vals := make([]string, len(names))
	var missing []string
	for i, n := range names {
		vals[i] = os.Getenv(n)
		if vals[i] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		msg := "service not configured: " + strings.Join(missing, ", ") +
			" unset; run the tests through scripts/with-services (make test), or use -short for unit tests only"
		if testing.Short() {
			tb.Skip(msg)
		}
		tb.Fatal(msg)
	}
	return vals
}

// MustPostgresURL returns the URL of the test PostgreSQL server.
func MustPostgresURL(tb testing.TB) string {
	tb.Helper()
	return requireEnv(tb, EnvPostgresURL)[0]
}

// MustPostgresSchema creates a fresh schema in the test PostgreSQL server and
// returns a URL whose connections use it (search_path), so each test has its
// own tables without paying for CREATE DATABASE. The schema is dropped when
// the test ends.
func MustPostgresSchema(tb testing.TB) string {
	tb.Helper()
	base := MustPostgresURL(tb)
	schema := "t_" + RandomName(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("connect to test postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// MustS3 returns the test MinIO server's endpoint and credentials. Tests make
// their own bucket (see RandomName) so they never see each other's objects.
func MustS3(tb testing.TB) S3 {
	tb.Helper()
	v := requireEnv(tb, EnvS3Endpoint, EnvS3AccessKey, EnvS3SecretKey)
	return S3{Endpoint: v[0], AccessKey: v[1], SecretKey: v[2]}
}

// RandomName returns n random bytes as lowercase hex: a name no other test
// run will pick, valid as a bucket suffix or a schema name.
func RandomName(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
