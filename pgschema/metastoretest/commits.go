package metastoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

func testAppendOK(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	c := newCommit(v.ID, 1, 3, 3, 1, 2) // pages in any order
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		locked, err := tx.LockVolume(ctx, v.ID)
		if err != nil {
			return err
		}
		if !sameVolume(locked, v) {
			t.Errorf("LockVolume()=%+v, want %+v", locked, v)
		}
		return tx.Append(ctx, c)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	mustHead(t, ms, v.ID, 1, 3)
	got, err := ms.Commit(ctx, v.ID, 1)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	mustSameCommit(t, got, c)
	for _, p := range []uint32{1, 2, 3} {
		ref, err := ms.PageAt(ctx, v.ID, p, 1)
		if err != nil {
			t.Fatalf("PageAt(%d): %v", p, err)
		}
		if ref.PageNo != p || ref.Version != 1 || ref.Location != loc(v.ID, 1, p) {
			t.Fatalf("PageAt(%d)=%+v, want version 1 at %+v", p, ref, loc(v.ID, 1, p))
		}
	}
}

func testAppendChain(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	// Several versions in one transaction: the tx tracks the head it moved.
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, v.ID); err != nil {
			return err
		}
		for ver := int64(1); ver <= 5; ver++ {
			if err := tx.Append(ctx, newCommit(v.ID, ver, uint32(ver), uint32(ver))); err != nil {
				return fmt.Errorf("append %d: %w", ver, err)
			}
		}
		again, err := tx.LockVolume(ctx, v.ID)
		if err != nil {
			return fmt.Errorf("lock again: %w", err)
		}
		if again.Head != 5 || again.PageCount != 5 {
			t.Errorf("LockVolume() again: Head=%d PageCount=%d, want 5 and 5", again.Head, again.PageCount)
		}
		return tx.Append(ctx, newCommit(v.ID, 6, 6, 6))
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	mustHead(t, ms, v.ID, 6, 6)
	// A commit that writes no page still becomes a version.
	mustAppend(t, ms, newCommit(v.ID, 7, 6))
	mustHead(t, ms, v.ID, 7, 6)
	c, err := ms.Commit(ctx, v.ID, 7)
	if err != nil {
		t.Fatalf("Commit(7): %v", err)
	}
	if c.PagesCount != 0 {
		t.Fatalf("Commit(7).PagesCount=%d, want 0", c.PagesCount)
	}
}

func testAppendManyPages(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	// Large commits (a VACUUM, a bulk load) may take another path than
	// small ones; their pages span several segments.
	sizes := []int{1000, 33, 40, 1}
	var count uint32 = 1000
	newest := map[uint32]pgschema.PageRef{}
	for i, n := range sizes {
		ver := int64(i + 1)
		pageNos := make([]uint32, n)
		for j := range pageNos {
			pageNos[j] = uint32(j*(i+1)%int(count)) + 1
		}
		c := newCommit(v.ID, ver, count, pageNos...)
		for j := range c.Pages {
			c.Pages[j].Segment = fmt.Sprintf("segments/many-%d-%d", ver, j%3)
		}
		stored := mustAppend(t, ms, c)
		if stored.PagesCount != n {
			t.Fatalf("version %d: PagesCount=%d, want %d", ver, stored.PagesCount, n)
		}
		refs, err := ms.ChangedPages(ctx, v.ID, ver-1, ver)
		if err != nil {
			t.Fatalf("ChangedPages(%d, %d): %v", ver-1, ver, err)
		}
		if len(refs) != n {
			t.Fatalf("ChangedPages(%d, %d) returned %d pages, want %d", ver-1, ver, len(refs), n)
		}
		byPage := map[uint32]pgschema.PageWrite{}
		for _, p := range c.Pages {
			byPage[p.PageNo] = p
			newest[p.PageNo] = pgschema.PageRef{PageNo: p.PageNo, Version: ver, Location: p.Location}
		}
		for k, r := range refs {
			w, ok := byPage[r.PageNo]
			if !ok || r.Version != ver || r.Location != w.Location || (k > 0 && refs[k-1].PageNo >= r.PageNo) {
				t.Fatalf("ChangedPages(%d, %d)[%d]=%+v, want %+v of version %d, ascending", ver-1, ver, k, r, w, ver)
			}
		}
	}
	all := make([]uint32, count)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	refs, err := ms.PagesAt(ctx, v.ID, int64(len(sizes)), all)
	if err != nil {
		t.Fatalf("PagesAt: %v", err)
	}
	if len(refs) != int(count) {
		t.Fatalf("PagesAt(all pages) returned %d, want %d", len(refs), count)
	}
	for i, r := range refs {
		if want := newest[uint32(i+1)]; r != want {
			t.Fatalf("PagesAt(all pages)[%d]=%+v, want %+v", i, r, want)
		}
	}
	refs, err = ms.ChangedPages(ctx, v.ID, 0, int64(len(sizes)))
	if err != nil {
		t.Fatalf("ChangedPages(0, head): %v", err)
	}
	if len(refs) != int(count) {
		t.Fatalf("ChangedPages(0, head) returned %d pages, want %d", len(refs), count)
	}
	for i, r := range refs {
		if want := newest[uint32(i+1)]; r != want {
			t.Fatalf("ChangedPages(0, head)[%d]=%+v, want %+v", i, r, want)
		}
	}
}

