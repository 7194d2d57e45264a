// Package metastoretest is the conformance suite for pgschema.Metastore: every
// backend (pgschema/pgstore, pgschema/sqlitestore) runs Run against a real
// instance, and calls the shared benchmark helpers (BenchCommit,
// BenchAppendAll, BenchChangedPages) so their numbers compare.
//
// It owns no metastore of its own. The page-lookup tests check a backend
// against an in-memory model of the contract documented on pgschema.Metastore.
package metastoretest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
)

// Run runs the conformance suite. Each subtest calls open for a fresh, empty
// metastore and closes it when the subtest ends, after a consistency check of
// every volume in it (contiguous versions, head and page count agreeing with
// the commit log); open must not close it itself.
func Run(t *testing.T, open func(t *testing.T) pgschema.Metastore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ms pgschema.Metastore)
	}{
		{"CreateVolume", testCreateVolume},
		{"CreateVolume/Exists", testCreateVolumeExists},
		{"CreateVolume/Invalid", testCreateVolumeInvalid},
		{"Volume/NotFound", testVolumeNotFound},
		{"Volumes", testVolumes},
		{"Append/OK", testAppendOK},
		{"Append/Chain", testAppendChain},
		{"Append/ManyPages", testAppendManyPages},
		{"Append/NotLocked", testAppendNotLocked},
		{"Append/StaleHead", testAppendStaleHead},
		{"Append/Invalid", testAppendInvalid},
		{"Append/Duplicate", testAppendDuplicate},
		{"Append/SharedSegment", testAppendSharedSegment},
		{"AppendCommit/Retry", testAppendCommitRetry},
		{"AppendCommit/StaleHead", testAppendCommitStaleHead},
		{"AppendCommit/ConcurrentRetry", testAppendCommitConcurrentRetry},
		{"AppendCommit/ConcurrentWriters", testConcurrentWriters},
		{"LockVolume/NotFound", testLockVolumeNotFound},
		{"LockVolumes", testLockVolumes},
		{"LookupCommits", testLookupCommits},
		{"AppendAll/OK", testAppendAllOK},
		{"AppendAll/Fails", testAppendAllFails},
		{"AppendAll/ManyPages", testAppendAllManyPages},
		{"Update/Rollback", testUpdateRollback},
		{"Commit/RoundTrip", testCommitRoundTrip},
		{"Commit/NotFound", testCommitNotFound},
		{"Commits/Range", testCommitsRange},
		{"Tx/ChangedPages", testTxChangedPages},
		{"Pages/Model", testPagesModel},
		{"Pages/Empty", testPagesEmpty},
		{"Volumes/Isolated", testVolumesIsolated},
		{"Configure", testConfigure},
		{"Mutators", testMutators},
		{"ClientCommits", testClientCommits},
		{"CreateToken", testCreateToken},
		{"CreateToken/Exists", testCreateTokenExists},
		{"CreateToken/VolumeNotFound", testCreateTokenVolumeNotFound},
		{"CreateToken/Invalid", testCreateTokenInvalid},
		{"Token/NotFound", testTokenNotFound},
		{"Tokens", testTokens},
		{"DeleteToken", testDeleteToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := open(t)
			t.Cleanup(func() {
				if err := ms.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			// Registered after Close, so it runs first (cleanups are LIFO).
			t.Cleanup(func() { MustCheck(t, ms) })
			tt.fn(t, ms)
		})
	}
}

// MustCheck verifies every volume of ms: versions 1..head are stored and
// contiguous, each commit's PagesCount is at most its page count, and the
// volume's page count is the page count of its head commit. It reports
// failures through t.Errorf.
func MustCheck(t testing.TB, ms pgschema.Metastore) {
	t.Helper()
	ctx := context.Background()
	vols, err := ms.Volumes(ctx)
	if err != nil {
		t.Errorf("check: Volumes: %v", err)
		return
	}
	for _, v := range vols {
		cs, err := ms.Commits(ctx, v.ID, 0, v.Head)
		if err != nil {
			t.Errorf("check: volume %s: Commits: %v", v.Name, err)
			continue
		}
		if int64(len(cs)) != v.Head {
			t.Errorf("check: volume %s: %d commits, head %d", v.Name, len(cs), v.Head)
			continue
		}
		for i, c := range cs {
			if c.Version != int64(i+1) || c.Volume != v.ID {
				t.Errorf("check: volume %s: commit %d is (volume %d, version %d)", v.Name, i+1, c.Volume, c.Version)
				break
			}
		}
		var want uint32
		if len(cs) > 0 {
			want = cs[len(cs)-1].PageCount
		}
		if v.PageCount != want {
			t.Errorf("check: volume %s: PageCount=%d, head commit says %d", v.Name, v.PageCount, want)
		}
	}
}

// receivedAt is a fixed time with microsecond precision, outside UTC, so a
// round trip checks both precision and zone handling.
var receivedAt = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.FixedZone("X", 5*3600+1800))

