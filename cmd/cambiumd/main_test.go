package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun_AuthFlags: cambiumd refuses to serve a non-loopback address
// without authentication unless told --no-auth, refuses --no-auth beside
// an admin token, and refuses an admin token too short to be a secret. Each
// fails before opening any backend or listener.
func TestRun_AuthFlags(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a run that got past the checks stops at once
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, "refusing to serve 0.0.0.0:0 without authentication"},
		{[]string{"--listen", ":0"}, "refusing to serve :0 without authentication"},
		{[]string{"--listen", "0.0.0.0:0", "--auth", "--no-auth"}, "choose one"},
		{[]string{"--listen", "127.0.0.1:0", "--admin-token-file", short}, "at least 16"},
		{[]string{"--admin-token-file", filepath.Join(dir, "missing")}, "--admin-token-file"},
	} {
		err := run(ctx, append(tc.args, "--data", filepath.Join(dir, "data")), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cambiumd %s: %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	for _, addr := range []string{"127.0.0.1:7070", "[::1]:7070", "localhost:7070"} {
		if !loopback(addr) {
			t.Errorf("loopback(%q) = false", addr)
		}
	}
	for _, addr := range []string{"0.0.0.0:7070", ":7070", "10.0.0.1:7070", "example.com:7070", "junk"} {
		if loopback(addr) {
			t.Errorf("loopback(%q) = true", addr)
		}
	}
}