func testAppendNotLocked(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		return tx.Append(ctx, newCommit(v.ID, 1, 1, 1))
	})
	if !errors.Is(err, pgschema.ErrVolumeNotLocked) {
		t.Fatalf("Append without LockVolume: err=%v, want ErrVolumeNotLocked", err)
	}
	mustHead(t, ms, v.ID, 0, 0)
	mustNothingAt(t, ms, v.ID, 1, "c1", 1)
}

func testAppendStaleHead(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 2, 1, 2))
	mustAppend(t, ms, newCommit(v.ID, 2, 2, 2))
	for _, ver := range []int64{1, 2, 4, 10} {
		c := newCommit(v.ID, ver, 3, 1, 3)
		c.ClientID, c.ClientSeq = "stale", ver
		err := appendTx(ctx, ms, c)
		var se *pgschema.StaleHeadError
		if !errors.As(err, &se) {
			t.Fatalf("Append(version %d) at head 2: err=%v, want *StaleHeadError", ver, err)
		}
		if se.Head != 2 || se.Version != ver || se.Volume != v.ID {
			t.Fatalf("Append(version %d): %+v, want Volume=%d Head=2 Version=%d", ver, *se, v.ID, ver)
		}
		mustHead(t, ms, v.ID, 2, 2)
		mustNothingAt(t, ms, v.ID, 3, "stale", ver)
		if _, err := ms.PageAt(ctx, v.ID, 3, 2); !errors.Is(err, pgschema.ErrPageNotFound) {
			t.Fatalf("PageAt(3, 2) after stale append: err=%v, want ErrPageNotFound", err)
		}
		ref, err := ms.PageAt(ctx, v.ID, 1, 2)
		if err != nil || ref.Version != 1 {
			t.Fatalf("PageAt(1, 2) after stale append=%+v, %v; want version 1", ref, err)
		}
	}
	// The right version still works after the failures.
	mustAppend(t, ms, newCommit(v.ID, 3, 3, 3))
	mustHead(t, ms, v.ID, 3, 3)
}

