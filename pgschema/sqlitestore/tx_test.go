package sqlitestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

func TestStore_CreateVolume(t *testing.T) {
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		s := mustOpen(t)
		before := time.Now().Truncate(time.Microsecond)
		v, err := s.CreateVolume(ctx, "app.db", 8192)
		if err != nil {
			t.Fatalf("CreateVolume: %v", err)
		}
		if v.ID <= 0 || v.Name != "app.db" || v.PageSize != 8192 || v.Head != 0 || v.PageCount != 0 || v.Policy != pgschema.DefaultPolicy {
			t.Fatalf("CreateVolume()=%+v, want id > 0, app.db, 8192, head 0, page count 0, policy %s", v, pgschema.DefaultPolicy)
		}
		if v.CreatedAt.Before(before) || v.CreatedAt.After(time.Now()) {
			t.Fatalf("CreatedAt=%v, want between %v and now", v.CreatedAt, before)
		}
		got, err := s.VolumeByID(ctx, v.ID)
		if err != nil {
			t.Fatalf("VolumeByID: %v", err)
		}
		if got != v {
			t.Fatalf("VolumeByID()=%+v, want %+v", got, v)
		}
	})

	t.Run("Exists", func(t *testing.T) {
		s := mustOpen(t)
		mustCreateVolume(t, s, "dup")
		_, err := s.CreateVolume(ctx, "dup", 1024)
		if !errors.Is(err, pgschema.ErrVolumeExists) {
			t.Fatalf("CreateVolume(dup) again: err=%v, want ErrVolumeExists", err)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		s := mustOpen(t)
		var ie *pgschema.InvalidError
		if _, err := s.CreateVolume(ctx, "a/b", 4096); !errors.As(err, &ie) {
			t.Fatalf("CreateVolume(a/b): err=%v, want *InvalidError", err)
		}
		if _, err := s.CreateVolume(ctx, "ok", 3000); !errors.As(err, &ie) {
			t.Fatalf("CreateVolume(page size 3000): err=%v, want *InvalidError", err)
		}
		if n := countRows(t, s, "volumes"); n != 0 {
			t.Fatalf("volumes has %d rows, want 0", n)
		}
	})

	t.Run("IDsNotReused", func(t *testing.T) {
		s := mustOpen(t)
		a := mustCreateVolume(t, s, "a")
		if _, err := s.w.ExecContext(ctx, `DELETE FROM volumes WHERE id = ?`, a.ID); err != nil {
			t.Fatalf("delete volume: %v", err)
		}
		b := mustCreateVolume(t, s, "b")
		if b.ID <= a.ID {
			t.Fatalf("new volume id %d after deleting %d, want a larger one", b.ID, a.ID)
		}
	})
}

