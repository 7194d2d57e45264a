package pgstore

import (
	"context"
	"testing"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/metastoretest"
)

// TestStore_ConformanceOtherPaths runs the suite with every AppendAll
// sending its page rows by COPY, which the suite's small batches would
// otherwise rarely reach.
func TestStore_ConformanceOtherPaths(t *testing.T) {
	defer func(oldCopy int) { copyThresholdAll = oldCopy }(copyThresholdAll)
	copyThresholdAll = 0
	metastoretest.Run(t, func(t *testing.T) pgschema.Metastore {
		s, err := Open(context.Background(), testutil.MustPostgresSchema(t), Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