func testAppendInvalid(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 2, 1, 2))
	good := func() pgschema.NewCommit {
		c := newCommit(v.ID, 2, 4, 1, 4)
		c.ClientID, c.ClientSeq = "bad", 7
		return c
	}
	cases := map[string]func(c *pgschema.NewCommit){
		"page 0":             func(c *pgschema.NewCommit) { c.Pages[0].PageNo = 0 },
		"beyond page count":  func(c *pgschema.NewCommit) { c.Pages[1].PageNo = 5 },
		"page count shrunk":  func(c *pgschema.NewCommit) { c.PageCount = 3 },
		"base == version":    func(c *pgschema.NewCommit) { c.Base = 2 },
		"base > version":     func(c *pgschema.NewCommit) { c.Base = 3 },
		"negative base":      func(c *pgschema.NewCommit) { c.Base = -1 },
		"duplicate page":     func(c *pgschema.NewCommit) { c.Pages[1].PageNo = 1 },
		"bad decision":       func(c *pgschema.NewCommit) { c.Decision = "rejected" },
		"empty decision":     func(c *pgschema.NewCommit) { c.Decision = "" },
		"empty client id":    func(c *pgschema.NewCommit) { c.ClientID = "" },
		"negative seq":       func(c *pgschema.NewCommit) { c.ClientSeq = -1 },
		"no segment":         func(c *pgschema.NewCommit) { c.Pages[0].Segment = "" },
		"zero frame length":  func(c *pgschema.NewCommit) { c.Pages[0].FrameLength = 0 },
		"negative offset":    func(c *pgschema.NewCommit) { c.Pages[0].FrameOffset = -1 },
		"negative page offs": func(c *pgschema.NewCommit) { c.Pages[1].PageOffset = -1 },
	}
	for name, mutate := range cases {
		c := good()
		mutate(&c)
		err := appendTx(ctx, ms, c)
		mustInvalid(t, err, "Append("+name+")")
		mustHead(t, ms, v.ID, 1, 2)
		mustNothingAt(t, ms, v.ID, 2, c.ClientID, c.ClientSeq)
	}
	// Version 0 is invalid whatever the head.
	c := good()
	c.Version, c.Base = 0, 0
	mustInvalid(t, appendTx(ctx, ms, c), "Append(version 0)")
	mustAppend(t, ms, good())
	mustHead(t, ms, v.ID, 2, 4)
}

func testAppendDuplicate(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 1, 1))
	dup := newCommit(v.ID, 2, 2, 2) // same client "c1", different seq...
	dup.ClientSeq = 1               // ...made equal to version 1's
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, v.ID); err != nil {
			return err
		}
		return tx.Append(ctx, dup)
	})
	if !errors.Is(err, pgschema.ErrDuplicateCommit) {
		t.Fatalf("Append of a stored key: err=%v, want ErrDuplicateCommit", err)
	}
	mustHead(t, ms, v.ID, 1, 1)
	if _, err := ms.Commit(ctx, v.ID, 2); !errors.Is(err, pgschema.ErrCommitNotFound) {
		t.Fatalf("Commit(2): err=%v, want ErrCommitNotFound", err)
	}
	if _, err := ms.PageAt(ctx, v.ID, 2, 1); !errors.Is(err, pgschema.ErrPageNotFound) {
		t.Fatalf("PageAt(2, 1): err=%v, want ErrPageNotFound", err)
	}
	// Another client may use the same sequence number.
	other := newCommit(v.ID, 2, 2, 2)
	other.ClientID, other.ClientSeq = "c2", 1
	mustAppend(t, ms, other)
	mustHead(t, ms, v.ID, 2, 2)
}

