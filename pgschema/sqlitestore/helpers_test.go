package sqlitestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
)

// mustOpen opens a store on a fresh file in t's temp directory and closes it
// when t ends, after checking the database's integrity and foreign keys.
func mustOpen(tb testing.TB, opts ...Option) *Store {
	tb.Helper()
	return mustOpenPath(tb, filepath.Join(tb.TempDir(), "meta.db"), opts...)
}

func mustOpenPath(tb testing.TB, path string, opts ...Option) *Store {
	tb.Helper()
	s, err := Open(context.Background(), path, opts...)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		mustCheck(tb, s)
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// mustCheck runs SQLite's integrity and foreign-key checks. A closed store is
// skipped: tests that close it themselves check before.
func mustCheck(tb testing.TB, s *Store) {
	tb.Helper()
	ctx := context.Background()
	if err := s.w.PingContext(ctx); err != nil {
		tb.Errorf("check store: %v", err)
		return
	}
	var res string
	if err := s.w.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		tb.Errorf("integrity_check=%q, %v; want ok", res, err)
	}
	rows, err := s.w.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		tb.Errorf("foreign_key_check: %v", err)
		return
	}
	defer rows.Close()
	if rows.Next() {
		tb.Errorf("foreign_key_check found violations")
	}
}

func mustCreateVolume(tb testing.TB, s *Store, name string) pgschema.Volume {
	tb.Helper()
	v, err := s.CreateVolume(context.Background(), name, 4096)
	if err != nil {
		tb.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return v
}

// testLoc is a deterministic location for page pageNo of version, with the
// hash's high bit set for odd pages.
func testLoc(version int64, pageNo uint32) pages.Location {
	h := uint64(version)<<20 | uint64(pageNo)
	if pageNo%2 == 1 {
		h |= 1 << 63
	}
	return pages.Location{
		Segment:     fmt.Sprintf("segments/v%d", version),
		FrameOffset: version * 100,
		FrameLength: 50 + int64(pageNo),
		PageOffset:  int64(pageNo) * 4096,
		Hash:        h,
	}
}

// testCommit is a fast-path commit of version writing pageNos.
func testCommit(vol, version int64, pageCount uint32, pageNos ...uint32) pgschema.NewCommit {
	c := pgschema.NewCommit{
		Volume:     vol,
		Version:    version,
		Base:       version - 1,
		ClientID:   "client",
		ClientSeq:  version,
		Decision:   pgschema.FastPath,
		PageCount:  pageCount,
		Record:     []byte(fmt.Sprintf("record %d", version)),
		Checksum:   []byte{1, 2, byte(version)},
		ReceivedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC),
	}
	for _, p := range pageNos {
		c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: testLoc(version, p)})
	}
	return c
}

// lockAppend appends c in its own Update.
func lockAppend(ctx context.Context, s *Store, c pgschema.NewCommit) error {
	return s.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, c.Volume); err != nil {
			return err
		}
		return tx.Append(ctx, c)
	})
}

func mustAppend(tb testing.TB, s *Store, c pgschema.NewCommit) {
	tb.Helper()
	if err := lockAppend(context.Background(), s, c); err != nil {
		tb.Fatalf("append version %d to volume %d: %v", c.Version, c.Volume, err)
	}
}

// countRows counts the rows of table (a constant in the tests).
func countRows(tb testing.TB, s *Store, table string) int {
	tb.Helper()
	var n int
	if err := s.r.QueryRowContext(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		tb.Fatalf("count %s: %v", table, err)
	}
	return n
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
