package pgstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/metastoretest"
	"github.com/cambiumdb/cambium/pgschema/pgstore"
)

// mustOpen opens a Store over a fresh schema of the test PostgreSQL server.
func mustOpen(tb testing.TB) *pgstore.Store {
	tb.Helper()
	s, err := pgstore.Open(context.Background(), testutil.MustPostgresSchema(tb), pgstore.Options{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return s
}

func TestStore_Conformance(t *testing.T) {
	metastoretest.Run(t, func(t *testing.T) pgschema.Metastore { return mustOpen(t) })
}

func BenchmarkCommit(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(map[int]string{1: "Writers1", 8: "Writers8"}[writers], func(b *testing.B) {
			s := mustOpen(b)
			defer s.Close()
			metastoretest.BenchCommit(b, s, writers)
		})
	}
}

func BenchmarkAppendAll(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("Batch%d", batch), func(b *testing.B) {
			s := mustOpen(b)
			defer s.Close()
			metastoretest.BenchAppendAll(b, s, batch)
		})
	}
}

func BenchmarkChangedPages(b *testing.B) {
	s := mustOpen(b)
	defer s.Close()
	metastoretest.BenchChangedPages(b, s)
}