func testAppendSharedSegment(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a := mustCreate(t, ms, "a")
	b := mustCreate(t, ms, "b")
	// Group commit: one segment holds pages of several commits and volumes.
	const seg = "segments/group-1"
	for i, vol := range []int64{a.ID, b.ID, a.ID} {
		head := mustVolume(t, ms, vol).Head
		c := newCommit(vol, head+1, 2, 1, 2)
		for j := range c.Pages {
			c.Pages[j].Segment = seg
			c.Pages[j].FrameOffset = int64(i*100 + j*10)
		}
		mustAppend(t, ms, c)
	}
	for _, vol := range []int64{a.ID, b.ID} {
		refs, err := ms.ChangedPages(ctx, vol, 0, mustVolume(t, ms, vol).Head)
		if err != nil {
			t.Fatalf("ChangedPages: %v", err)
		}
		if len(refs) != 2 {
			t.Fatalf("ChangedPages(volume %d)=%+v, want 2 pages", vol, refs)
		}
		for _, r := range refs {
			if r.Segment != seg {
				t.Fatalf("ChangedPages(volume %d): page %d in %q, want %q", vol, r.PageNo, r.Segment, seg)
			}
		}
	}
	ref, err := ms.PageAt(ctx, a.ID, 2, 2)
	if err != nil {
		t.Fatalf("PageAt: %v", err)
	}
	if ref.Version != 2 || ref.FrameOffset != 210 {
		t.Fatalf("PageAt(a, 2, 2)=%+v, want version 2 at frame offset 210", ref)
	}
}

func testAppendCommitRetry(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	c := newCommit(v.ID, 1, 2, 1, 2)
	first, dup, err := pgschema.AppendCommit(ctx, ms, c)
	if err != nil || dup {
		t.Fatalf("AppendCommit: dup=%v err=%v, want a new commit", dup, err)
	}
	mustSameCommit(t, first, c)
	// The retry arrives after another commit moved the head: it still gets
	// the stored version back, whatever version it asked for.
	mustAppend(t, ms, newCommit(v.ID, 2, 2, 2))
	for _, ver := range []int64{1, 3} {
		retry := c
		retry.Version = ver
		again, dup, err := pgschema.AppendCommit(ctx, ms, retry)
		if err != nil {
			t.Fatalf("AppendCommit retry (version %d): %v", ver, err)
		}
		if !dup {
			t.Fatalf("AppendCommit retry (version %d): duplicate=false, want true", ver)
		}
		if again.Version != 1 {
			t.Fatalf("AppendCommit retry (version %d): stored version %d, want 1", ver, again.Version)
		}
		mustSameCommit(t, again, c)
	}
	mustHead(t, ms, v.ID, 2, 2)
}

func testAppendCommitStaleHead(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 1, 1))
	c := newCommit(v.ID, 1, 1, 1)
	c.ClientSeq = 99
	_, _, err := pgschema.AppendCommit(ctx, ms, c)
	var se *pgschema.StaleHeadError
	if !errors.As(err, &se) || se.Head != 1 {
		t.Fatalf("AppendCommit(version 1) at head 1: err=%v, want *StaleHeadError with Head 1", err)
	}
	mustHead(t, ms, v.ID, 1, 1)
}

