package pgstore

import (
	"context"
	"testing"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/metastoretest"
)

// TestStore_ConformanceWideRanges runs the suite with every ChangedPages
// range taking the long-range query, which the suite's short histories
// would otherwise never reach.
func TestStore_ConformanceWideRanges(t *testing.T) {
	defer func(old int64) { wideRange = old }(wideRange)
	wideRange = 1
	metastoretest.Run(t, func(t *testing.T) pgschema.Metastore {
		s, err := Open(context.Background(), testutil.MustPostgresSchema(t), Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
