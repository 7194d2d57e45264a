package metastoretest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

func testCreateVolume(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v, err := ms.CreateVolume(ctx, "app.db", 8192)
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	if v.ID <= 0 || v.Name != "app.db" || v.PageSize != 8192 || v.Head != 0 || v.PageCount != 0 || v.Policy != pgschema.DefaultPolicy {
		t.Fatalf("CreateVolume()=%+v, want a positive id, name app.db, page size 8192, head 0, page count 0, policy %q", v, pgschema.DefaultPolicy)
	}
	if v.CreatedAt.IsZero() {
		t.Fatalf("CreateVolume(): CreatedAt is zero")
	}
	got, err := ms.Volume(ctx, "app.db")
	if err != nil {
		t.Fatalf("Volume: %v", err)
	}
	if !sameVolume(got, v) {
		t.Fatalf("Volume()=%+v, want %+v", got, v)
	}
	got, err = ms.VolumeByID(ctx, v.ID)
	if err != nil {
		t.Fatalf("VolumeByID: %v", err)
	}
	if !sameVolume(got, v) {
		t.Fatalf("VolumeByID()=%+v, want %+v", got, v)
	}
	// Every page size SQLite supports.
	for size := 512; size <= 65536; size *= 2 {
		name := fmt.Sprintf("size-%d", size)
		v, err := ms.CreateVolume(ctx, name, size)
		if err != nil {
			t.Fatalf("CreateVolume(%q, %d): %v", name, size, err)
		}
		if v.PageSize != size {
			t.Fatalf("CreateVolume(%q, %d).PageSize=%d", name, size, v.PageSize)
		}
	}
	// Longest name allowed.
	long := strings.Repeat("n", pgschema.MaxVolumeNameLen)
	if _, err := ms.CreateVolume(ctx, long, 4096); err != nil {
		t.Fatalf("CreateVolume(%d-byte name): %v", len(long), err)
	}
}

func testCreateVolumeExists(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	first := mustCreate(t, ms, "dup")
	if _, err := ms.CreateVolume(ctx, "dup", 4096); !errors.Is(err, pgschema.ErrVolumeExists) {
		t.Fatalf("CreateVolume(dup) again: err=%v, want ErrVolumeExists", err)
	}
	if _, err := ms.CreateVolume(ctx, "dup", 1024); !errors.Is(err, pgschema.ErrVolumeExists) {
		t.Fatalf("CreateVolume(dup, other page size): err=%v, want ErrVolumeExists", err)
	}
	vols, err := ms.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes: %v", err)
	}
	if len(vols) != 1 || !sameVolume(vols[0], first) {
		t.Fatalf("Volumes()=%+v, want only %+v", vols, first)
	}
	// The name is still usable as a lookup and a new name still works.
	if _, err := ms.CreateVolume(ctx, "dup2", 4096); err != nil {
		t.Fatalf("CreateVolume(dup2): %v", err)
	}
}

func testCreateVolumeInvalid(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	for _, name := range []string{"", "-x", ".x", "a b", "a/b", "../x", "é", strings.Repeat("n", pgschema.MaxVolumeNameLen+1)} {
		_, err := ms.CreateVolume(ctx, name, 4096)
		mustInvalid(t, err, "CreateVolume("+name+")")
	}
	for _, size := range []int{0, -4096, 256, 1000, 4095, 131072} {
		_, err := ms.CreateVolume(ctx, "ok", size)
		mustInvalid(t, err, "CreateVolume(page size)")
	}
	vols, err := ms.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes: %v", err)
	}
	if len(vols) != 0 {
		t.Fatalf("Volumes()=%+v after invalid creates, want none", vols)
	}
}

func testVolumeNotFound(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	if _, err := ms.Volume(ctx, "nope"); !errors.Is(err, pgschema.ErrVolumeNotFound) {
		t.Fatalf("Volume(nope): err=%v, want ErrVolumeNotFound", err)
	}
	v := mustCreate(t, ms, "yes")
	for _, id := range []int64{0, -1, v.ID + 1000} {
		if _, err := ms.VolumeByID(ctx, id); !errors.Is(err, pgschema.ErrVolumeNotFound) {
			t.Fatalf("VolumeByID(%d): err=%v, want ErrVolumeNotFound", id, err)
		}
	}
	if _, err := ms.Volume(ctx, "YES"); !errors.Is(err, pgschema.ErrVolumeNotFound) {
		t.Fatalf("Volume(YES): err=%v, want ErrVolumeNotFound (names are case-sensitive)", err)
	}
}