// mix is splitmix64: a deterministic hash that sets the high bit about half
// the time, so uint64 hashes stored as signed integers get exercised.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// loc is where the suite pretends page pageNo of (vol, version) was stored.
// Three consecutive versions share one segment, as group commit would do.
func loc(vol, version int64, pageNo uint32) pages.Location {
	return pages.Location{
		Segment:     fmt.Sprintf("segments/test-%d-%d", vol, version/3),
		FrameOffset: version*1000 + int64(pageNo)*7,
		FrameLength: 100 + int64(pageNo),
		PageOffset:  int64(pageNo%8) * 4096,
		Hash:        mix(uint64(vol)<<48 ^ uint64(version)<<32 ^ uint64(pageNo)),
	}
}

// newCommit is a fast-path commit of vol as version, from client "c1" with
// sequence version, writing pageNos with page count pageCount.
func newCommit(vol, version int64, pageCount uint32, pageNos ...uint32) pgschema.NewCommit {
	c := pgschema.NewCommit{
		Volume:     vol,
		Version:    version,
		Base:       version - 1,
		ClientID:   "c1",
		ClientSeq:  version,
		Decision:   pgschema.FastPath,
		PageCount:  pageCount,
		Record:     []byte(fmt.Sprintf("record %d", version)),
		Checksum:   []byte{byte(version), 0xff, 0},
		ReceivedAt: receivedAt,
	}
	for _, p := range pageNos {
		c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: loc(vol, version, p)})
	}
	return c
}

func mustCreate(t testing.TB, ms pgschema.Metastore, name string) pgschema.Volume {
	t.Helper()
	v, err := ms.CreateVolume(context.Background(), name, 4096)
	if err != nil {
		t.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return v
}

func mustAppend(t testing.TB, ms pgschema.Metastore, c pgschema.NewCommit) pgschema.Commit {
	t.Helper()
	stored, dup, err := pgschema.AppendCommit(context.Background(), ms, c)
	if err != nil {
		t.Fatalf("AppendCommit(volume %d, version %d): %v", c.Volume, c.Version, err)
	}
	if dup {
		t.Fatalf("AppendCommit(volume %d, version %d): duplicate=true, want false", c.Volume, c.Version)
	}
	return stored
}

// appendTx locks c's volume and appends c in one Update, returning Append's
// error (or LockVolume's).
func appendTx(ctx context.Context, ms pgschema.Metastore, c pgschema.NewCommit) error {
	return ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, c.Volume); err != nil {
			return err
		}
		return tx.Append(ctx, c)
	})
}

func mustVolume(t testing.TB, ms pgschema.Metastore, id int64) pgschema.Volume {
	t.Helper()
	v, err := ms.VolumeByID(context.Background(), id)
	if err != nil {
		t.Fatalf("VolumeByID(%d): %v", id, err)
	}
	return v
}

// mustHead checks the volume's head and page count.
func mustHead(t testing.TB, ms pgschema.Metastore, id, head int64, pageCount uint32) {
	t.Helper()
	v := mustVolume(t, ms, id)
	if v.Head != head || v.PageCount != pageCount {
		t.Fatalf("volume %d: Head=%d PageCount=%d, want %d and %d", id, v.Head, v.PageCount, head, pageCount)
	}
}

// mustNothingAt checks that no commit and no page-index row exists for
// version of volume, nor a commit with the given idempotency key.
func mustNothingAt(t testing.TB, ms pgschema.Metastore, vol, version int64, clientID string, seq int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := ms.Commit(ctx, vol, version); !errors.Is(err, pgschema.ErrCommitNotFound) {
		t.Fatalf("Commit(%d, %d): err=%v, want ErrCommitNotFound", vol, version, err)
	}
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		_, err := tx.CommitBySeq(ctx, vol, clientID, seq)
		return err
	})
	if !errors.Is(err, pgschema.ErrCommitNotFound) {
		t.Fatalf("CommitBySeq(%d, %q, %d): err=%v, want ErrCommitNotFound", vol, clientID, seq, err)
	}
	refs, err := ms.ChangedPages(ctx, vol, version-1, version)
	if err != nil {
		t.Fatalf("ChangedPages(%d, %d, %d): %v", vol, version-1, version, err)
	}
	if len(refs) != 0 {
		t.Fatalf("ChangedPages(%d, %d, %d)=%v, want none", vol, version-1, version, refs)
	}
}

func sameVolume(a, b pgschema.Volume) bool {
	return a.ID == b.ID && a.Name == b.Name && a.PageSize == b.PageSize && a.Head == b.Head &&
		a.PageCount == b.PageCount && a.Policy == b.Policy && a.AllowDDL == b.AllowDDL && a.CreatedAt.Equal(b.CreatedAt)
}

func mustInvalid(t testing.TB, err error, what string) {
	t.Helper()
	var ie *pgschema.InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("%s: err=%v (%T), want *pgschema.InvalidError", what, err, err)
	}
}
