package metastoretest

import (
	"context"
	"errors"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

func testConfigure(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	other := mustCreate(t, ms, "other")
	if v.Policy != pgschema.DefaultPolicy || v.AllowDDL {
		t.Fatalf("new volume: Policy=%q AllowDDL=%v, want %q and false", v.Policy, v.AllowDDL, pgschema.DefaultPolicy)
	}
	for _, set := range []pgschema.Settings{
		{Policy: pgschema.PolicyStrict},
		{Policy: pgschema.PolicyNoMerge, AllowDDL: true},
		{Policy: pgschema.PolicyReplay, AllowDDL: true},
	} {
		got, err := ms.Configure(ctx, v.ID, set)
		if err != nil {
			t.Fatalf("Configure(%+v): %v", set, err)
		}
		if got.Policy != set.Policy || got.AllowDDL != set.AllowDDL || got.ID != v.ID || got.Name != v.Name {
			t.Fatalf("Configure(%+v)=%+v", set, got)
		}
		// Every read path sees the settings: by name, and under the lock.
		if byName, err := ms.Volume(ctx, "v"); err != nil || !sameVolume(byName, got) {
			t.Fatalf("Volume()=%+v, %v, want %+v", byName, err, got)
		}
		err = ms.Update(ctx, func(tx pgschema.Tx) error {
			locked, err := tx.LockVolumes(ctx, []int64{v.ID})
			if err != nil {
				return err
			}
			if len(locked) != 1 || locked[0].Policy != set.Policy || locked[0].AllowDDL != set.AllowDDL {
				t.Errorf("LockVolumes()=%+v, want settings %+v", locked, set)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	if o := mustVolume(t, ms, other.ID); !sameVolume(o, other) {
		t.Fatalf("other volume changed: %+v, want %+v", o, other)
	}
	t.Run("BadPolicy", func(t *testing.T) {
		_, err := ms.Configure(ctx, v.ID, pgschema.Settings{Policy: "yolo"})
		mustInvalid(t, err, "Configure(yolo)")
		if got := mustVolume(t, ms, v.ID); got.Policy != pgschema.PolicyReplay {
			t.Fatalf("Policy=%q after a refused Configure, want %q", got.Policy, pgschema.PolicyReplay)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		_, err := ms.Configure(ctx, v.ID+other.ID+100, pgschema.Settings{Policy: pgschema.PolicyStrict})
		if !errors.Is(err, pgschema.ErrVolumeNotFound) {
			t.Fatalf("Configure(missing): err=%v, want ErrVolumeNotFound", err)
		}
	})
}

func testMutators(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	other := mustCreate(t, ms, "other")
	mustSet := func(vol int64, name, sql string) {
		t.Helper()
		if err := ms.SetMutator(ctx, vol, name, sql); err != nil {
			t.Fatalf("SetMutator(%d, %q): %v", vol, name, err)
		}
	}
	mustSet(v.ID, "transfer", "UPDATE a SET n = n - :amount WHERE id = :from")
	mustSet(v.ID, "deposit", "UPDATE a SET n = n + :amount WHERE id = :to")
	mustSet(other.ID, "transfer", "SELECT 1")
	mustSet(v.ID, "transfer", "UPDATE a SET n = n - :amount WHERE id = :src") // replaces

	got, err := ms.Mutators(ctx, v.ID)
	if err != nil {
		t.Fatalf("Mutators: %v", err)
	}
	if len(got) != 2 || got[0].Name != "deposit" || got[1].Name != "transfer" ||
		got[1].SQL != "UPDATE a SET n = n - :amount WHERE id = :src" || got[0].Volume != v.ID {
		t.Fatalf("Mutators()=%+v, want deposit and the replaced transfer", got)
	}
	m, err := ms.Mutator(ctx, other.ID, "transfer")
	if err != nil || m.SQL != "SELECT 1" || m.UpdatedAt.IsZero() {
		t.Fatalf("Mutator(other, transfer)=%+v, %v", m, err)
	}

	mustSet(v.ID, "deposit", "") // deletes
	mustSet(v.ID, "never-was", "")
	if _, err := ms.Mutator(ctx, v.ID, "deposit"); !errors.Is(err, pgschema.ErrMutatorNotFound) {
		t.Fatalf("Mutator(deleted): err=%v, want ErrMutatorNotFound", err)
	}
	if got, _ := ms.Mutators(ctx, v.ID); len(got) != 1 {
		t.Fatalf("Mutators() after delete = %+v, want one", got)
	}

	mustInvalid(t, ms.SetMutator(ctx, v.ID, "Bad Name", "SELECT 1"), "SetMutator(bad name)")
	mustInvalid(t, ms.SetMutator(ctx, v.ID, "", "SELECT 1"), "SetMutator(empty name)")
	big := make([]byte, pgschema.MaxMutatorSQLLen+1)
	for i := range big {
		big[i] = ' '
	}
	mustInvalid(t, ms.SetMutator(ctx, v.ID, "big", string(big)), "SetMutator(too long)")
	if err := ms.SetMutator(ctx, v.ID+other.ID+100, "x", "SELECT 1"); !errors.Is(err, pgschema.ErrVolumeNotFound) {
		t.Fatalf("SetMutator(missing volume): err=%v, want ErrVolumeNotFound", err)
	}
}

func testClientCommits(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	for ver := int64(1); ver <= 6; ver++ {
		c := newCommit(v.ID, ver, 1, 1)
		if ver%2 == 0 {
			c.ClientID = "c2"
		}
		c.ClientSeq = 10 + ver
		mustAppend(t, ms, c)
	}
	got, err := ms.ClientCommits(ctx, v.ID, "c1", 12, 15)
	if err != nil {
		t.Fatalf("ClientCommits: %v", err)
	}
	// c1 has seqs 11, 13, 15 at versions 1, 3, 5.
	if len(got) != 2 || got[0].ClientSeq != 13 || got[0].Version != 3 || got[1].ClientSeq != 15 || got[1].Version != 5 {
		t.Fatalf("ClientCommits(c1, 12..15)=%+v, want seqs 13 and 15", got)
	}
	for _, c := range got {
		if c.ClientID != "c1" || c.Decision != pgschema.FastPath || len(c.Record) != 0 || c.Volume != v.ID {
			t.Fatalf("ClientCommits: %+v, want c1's fast-path commit without its record", c)
		}
	}
	if got, err := ms.ClientCommits(ctx, v.ID, "nobody", 0, 100); err != nil || len(got) != 0 {
		t.Fatalf("ClientCommits(nobody)=%+v, %v, want none", got, err)
	}
}