func testVolumes(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	vols, err := ms.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes on empty metastore: %v", err)
	}
	if len(vols) != 0 {
		t.Fatalf("Volumes()=%+v, want none", vols)
	}
	byName := map[string]pgschema.Volume{}
	for _, n := range []string{"b", "a", "c.db", "B", "a-1"} {
		byName[n] = mustCreate(t, ms, n)
	}
	// One volume with history, so Volumes reports current heads.
	mustAppend(t, ms, newCommit(byName["c.db"].ID, 1, 3, 1, 2, 3))
	c := byName["c.db"]
	c.Head, c.PageCount = 1, 3
	byName["c.db"] = c

	vols, err = ms.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes: %v", err)
	}
	want := []string{"B", "a", "a-1", "b", "c.db"} // byte order
	if len(vols) != len(want) {
		t.Fatalf("Volumes() returned %d volumes, want %d", len(vols), len(want))
	}
	ids := map[int64]bool{}
	for i, v := range vols {
		if v.Name != want[i] {
			t.Fatalf("Volumes()[%d].Name=%q, want %q", i, v.Name, want[i])
		}
		if !sameVolume(v, byName[v.Name]) {
			t.Fatalf("Volumes()[%d]=%+v, want %+v", i, v, byName[v.Name])
		}
		if ids[v.ID] {
			t.Fatalf("volume id %d used twice", v.ID)
		}
		ids[v.ID] = true
	}
}

func testVolumesIsolated(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	a := mustCreate(t, ms, "a")
	b := mustCreate(t, ms, "b")
	// The same client id and sequence on both volumes are different keys.
	ca := newCommit(a.ID, 1, 2, 1, 2)
	cb := newCommit(b.ID, 1, 5, 1, 5)
	mustAppend(t, ms, ca)
	mustAppend(t, ms, cb)
	mustAppend(t, ms, newCommit(a.ID, 2, 2, 2))

	mustHead(t, ms, a.ID, 2, 2)
	mustHead(t, ms, b.ID, 1, 5)

	if _, err := ms.PageAt(ctx, b.ID, 2, 1); !errors.Is(err, pgschema.ErrPageNotFound) {
		t.Fatalf("PageAt(b, 2, 1): err=%v, want ErrPageNotFound (only a wrote page 2)", err)
	}
	if _, err := ms.Commit(ctx, b.ID, 2); !errors.Is(err, pgschema.ErrCommitNotFound) {
		t.Fatalf("Commit(b, 2): err=%v, want ErrCommitNotFound", err)
	}
	ref, err := ms.PageAt(ctx, b.ID, 1, 1)
	if err != nil {
		t.Fatalf("PageAt(b, 1, 1): %v", err)
	}
	if ref.Location != loc(b.ID, 1, 1) {
		t.Fatalf("PageAt(b, 1, 1)=%+v, want b's location %+v", ref, loc(b.ID, 1, 1))
	}
	refs, err := ms.ChangedPages(ctx, b.ID, 0, 1)
	if err != nil {
		t.Fatalf("ChangedPages(b): %v", err)
	}
	if len(refs) != 2 || refs[0].PageNo != 1 || refs[1].PageNo != 5 {
		t.Fatalf("ChangedPages(b, 0, 1)=%+v, want pages 1 and 5", refs)
	}
	cs, err := ms.Commits(ctx, b.ID, 0, 10)
	if err != nil {
		t.Fatalf("Commits(b): %v", err)
	}
	if len(cs) != 1 || cs[0].Volume != b.ID {
		t.Fatalf("Commits(b, 0, 10)=%+v, want b's one commit", cs)
	}
	err = ms.Update(ctx, func(tx pgschema.Tx) error {
		c, err := tx.CommitBySeq(ctx, b.ID, "c1", 1)
		if err != nil {
			return err
		}
		if c.Volume != b.ID || c.PageCount != 5 {
			t.Errorf("CommitBySeq(b, c1, 1)=%+v, want b's commit", c)
		}
		if _, err := tx.CommitBySeq(ctx, b.ID, "c1", 2); !errors.Is(err, pgschema.ErrCommitNotFound) {
			t.Errorf("CommitBySeq(b, c1, 2): err=%v, want ErrCommitNotFound (only a has it)", err)
		}
		// Locking a does not let the tx append to b.
		if _, err := tx.LockVolume(ctx, a.ID); err != nil {
			return err
		}
		if err := tx.Append(ctx, newCommit(b.ID, 2, 5, 1)); !errors.Is(err, pgschema.ErrVolumeNotLocked) {
			t.Errorf("Append(b) with only a locked: err=%v, want ErrVolumeNotLocked", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	mustHead(t, ms, b.ID, 1, 5)
}