func TestStore_Update(t *testing.T) {
	ctx := context.Background()

	t.Run("ErrorUnchanged", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		want := &pgschema.StaleHeadError{Volume: 1, Head: 2, Version: 4}
		err := s.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolume(ctx, v.ID); err != nil {
				return err
			}
			if err := tx.Append(ctx, testCommit(v.ID, 1, 1, 1)); err != nil {
				return err
			}
			return want
		})
		if err != want {
			t.Fatalf("Update()=%v, want fn's error unchanged (%v)", err, want)
		}
		if got, _ := s.VolumeByID(ctx, v.ID); got.Head != 0 {
			t.Fatalf("head after rollback=%d, want 0", got.Head)
		}
		if n := countRows(t, s, "commits"); n != 0 {
			t.Fatalf("commits has %d rows after rollback, want 0", n)
		}
	})

	t.Run("Panic", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Fatalf("recover()=%v, want boom", p)
				}
			}()
			s.Update(ctx, func(tx pgschema.Tx) error {
				if _, err := tx.LockVolume(ctx, v.ID); err != nil {
					return err
				}
				if err := tx.Append(ctx, testCommit(v.ID, 1, 1, 1)); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		if n := countRows(t, s, "commits"); n != 0 {
			t.Fatalf("commits has %d rows after a panic, want 0", n)
		}
		// The write connection was released: the next Update runs.
		mustAppend(t, s, testCommit(v.ID, 1, 1, 1))
	})

	t.Run("Goexit", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		var wg sync.WaitGroup
		wg.Go(func() {
			s.Update(ctx, func(tx pgschema.Tx) error {
				if _, err := tx.LockVolume(ctx, v.ID); err != nil {
					return err
				}
				if err := tx.Append(ctx, testCommit(v.ID, 1, 1, 1)); err != nil {
					return err
				}
				runtime.Goexit() // as t.FailNow does
				return nil
			})
		})
		wg.Wait()
		if n := countRows(t, s, "commits"); n != 0 {
			t.Fatalf("commits has %d rows after Goexit, want 0", n)
		}
		mustAppend(t, s, testCommit(v.ID, 1, 1, 1))
	})

	t.Run("TxAfterReturn", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		var kept pgschema.Tx
		if err := s.Update(ctx, func(tx pgschema.Tx) error { kept = tx; return nil }); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if _, err := kept.LockVolume(ctx, v.ID); !errors.Is(err, errTxDone) {
			t.Fatalf("LockVolume on a finished tx: err=%v, want errTxDone", err)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := mustOpen(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Update(cctx, func(pgschema.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("Update(cancelled ctx): err=%v, want context.Canceled", err)
		}
	})
}

func TestStore_Append(t *testing.T) {
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		c := testCommit(v.ID, 1, 4, 1, 2, 4)
		c.Decision, c.Reason = pgschema.Merged, "no overlap"
		c.ReceivedAt = time.Date(2025, 3, 14, 15, 9, 26, 535897999, time.FixedZone("X", 5*3600+1800))
		mustAppend(t, s, c)

		got, err := s.Commit(ctx, v.ID, 1)
		if err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if got.Volume != v.ID || got.Version != 1 || got.Base != 0 || got.ClientID != c.ClientID || got.ClientSeq != c.ClientSeq ||
			got.Decision != pgschema.Merged || got.Reason != "no overlap" || got.PageCount != 4 || got.PagesCount != 3 ||
			!bytes.Equal(got.Record, c.Record) || !bytes.Equal(got.Checksum, c.Checksum) {
			t.Fatalf("Commit()=%+v, want the fields of %+v", got, c)
		}
		if want := c.ReceivedAt.Truncate(time.Microsecond); !got.ReceivedAt.Equal(want) {
			t.Fatalf("ReceivedAt=%v, want %v (to the microsecond)", got.ReceivedAt, want)
		}
		if got.CreatedAt.IsZero() {
			t.Fatalf("CreatedAt is zero")
		}
		vol, _ := s.VolumeByID(ctx, v.ID)
		if vol.Head != 1 || vol.PageCount != 4 {
			t.Fatalf("volume Head=%d PageCount=%d, want 1 and 4", vol.Head, vol.PageCount)
		}
		for _, p := range c.Pages {
			ref, err := s.PageAt(ctx, v.ID, p.PageNo, 1)
			if err != nil {
				t.Fatalf("PageAt(%d): %v", p.PageNo, err)
			}
			if ref.PageNo != p.PageNo || ref.Version != 1 || ref.Location != p.Location {
				t.Fatalf("PageAt(%d)=%+v, want %+v at version 1", p.PageNo, ref, p.Location)
			}
		}
	})

	t.Run("EmptyFields", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		c := testCommit(v.ID, 1, 0)
		c.Record, c.Checksum, c.ReceivedAt = nil, []byte{}, time.Time{}
		mustAppend(t, s, c)
		got, err := s.Commit(ctx, v.ID, 1)
		if err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if got.Record != nil || got.Checksum != nil || !got.ReceivedAt.IsZero() || got.PagesCount != 0 {
			t.Fatalf("Commit()=%+v, want nil record and checksum, zero ReceivedAt, no pages", got)
		}
	})

	t.Run("NotLocked", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		err := s.Update(ctx, func(tx pgschema.Tx) error { return tx.Append(ctx, testCommit(v.ID, 1, 1, 1)) })
		if !errors.Is(err, pgschema.ErrVolumeNotLocked) {
			t.Fatalf("Append without LockVolume: err=%v, want ErrVolumeNotLocked", err)
		}
	})

	t.Run("StaleHead", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		mustAppend(t, s, testCommit(v.ID, 1, 1, 1))
		for _, version := range []int64{1, 3} {
			err := lockAppend(ctx, s, testCommit(v.ID, version, 1, 1))
			var se *pgschema.StaleHeadError
			if !errors.As(err, &se) || se.Head != 1 || se.Version != version || se.Volume != v.ID {
				t.Fatalf("Append(version %d) at head 1: err=%v, want *StaleHeadError{Head: 1, Version: %d}", version, err, version)
			}
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		c := testCommit(v.ID, 1, 2, 1, 3) // page 3 beyond page count 2
		var ie *pgschema.InvalidError
		if err := lockAppend(ctx, s, c); !errors.As(err, &ie) {
			t.Fatalf("Append(page beyond count): err=%v, want *InvalidError", err)
		}
	})

	t.Run("Duplicate", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		mustAppend(t, s, testCommit(v.ID, 1, 1, 1))
		dup := testCommit(v.ID, 2, 2, 2)
		dup.ClientSeq = 1
		segsBefore := countRows(t, s, "segments")
		// fn swallows the error and commits: the savepoint must have undone
		// the segment row that Append wrote before the commit insert failed.
		err := s.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolume(ctx, v.ID); err != nil {
				return err
			}
			if err := tx.Append(ctx, dup); !errors.Is(err, pgschema.ErrDuplicateCommit) {
				t.Errorf("Append(duplicate key): err=%v, want ErrDuplicateCommit", err)
			}
			// The tx goes on and can still append the right commit.
			ok := testCommit(v.ID, 2, 2, 2)
			ok.ClientSeq = 2
			ok.Pages[0].Segment = "segments/other"
			return tx.Append(ctx, ok)
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if got, want := countRows(t, s, "segments"), segsBefore+1; got != want {
			t.Fatalf("segments=%d, want %d (the failed Append's segment undone)", got, want)
		}
		refs, err := s.ChangedPages(ctx, v.ID, 1, 2)
		if err != nil || len(refs) != 1 || refs[0].Segment != "segments/other" {
			t.Fatalf("ChangedPages(1, 2)=%+v, %v; want only the second Append's page", refs, err)
		}
	})

	t.Run("SeveralInOneTx", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		err := s.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolume(ctx, v.ID); err != nil {
				return err
			}
			for version := int64(1); version <= 3; version++ {
				if err := tx.Append(ctx, testCommit(v.ID, version, 2, 1, 2)); err != nil {
					return err
				}
			}
			again, err := tx.LockVolume(ctx, v.ID)
			if err != nil {
				return err
			}
			if again.Head != 3 {
				t.Errorf("LockVolume again: Head=%d, want 3", again.Head)
			}
			refs, err := tx.ChangedPages(ctx, v.ID, 0, 3)
			if err != nil {
				return err
			}
			if len(refs) != 2 || refs[0].Version != 3 {
				t.Errorf("tx.ChangedPages(0, 3)=%+v, want pages 1 and 2 at version 3", refs)
			}
			c, err := tx.CommitBySeq(ctx, v.ID, "client", 2)
			if err != nil || c.Version != 2 {
				t.Errorf("tx.CommitBySeq(client, 2)=%+v, %v; want version 2", c, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		// Shared segment names across versions map to one row per key.
		if got, want := countRows(t, s, "segments"), 3; got != want {
			t.Fatalf("segments=%d, want %d", got, want)
		}
	})

	t.Run("SharedSegment", func(t *testing.T) {
		s := mustOpen(t)
		v := mustCreateVolume(t, s, "v")
		for version := int64(1); version <= 3; version++ {
			c := testCommit(v.ID, version, 2, 1, 2)
			for i := range c.Pages {
				c.Pages[i].Segment = "segments/group"
			}
			mustAppend(t, s, c)
		}
		if got := countRows(t, s, "segments"); got != 1 {
			t.Fatalf("segments=%d, want 1", got)
		}
	})
}

