package sqlitestore

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/metastoretest"
)

// TestConformance runs the shared Metastore suite against a fresh file per
// subtest, with the default (durable) settings.
func TestConformance(t *testing.T) {
	metastoretest.Run(t, func(t *testing.T) pgschema.Metastore {
		path := filepath.Join(t.TempDir(), "meta.db")
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		// The suite registers its Close after this returns, so this cleanup
		// runs after it: reopen the closed file and check it.
		t.Cleanup(func() {
			s, err := Open(context.Background(), path)
			if err != nil {
				t.Fatalf("reopen after the suite: %v", err)
			}
			defer s.Close()
			mustCheck(t, s)
		})
		return s
	})
}

// BenchmarkCommit reports commits/s of 4-page commits through
// pgschema.AppendCommit, with 1 and 8 writers, at each durability setting.
func BenchmarkCommit(b *testing.B) {
	for _, sync := range []Synchronous{SyncFull, SyncNormal} {
		for _, writers := range []int{1, 8} {
			b.Run("sync="+string(sync)+"/writers="+strconv.Itoa(writers), func(b *testing.B) {
				s := mustOpen(b, WithSynchronous(sync))
				metastoretest.BenchCommit(b, s, writers)
			})
		}
	}
}

// BenchmarkAppendAll reports commits/s of 4-page commits appended 1 and 100
// at a time by AppendAll, one transaction each.
func BenchmarkAppendAll(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			s := mustOpen(b)
			metastoretest.BenchAppendAll(b, s, batch)
		})
	}
}

// BenchmarkChangedPages reports ChangedPages over 10,000 versions of 4 pages.
func BenchmarkChangedPages(b *testing.B) {
	s := mustOpen(b)
	metastoretest.BenchChangedPages(b, s)
}