func testAppendCommitConcurrentRetry(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	const n = 8
	c := newCommit(v.ID, 1, 1, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range n {
		wg.Go(func() {
			stored, dup, err := pgschema.AppendCommit(ctx, ms, c)
			if err != nil {
				t.Errorf("AppendCommit: %v", err)
				return
			}
			if stored.Version != 1 {
				t.Errorf("AppendCommit: stored version %d, want 1", stored.Version)
			}
			if !dup {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if fresh != 1 {
		t.Fatalf("%d of %d identical AppendCommit calls stored a commit, want exactly 1", fresh, n)
	}
	mustHead(t, ms, v.ID, 1, 1)
}

// testConcurrentWriters races writers on one volume, each retrying on a
// stale head, and checks invariant 1: contiguous versions, each commit
// stored exactly once, none lost.
func testConcurrentWriters(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			client := fmt.Sprintf("w%02d", w)
			for seq := int64(1); seq <= each; seq++ {
				for attempt := 0; ; attempt++ {
					if attempt > 10000 {
						t.Errorf("%s seq %d: no progress after %d attempts", client, seq, attempt)
						return
					}
					cur, err := ms.VolumeByID(ctx, v.ID)
					if err != nil {
						t.Errorf("VolumeByID: %v", err)
						return
					}
					c := newCommit(v.ID, cur.Head+1, writers+1, 1, uint32(w+2))
					c.ClientID, c.ClientSeq = client, seq
					c.Base = cur.Head
					for i := range c.Pages {
						c.Pages[i].Segment = fmt.Sprintf("segments/%s-%d", client, seq)
					}
					_, dup, err := pgschema.AppendCommit(ctx, ms, c)
					var se *pgschema.StaleHeadError
					if errors.As(err, &se) {
						continue
					}
					if err != nil {
						t.Errorf("%s seq %d: AppendCommit: %v", client, seq, err)
						return
					}
					if dup {
						t.Errorf("%s seq %d: duplicate=true on a key never stored before", client, seq)
					}
					break
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = writers * each
	mustHead(t, ms, v.ID, total, writers+1)
	cs, err := ms.Commits(ctx, v.ID, 0, total)
	if err != nil {
		t.Fatalf("Commits: %v", err)
	}
	if len(cs) != total {
		t.Fatalf("Commits() returned %d, want %d", len(cs), total)
	}
	seen := map[string]bool{}
	nextSeq := map[string]int64{}
	for i, c := range cs {
		if c.Version != int64(i+1) {
			t.Fatalf("Commits()[%d].Version=%d, want %d", i, c.Version, i+1)
		}
		key := fmt.Sprintf("%s/%d", c.ClientID, c.ClientSeq)
		if seen[key] {
			t.Fatalf("commit %s stored twice", key)
		}
		seen[key] = true
		// Each writer commits its sequence numbers in order.
		if c.ClientSeq != nextSeq[c.ClientID]+1 {
			t.Fatalf("version %d: %s seq %d follows seq %d", c.Version, c.ClientID, c.ClientSeq, nextSeq[c.ClientID])
		}
		nextSeq[c.ClientID] = c.ClientSeq
	}
	// The page index agrees with the commit log: version v's page 1 is in
	// the segment its commit named.
	for _, c := range cs {
		refs, err := ms.ChangedPages(ctx, v.ID, c.Version-1, c.Version)
		if err != nil {
			t.Fatalf("ChangedPages(%d): %v", c.Version, err)
		}
		want := fmt.Sprintf("segments/%s-%d", c.ClientID, c.ClientSeq)
		if len(refs) == 0 || refs[0].PageNo != 1 || refs[0].Segment != want {
			t.Fatalf("ChangedPages(%d, %d)=%+v, want page 1 in %s", c.Version-1, c.Version, refs, want)
		}
	}
}

func testLockVolumeNotFound(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		_, err := tx.LockVolume(ctx, 12345)
		return err
	})
	if !errors.Is(err, pgschema.ErrVolumeNotFound) {
		t.Fatalf("LockVolume(unknown): err=%v, want ErrVolumeNotFound", err)
	}
}

func testUpdateRollback(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	w := mustCreate(t, ms, "w")
	mustAppend(t, ms, newCommit(v.ID, 1, 1, 1))
	boom := errors.New("boom")
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		for _, id := range []int64{v.ID, w.ID} {
			if _, err := tx.LockVolume(ctx, id); err != nil {
				return err
			}
		}
		if err := tx.Append(ctx, newCommit(v.ID, 2, 3, 2, 3)); err != nil {
			return err
		}
		if err := tx.Append(ctx, newCommit(v.ID, 3, 3, 3)); err != nil {
			return err
		}
		if err := tx.Append(ctx, newCommit(w.ID, 1, 1, 1)); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update: err=%v (%T), want fn's error unchanged", err, err)
	}
	mustHead(t, ms, v.ID, 1, 1)
	mustHead(t, ms, w.ID, 0, 0)
	mustNothingAt(t, ms, v.ID, 2, "c1", 2)
	mustNothingAt(t, ms, v.ID, 3, "c1", 3)
	mustNothingAt(t, ms, w.ID, 1, "c1", 1)
	if _, err := ms.PageAt(ctx, v.ID, 1, 1); err != nil {
		t.Fatalf("PageAt(1, 1) after rollback: %v", err)
	}
	// A typed error from fn survives as itself too.
	want := &pgschema.StaleHeadError{Volume: 1, Head: 2, Version: 3}
	err = ms.Update(ctx, func(tx pgschema.Tx) error { return want })
	var se *pgschema.StaleHeadError
	if !errors.As(err, &se) || se != want {
		t.Fatalf("Update: err=%v, want fn's *StaleHeadError", err)
	}
	// The rolled-back keys and versions are free again.
	mustAppend(t, ms, newCommit(v.ID, 2, 3, 2, 3))
	mustAppend(t, ms, newCommit(w.ID, 1, 1, 1))
	mustHead(t, ms, v.ID, 2, 3)
}

func testCommitRoundTrip(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	start := time.Now().Add(-time.Minute)
	var want []pgschema.NewCommit
	decisions := []pgschema.Decision{pgschema.FastPath, pgschema.Merged, pgschema.Replayed}
	for ver := int64(1); ver <= 6; ver++ {
		c := newCommit(v.ID, ver, uint32(ver*10), 1, uint32(ver*10))
		c.Base = ver / 2 // stale bases too
		c.ClientID = fmt.Sprintf("client-%d ü", ver%2)
		c.ClientSeq = 1<<40 + ver
		c.Decision = decisions[ver%3]
		c.Reason = fmt.Sprintf("reason %d: ‘quoted’ \x01", ver)
		c.ReceivedAt = receivedAt.Add(time.Duration(ver) * 1001 * time.Microsecond)
		switch ver {
		case 1:
			c.Record, c.Checksum = nil, nil
		case 2:
			c.Record = bytes.Repeat([]byte{0, 1, 2, 0xff}, 50000) // 200 KB
			c.Checksum = make([]byte, 32)
		default:
			c.Record = []byte{0, 0, 0}
		}
		want = append(want, c)
		mustAppend(t, ms, c)
	}
	for _, c := range want {
		got, err := ms.Commit(ctx, v.ID, c.Version)
		if err != nil {
			t.Fatalf("Commit(%d): %v", c.Version, err)
		}
		mustSameCommit(t, got, c)
		if got.CreatedAt.Before(start) || got.CreatedAt.After(time.Now().Add(time.Minute)) {
			t.Fatalf("Commit(%d).CreatedAt=%v, want about now", c.Version, got.CreatedAt)
		}
		err = ms.Update(ctx, func(tx pgschema.Tx) error {
			got, err = tx.CommitBySeq(ctx, v.ID, c.ClientID, c.ClientSeq)
			return err
		})
		if err != nil {
			t.Fatalf("CommitBySeq(%d): %v", c.Version, err)
		}
		mustSameCommit(t, got, c)
	}
	all, err := ms.Commits(ctx, v.ID, 0, 6)
	if err != nil {
		t.Fatalf("Commits: %v", err)
	}
	if len(all) != len(want) {
		t.Fatalf("Commits(0, 6) returned %d, want %d", len(all), len(want))
	}
	for i := range all {
		mustSameCommit(t, all[i], want[i])
	}
}

func testCommitNotFound(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 1, 1))
	for _, k := range [][2]int64{{v.ID, 0}, {v.ID, 2}, {v.ID + 100, 1}} {
		if _, err := ms.Commit(ctx, k[0], k[1]); !errors.Is(err, pgschema.ErrCommitNotFound) {
			t.Fatalf("Commit(%d, %d): err=%v, want ErrCommitNotFound", k[0], k[1], err)
		}
	}
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.CommitBySeq(ctx, v.ID, "c1", 2); !errors.Is(err, pgschema.ErrCommitNotFound) {
			t.Errorf("CommitBySeq(c1, 2): err=%v, want ErrCommitNotFound", err)
		}
		if _, err := tx.CommitBySeq(ctx, v.ID, "c2", 1); !errors.Is(err, pgschema.ErrCommitNotFound) {
			t.Errorf("CommitBySeq(c2, 1): err=%v, want ErrCommitNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func testCommitsRange(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	for ver := int64(1); ver <= 8; ver++ {
		mustAppend(t, ms, newCommit(v.ID, ver, 1, 1))
	}
	for _, r := range [][2]int64{{0, 8}, {0, 0}, {3, 3}, {2, 5}, {7, 8}, {0, 1}, {5, 100}, {8, 20}, {6, 2}} {
		cs, err := ms.Commits(ctx, v.ID, r[0], r[1])
		if err != nil {
			t.Fatalf("Commits(%d, %d): %v", r[0], r[1], err)
		}
		var want []int64
		for ver := r[0] + 1; ver <= min(r[1], 8); ver++ {
			want = append(want, ver)
		}
		if len(cs) != len(want) {
			t.Fatalf("Commits(%d, %d) returned %d, want versions %v", r[0], r[1], len(cs), want)
		}
		for i := range cs {
			if cs[i].Version != want[i] {
				t.Fatalf("Commits(%d, %d)[%d].Version=%d, want %d", r[0], r[1], i, cs[i].Version, want[i])
			}
		}
	}
}

func testTxChangedPages(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	mustAppend(t, ms, newCommit(v.ID, 1, 3, 1, 2, 3))
	err := ms.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, v.ID); err != nil {
			return err
		}
		if err := tx.Append(ctx, newCommit(v.ID, 2, 4, 2, 4)); err != nil {
			return err
		}
		// The transaction sees its own, uncommitted append.
		refs, err := tx.ChangedPages(ctx, v.ID, 1, 2)
		if err != nil {
			return err
		}
		if len(refs) != 2 || refs[0].PageNo != 2 || refs[1].PageNo != 4 || refs[0].Version != 2 {
			t.Errorf("tx.ChangedPages(1, 2)=%+v, want pages 2 and 4 of version 2", refs)
		}
		refs, err = tx.ChangedPages(ctx, v.ID, 0, 2)
		if err != nil {
			return err
		}
		if len(refs) != 4 || refs[0].Version != 1 || refs[1].Version != 2 || refs[2].Version != 1 || refs[3].Version != 2 {
			t.Errorf("tx.ChangedPages(0, 2)=%+v, want pages 1..4 at versions 1,2,1,2", refs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// mustSameCommit checks that got stores every field of c.
func mustSameCommit(t testing.TB, got pgschema.Commit, c pgschema.NewCommit) {
	t.Helper()
	switch {
	case got.Volume != c.Volume, got.Version != c.Version, got.Base != c.Base,
		got.ClientID != c.ClientID, got.ClientSeq != c.ClientSeq, got.Decision != c.Decision,
		got.Reason != c.Reason, got.PageCount != c.PageCount, got.PagesCount != len(c.Pages):
		t.Fatalf("commit %d: got %+v, want %+v", c.Version, brief(got), c)
	case !bytes.Equal(got.Record, c.Record):
		t.Fatalf("commit %d: Record is %d bytes, differs from the %d stored", c.Version, len(got.Record), len(c.Record))
	case !bytes.Equal(got.Checksum, c.Checksum):
		t.Fatalf("commit %d: Checksum=%x, want %x", c.Version, got.Checksum, c.Checksum)
	case !got.ReceivedAt.Equal(c.ReceivedAt):
		t.Fatalf("commit %d: ReceivedAt=%v, want %v", c.Version, got.ReceivedAt, c.ReceivedAt)
	case got.CreatedAt.IsZero():
		t.Fatalf("commit %d: CreatedAt is zero", c.Version)
	}
}

// brief is c without its record, for messages.
func brief(c pgschema.Commit) pgschema.Commit {
	c.Record = nil
	return c
}