// TestStore_ConcurrentAppend races 16 writers on one volume through
// pgschema.AppendCommit: every commit lands exactly once and the versions are
// 1..N with no gap.
func TestStore_ConcurrentAppend(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	v := mustCreateVolume(t, s, "v")
	const writers, perWriter = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for seq := range int64(perWriter) {
				for {
					var head int64
					err := s.Update(ctx, func(tx pgschema.Tx) error {
						vol, err := tx.LockVolume(ctx, v.ID)
						head = vol.Head
						return err
					})
					if err != nil {
						errs <- err
						return
					}
					c := testCommit(v.ID, head+1, 4, 1, uint32(w%3)+2)
					c.ClientID, c.ClientSeq = fmt.Sprintf("w%d", w), seq
					_, dup, err := pgschema.AppendCommit(ctx, s, c)
					var stale *pgschema.StaleHeadError
					if errors.As(err, &stale) {
						continue // another writer took head+1: retry on the new head
					}
					if err != nil || dup {
						errs <- fmt.Errorf("writer %d seq %d: dup=%v err=%v", w, seq, dup, err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const n = writers * perWriter
	vol, _ := s.VolumeByID(ctx, v.ID)
	if vol.Head != n {
		t.Fatalf("Head=%d, want %d", vol.Head, n)
	}
	cs, err := s.Commits(ctx, v.ID, 0, n)
	if err != nil {
		t.Fatalf("Commits: %v", err)
	}
	seen := map[string]bool{}
	for i, c := range cs {
		if c.Version != int64(i+1) {
			t.Fatalf("commit %d has version %d, want contiguous versions", i, c.Version)
		}
		key := fmt.Sprintf("%s/%d", c.ClientID, c.ClientSeq)
		if seen[key] {
			t.Fatalf("idempotency key %s stored twice", key)
		}
		seen[key] = true
	}
	if len(cs) != n {
		t.Fatalf("%d commits, want %d", len(cs), n)
	}
}
