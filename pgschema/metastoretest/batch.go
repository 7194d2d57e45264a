package metastoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

// The batch forms of Tx: LockVolumes, LookupCommits, AppendAll.

func testLockVolumes(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a, b, c := mustCreate(t, ms, "a"), mustCreate(t, ms, "b"), mustCreate(t, ms, "c")
	mustAppend(t, ms, newCommit(b.ID, 1, 2, 1, 2))
	b = mustVolume(t, ms, b.ID)
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		// Any order, with repeats: one volume each, ascending.
		got, err := tx.LockVolumes(ctx, []int64{c.ID, a.ID, c.ID, b.ID, a.ID})
		if err != nil {
			return err
		}
		want := []pgschema.Volume{a, b, c}
		if len(got) != len(want) {
			return fmt.Errorf("LockVolumes() returned %d volumes, want %d", len(got), len(want))
		}
		for i := range want {
			if !sameVolume(got[i], want[i]) {
				t.Errorf("LockVolumes()[%d]=%+v, want %+v", i, got[i], want[i])
			}
		}
		// Each counts as locked, for Append and AppendAll alike.
		if err := tx.Append(ctx, newCommit(a.ID, 1, 1, 1)); err != nil {
			return fmt.Errorf("Append after LockVolumes: %w", err)
		}
		if err := tx.AppendAll(ctx, []pgschema.NewCommit{newCommit(b.ID, 2, 2, 2), newCommit(c.ID, 1, 1, 1)}); err != nil {
			return fmt.Errorf("AppendAll after LockVolumes: %w", err)
		}
		// Locking again sees this transaction's appends.
		again, err := tx.LockVolumes(ctx, []int64{b.ID, a.ID})
		if err != nil {
			return err
		}
		if len(again) != 2 || again[0].ID != a.ID || again[0].Head != 1 || again[1].ID != b.ID || again[1].Head != 2 {
			t.Errorf("LockVolumes() again=%+v, want a at head 1, b at head 2", again)
		}
		none, err := tx.LockVolumes(ctx, nil)
		if err != nil || len(none) != 0 {
			t.Errorf("LockVolumes(nil)=%v, %v; want nothing", none, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	mustHead(t, ms, a.ID, 1, 1)
	mustHead(t, ms, b.ID, 2, 2)
	mustHead(t, ms, c.ID, 1, 1)

	t.Run("NotFound", func(t *testing.T) {
		err := ms.Update(ctx, func(tx pgschema.Tx) error {
			_, err := tx.LockVolumes(ctx, []int64{a.ID, c.ID + 1000, b.ID})
			if !errors.Is(err, pgschema.ErrVolumeNotFound) {
				t.Errorf("LockVolumes(with a missing id): err=%v, want ErrVolumeNotFound", err)
			}
			// None of them counts as locked.
			if err := tx.Append(ctx, newCommit(a.ID, 2, 1)); !errors.Is(err, pgschema.ErrVolumeNotLocked) {
				t.Errorf("Append after a failed LockVolumes: err=%v, want ErrVolumeNotLocked", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		mustHead(t, ms, a.ID, 1, 1)
	})
	t.Run("AppendAllNotLocked", func(t *testing.T) {
		err := ms.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolumes(ctx, []int64{a.ID}); err != nil {
				return err
			}
			return tx.AppendAll(ctx, []pgschema.NewCommit{newCommit(a.ID, 2, 1), newCommit(b.ID, 3, 2)})
		})
		if !errors.Is(err, pgschema.ErrVolumeNotLocked) {
			t.Fatalf("AppendAll to an unlocked volume: err=%v, want ErrVolumeNotLocked", err)
		}
		mustHead(t, ms, a.ID, 1, 1)
		mustHead(t, ms, b.ID, 2, 2)
	})
}

func testLookupCommits(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a, b := mustCreate(t, ms, "a"), mustCreate(t, ms, "b")
	for ver := int64(1); ver <= 3; ver++ {
		mustAppend(t, ms, newCommit(a.ID, ver, 1, 1))
		c := newCommit(b.ID, ver, 1, 1)
		c.ClientID, c.ClientSeq = fmt.Sprintf("client-%d", ver%2), 10+ver
		mustAppend(t, ms, c)
	}
	key := func(vol int64, client string, seq int64) pgschema.CommitKey {
		return pgschema.CommitKey{Volume: vol, ClientID: client, Seq: seq}
	}
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		got, err := tx.LookupCommits(ctx, []pgschema.CommitKey{
			key(b.ID, "client-1", 13), // b@3
			key(a.ID, "c1", 2),        // a@2
			key(a.ID, "c1", 4),        // missing: no such sequence
			key(b.ID, "c1", 2),        // missing: a's key, on b
			key(a.ID, "client-1", 11), // missing: b's key, on a
			key(b.ID, "client-0", 12), // b@2
			key(a.ID, "c1", 2),        // repeated
			key(b.ID, "client-0", 11), // missing: wrong client
			key(a.ID+b.ID+100, "c1", 1),
		})
		if err != nil {
			return err
		}
		mustSameVersions(t, "LookupCommits()", got, map[int64][]int64{a.ID: {2}, b.ID: {2, 3}})
		for _, c := range got {
			want, err := ms.Commit(ctx, c.Volume, c.Version)
			if err != nil {
				return err
			}
			if c.ClientID != want.ClientID || c.ClientSeq != want.ClientSeq || c.Base != want.Base ||
				c.Decision != want.Decision || c.PagesCount != want.PagesCount || !bytes.Equal(c.Record, want.Record) {
				t.Errorf("LookupCommits() returned %+v, want %+v", brief(c), brief(want))
			}
		}
		none, err := tx.LookupCommits(ctx, nil)
		if err != nil || len(none) != 0 {
			t.Errorf("LookupCommits(nil)=%v, %v; want nothing", none, err)
		}
		// It sees this transaction's own appends.
		if _, err := tx.LockVolumes(ctx, []int64{a.ID}); err != nil {
			return err
		}
		if err := tx.Append(ctx, newCommit(a.ID, 4, 1, 1)); err != nil {
			return err
		}
		got, err = tx.LookupCommits(ctx, []pgschema.CommitKey{key(a.ID, "c1", 4), key(a.ID, "c1", 5)})
		if err != nil {
			return err
		}
		mustSameVersions(t, "LookupCommits() after Append", got, map[int64][]int64{a.ID: {4}})
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// mustSameVersions checks that cs are exactly the commits want names, by
// volume and version, each once.
func mustSameVersions(t testing.TB, what string, cs []pgschema.Commit, want map[int64][]int64) {
	t.Helper()
	got := map[int64][]int64{}
	for _, c := range cs {
		got[c.Volume] = append(got[c.Volume], c.Version)
	}
	n := 0
	for vol, vers := range want {
		g := slices.Sorted(slices.Values(got[vol]))
		if !slices.Equal(g, vers) {
			t.Errorf("%s: volume %d versions %v, want %v", what, vol, g, vers)
		}
		n += len(vers)
	}
	if len(cs) != n {
		t.Errorf("%s returned %d commits, want %d", what, len(cs), n)
	}
}

// batchScenario is a group commit's worth of commits to a and b, whose
// heads are headA and headB: interleaved, some writing no page, their pages
// in one shared segment.
func batchScenario(a, b, headA, headB int64) []pgschema.NewCommit {
	var cs []pgschema.NewCommit
	for i, vol := range []int64{a, b, a, a, b, a, b} {
		var c pgschema.NewCommit
		if vol == a {
			headA++
			c = newCommit(a, headA, uint32(headA+2), 1, uint32(headA+2))
		} else {
			headB++
			c = newCommit(b, headB, 3)
			if i != 4 {
				c = newCommit(b, headB, 3, 2, 3)
			}
			c.ClientID = "c2"
		}
		c.Reason = fmt.Sprintf("commit %d of the group", i)
		anyVolume(&c, "segments/batch-group")
		for j := range c.Pages {
			c.Pages[j].FrameOffset = int64(i*100 + j*10)
		}
		cs = append(cs, c)
	}
	return cs
}

func testAppendAllOK(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	// The same history through AppendAll (a, b) and through Append in turn
	// (a2, b2), a first commit stored beforehand on each.
	a, b := mustCreate(t, ms, "a"), mustCreate(t, ms, "b")
	a2, b2 := mustCreate(t, ms, "a2"), mustCreate(t, ms, "b2")
	for _, vol := range []int64{a.ID, b.ID, a2.ID, b2.ID} {
		c := newCommit(vol, 1, 2, 1, 2)
		anyVolume(&c, "segments/first")
		mustAppend(t, ms, c)
	}
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolumes(ctx, []int64{a.ID, b.ID}); err != nil {
			return err
		}
		return tx.AppendAll(ctx, batchScenario(a.ID, b.ID, 1, 1))
	})
	if err != nil {
		t.Fatalf("Update(AppendAll): %v", err)
	}
	err = ms.Update(ctx, func(tx pgschema.Tx) error {
		for _, id := range []int64{a2.ID, b2.ID} {
			if _, err := tx.LockVolume(ctx, id); err != nil {
				return err
			}
		}
		for _, c := range batchScenario(a2.ID, b2.ID, 1, 1) {
			if err := tx.Append(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update(Append in turn): %v", err)
	}
	mustHead(t, ms, a.ID, 5, 7)
	mustHead(t, ms, b.ID, 4, 3)
	mustSameHistory(t, ms, a.ID, a2.ID)
	mustSameHistory(t, ms, b.ID, b2.ID)
}

// anyVolume makes c's page locations independent of its volume, in
// segment, so that two volumes given the same history store the same page
// index.
func anyVolume(c *pgschema.NewCommit, segment string) {
	for j := range c.Pages {
		c.Pages[j].Segment = segment
		c.Pages[j].Hash = mix(uint64(c.Version)<<32 ^ uint64(c.Pages[j].PageNo))
	}
}

// mustSameHistory checks that volumes x and y store the same commits and
// page index, but for the volume id.
func mustSameHistory(t testing.TB, ms pgschema.Metastore, x, y int64) {
	t.Helper()
	ctx := context.Background()
	vx, vy := mustVolume(t, ms, x), mustVolume(t, ms, y)
	if vx.Head != vy.Head || vx.PageCount != vy.PageCount {
		t.Fatalf("volume %d at (%d, %d), volume %d at (%d, %d): want the same head and page count",
			x, vx.Head, vx.PageCount, y, vy.Head, vy.PageCount)
	}
	cx, err := ms.Commits(ctx, x, 0, vx.Head)
	if err != nil {
		t.Fatalf("Commits(%d): %v", x, err)
	}
	cy, err := ms.Commits(ctx, y, 0, vy.Head)
	if err != nil {
		t.Fatalf("Commits(%d): %v", y, err)
	}
	if len(cx) != len(cy) {
		t.Fatalf("volume %d has %d commits, volume %d has %d", x, len(cx), y, len(cy))
	}
	for i := range cx {
		p, q := cx[i], cy[i]
		if p.Version != q.Version || p.Base != q.Base || p.ClientID != q.ClientID || p.ClientSeq != q.ClientSeq ||
			p.Decision != q.Decision || p.Reason != q.Reason || p.PageCount != q.PageCount || p.PagesCount != q.PagesCount ||
			!bytes.Equal(p.Record, q.Record) || !bytes.Equal(p.Checksum, q.Checksum) || !p.ReceivedAt.Equal(q.ReceivedAt) {
			t.Fatalf("version %d: volume %d has %+v, volume %d has %+v", p.Version, x, brief(p), y, brief(q))
		}
	}
	for ver := int64(1); ver <= vx.Head; ver++ {
		for _, r := range [][2]int64{{ver - 1, ver}, {0, ver}} {
			px, err := ms.ChangedPages(ctx, x, r[0], r[1])
			if err != nil {
				t.Fatalf("ChangedPages(%d, %d, %d): %v", x, r[0], r[1], err)
			}
			py, err := ms.ChangedPages(ctx, y, r[0], r[1])
			if err != nil {
				t.Fatalf("ChangedPages(%d, %d, %d): %v", y, r[0], r[1], err)
			}
			if !slices.Equal(px, py) {
				t.Fatalf("ChangedPages(%d, %d): volume %d has %+v, volume %d has %+v", r[0], r[1], x, px, y, py)
			}
		}
	}
}

// testAppendAllFails runs AppendAll batches that must fail, each in a
// transaction that swallows the error and then appends a valid batch and
// commits: nothing of the failed batch may be stored, and the transaction
// must still work.
func testAppendAllFails(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a, b := mustCreate(t, ms, "a"), mustCreate(t, ms, "b")
	mustAppend(t, ms, newCommit(a.ID, 1, 2, 1, 2))
	mustAppend(t, ms, newCommit(b.ID, 1, 2, 1, 2))
	// fresh is a commit of vol as version with a key never used.
	seq := int64(100)
	fresh := func(vol, version int64, pageNos ...uint32) pgschema.NewCommit {
		seq++
		c := newCommit(vol, version, 4, pageNos...)
		c.ClientSeq = seq
		for j := range c.Pages {
			c.Pages[j].Segment = fmt.Sprintf("segments/fails-%d", seq)
		}
		return c
	}
	cases := []struct {
		name  string
		batch func(headA, headB int64) []pgschema.NewCommit
		check func(t *testing.T, err error, headA, headB int64)
	}{
		{"StaleInTheMiddle", func(ha, hb int64) []pgschema.NewCommit {
			// a's second commit skips a version: stale, counting the first.
			return []pgschema.NewCommit{fresh(a.ID, ha+1, 3), fresh(b.ID, hb+1, 3), fresh(a.ID, ha+3, 4), fresh(b.ID, hb+2, 4)}
		}, func(t *testing.T, err error, ha, hb int64) {
			var se *pgschema.StaleHeadError
			if !errors.As(err, &se) || se.Volume != a.ID || se.Head != ha+1 || se.Version != ha+3 {
				t.Fatalf("err=%v, want *StaleHeadError{Volume: %d, Head: %d, Version: %d}", err, a.ID, ha+1, ha+3)
			}
		}},
		{"StaleFirst", func(ha, hb int64) []pgschema.NewCommit {
			return []pgschema.NewCommit{fresh(b.ID, hb, 3), fresh(a.ID, ha+1, 3)}
		}, func(t *testing.T, err error, ha, hb int64) {
			var se *pgschema.StaleHeadError
			if !errors.As(err, &se) || se.Volume != b.ID || se.Head != hb || se.Version != hb {
				t.Fatalf("err=%v, want *StaleHeadError{Volume: %d, Head: %d, Version: %d}", err, b.ID, hb, hb)
			}
		}},
		{"DuplicateInBatch", func(ha, hb int64) []pgschema.NewCommit {
			first, again := fresh(a.ID, ha+1, 3), fresh(a.ID, ha+2, 4)
			again.ClientSeq = first.ClientSeq
			return []pgschema.NewCommit{fresh(b.ID, hb+1, 3), first, again}
		}, mustDuplicate},
		{"DuplicateStored", func(ha, hb int64) []pgschema.NewCommit {
			dup := fresh(b.ID, hb+2, 4)
			dup.ClientSeq = 1 // b's version 1
			return []pgschema.NewCommit{fresh(a.ID, ha+1, 3), fresh(b.ID, hb+1, 3), dup, fresh(a.ID, ha+2, 4)}
		}, mustDuplicate},
		{"DuplicateStoredBeforeInvalid", func(ha, hb int64) []pgschema.NewCommit {
			// Append in turn fails on the stored key before it reaches the
			// invalid commit.
			dup := fresh(a.ID, ha+1, 3)
			dup.ClientSeq = 1
			bad := fresh(b.ID, hb+1, 3)
			bad.Pages[0].PageNo = 9
			return []pgschema.NewCommit{dup, bad}
		}, mustDuplicate},
		{"Invalid", func(ha, hb int64) []pgschema.NewCommit {
			bad := fresh(b.ID, hb+1, 3)
			bad.Base = hb + 1
			return []pgschema.NewCommit{fresh(a.ID, ha+1, 3), bad}
		}, func(t *testing.T, err error, ha, hb int64) { mustInvalid(t, err, "AppendAll") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ha, hb := mustVolume(t, ms, a.ID).Head, mustVolume(t, ms, b.ID).Head
			batch := tc.batch(ha, hb)
			valid := []pgschema.NewCommit{fresh(b.ID, hb+1, 1, 4), fresh(a.ID, ha+1, 2)}
			err := ms.Update(ctx, func(tx pgschema.Tx) error {
				if _, err := tx.LockVolumes(ctx, []int64{a.ID, b.ID}); err != nil {
					return err
				}
				tc.check(t, tx.AppendAll(ctx, batch), ha, hb)
				var keys []pgschema.CommitKey
				for _, c := range batch {
					keys = append(keys, pgschema.CommitKey{Volume: c.Volume, ClientID: c.ClientID, Seq: c.ClientSeq})
				}
				stored, err := tx.LookupCommits(ctx, keys)
				if err != nil {
					return err
				}
				for _, c := range stored {
					if (c.Volume == a.ID && c.Version > ha) || (c.Volume == b.ID && c.Version > hb) {
						t.Errorf("failed AppendAll stored version %d of volume %d", c.Version, c.Volume)
					}
				}
				return tx.AppendAll(ctx, valid)
			})
			if err != nil {
				t.Fatalf("Update: valid AppendAll after a failed one: %v", err)
			}
			mustHead(t, ms, a.ID, ha+1, 4)
			mustHead(t, ms, b.ID, hb+1, 4)
			for _, c := range valid {
				got, err := ms.Commit(ctx, c.Volume, c.Version)
				if err != nil {
					t.Fatalf("Commit(%d, %d): %v", c.Volume, c.Version, err)
				}
				mustSameCommit(t, got, c)
				refs, err := ms.ChangedPages(ctx, c.Volume, c.Version-1, c.Version)
				if err != nil {
					t.Fatalf("ChangedPages: %v", err)
				}
				if len(refs) != len(c.Pages) {
					t.Fatalf("ChangedPages(%d, %d) of volume %d=%+v, want the %d pages of the valid batch",
						c.Version-1, c.Version, c.Volume, refs, len(c.Pages))
				}
			}
		})
	}
}

func mustDuplicate(t *testing.T, err error, _, _ int64) {
	t.Helper()
	if !errors.Is(err, pgschema.ErrDuplicateCommit) {
		t.Fatalf("err=%v, want ErrDuplicateCommit", err)
	}
}

// testAppendAllManyPages appends a batch of large commits (a bulk load per
// volume), which may take another path than small ones, and compares it
// with Append in turn.
func testAppendAllManyPages(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a, b := mustCreate(t, ms, "a"), mustCreate(t, ms, "b")
	batch := func(vol int64) []pgschema.NewCommit {
		var cs []pgschema.NewCommit
		for ver, n := range []int{3000, 40, 2500} {
			pageNos := make([]uint32, n)
			for j := range pageNos {
				pageNos[j] = uint32((j*7+ver)%3000) + 1 // 7 is prime to 3000: no repeats
			}
			c := newCommit(vol, int64(ver+1), 3000, pageNos...)
			anyVolume(&c, "")
			for j := range c.Pages {
				c.Pages[j].Segment = fmt.Sprintf("segments/bulk-%d", j%3)
			}
			cs = append(cs, c)
		}
		return cs
	}
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolumes(ctx, []int64{a.ID}); err != nil {
			return err
		}
		return tx.AppendAll(ctx, batch(a.ID))
	})
	if err != nil {
		t.Fatalf("Update(AppendAll): %v", err)
	}
	err = ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, b.ID); err != nil {
			return err
		}
		for _, c := range batch(b.ID) {
			if err := tx.Append(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update(Append in turn): %v", err)
	}
	mustHead(t, ms, a.ID, 3, 3000)
	mustSameHistory(t, ms, a.ID, b.ID)
}
