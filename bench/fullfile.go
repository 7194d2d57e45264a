package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	_ "github.com/mattn/go-sqlite3" // the plain "sqlite3" driver of the full-file client

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
)

// fileClient is the full-file strategy, naive sync: a plain SQLite file
// whose every commit uploads every page of the file, through the same
// server and stores as the other strategies. It sends no read set and no
// logical record, so the server (policy strict) can only take a commit
// based on its head and rejects the others as stale; the client then
// downloads the whole file at head, re-runs the transaction and uploads
// again. Offline commits are uploaded one by one the same way, each
// re-run on the file the one before it produced.
//
// The local file runs journal_mode=MEMORY and synchronous=OFF: what is
// compared is sync, not local durability.
//
// Invariant, outside Sync: the file holds version base plus every pending
// transaction (applied == len(pending)).
type fileClient struct {
	path, volume string
	clientID     string
	pageSize     int
	c            *api.Client
	t            *tally
	db           *sql.DB

	seq     int64
	base    int64    // the server version the file was last equal to
	pending []txFunc // local transactions not yet stored
	applied int      // the file holds base + pending[:applied]; -1: unknown
}

// maxReadPages is api.DefaultMaxReadPages: pages per page-read request.
const maxReadPages = 4096

// openFileClient makes path a copy of the volume's head.
func openFileClient(ctx context.Context, path, volume, clientID string, pageSize int, c *api.Client, t *tally) (*fileClient, error) {
	f := &fileClient{path: path, volume: volume, clientID: clientID, pageSize: pageSize, c: c, t: t}
	if err := f.download(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileClient) open() error {
	dsn := "file:" + (&url.URL{Path: f.path}).EscapedPath() + "?_journal_mode=MEMORY&_synchronous=OFF"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	f.db = db
	return nil
}

func (f *fileClient) Exec(ctx context.Context, tx txFunc) error {
	if err := tx(ctx, f.db); err != nil {
		return err
	}
	f.pending = append(f.pending, tx)
	f.applied++
	return nil
}

func (f *fileClient) Sync(ctx context.Context, stop time.Time, done func(int)) error {
	for i := 0; len(f.pending) > 0; i++ {
		if i == maxPushes {
			return fmt.Errorf("still %d commits pending after %d pushes", len(f.pending), i)
		}
		if !stop.IsZero() && time.Now().After(stop) {
			return f.redo(ctx) // restore the invariant, leave the rest pending
		}
		if f.applied != 1 {
			// The file is not base + the first pending transaction: go to
			// the head and re-run it there.
			if err := f.download(ctx); err != nil {
				return err
			}
			if err := f.pending[0](ctx, f.db); err != nil {
				return fmt.Errorf("re-run on version %d: %w", f.base, err)
			}
			f.applied = 1
		}
		res, err := f.upload(ctx)
		if err != nil {
			return err
		}
		f.t.add(res.Decision, res.Err)
		var stale *commit.StaleBaseError
		switch {
		case res.Decision != commit.Rejected:
			f.base, f.pending, f.applied = res.Version, f.pending[1:], 0
			if done != nil {
				done(1)
			}
			if len(f.pending) > 0 {
				if err := f.pending[0](ctx, f.db); err != nil {
					return fmt.Errorf("run on version %d: %w", f.base, err)
				}
				f.applied = 1
			}
		case errors.As(res.Err, &stale):
			f.applied = -1 // download and retry
		default:
			f.pending, f.applied = f.pending[1:], -1
			if done != nil {
				done(1)
			}
		}
	}
	return nil
}

// redo brings the file back to base + every pending transaction.
func (f *fileClient) redo(ctx context.Context) error {
	if f.applied >= 0 && f.applied <= len(f.pending) {
		for _, tx := range f.pending[f.applied:] {
			if err := tx(ctx, f.db); err != nil {
				return err
			}
		}
		f.applied = len(f.pending)
		return nil
	}
	if err := f.download(ctx); err != nil {
		return err
	}
	f.applied = 0
	return f.redo(ctx)
}

// upload sends the whole file as one commit based on f.base.
func (f *fileClient) upload(ctx context.Context) (commit.Result, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return commit.Result{}, err
	}
	if len(b) == 0 || len(b)%f.pageSize != 0 {
		return commit.Result{}, fmt.Errorf("upload %s: %d bytes is not a whole number of %d-byte pages", f.path, len(b), f.pageSize)
	}
	n := len(b) / f.pageSize
	f.seq++
	req := commit.Request{ClientID: f.clientID, Seq: f.seq, Base: f.base, PageSize: f.pageSize, PageCount: uint32(n), Pages: make([]commit.Page, n)}
	for i := range n {
		req.Pages[i] = commit.Page{No: uint32(i + 1), Data: b[i*f.pageSize : (i+1)*f.pageSize]}
	}
	res, err := f.c.Push(ctx, f.volume, []commit.Request{req})
	if err != nil {
		return commit.Result{}, fmt.Errorf("upload: %w", err)
	}
	return res[0], nil
}

// download replaces the file with the volume's head, every page of it, and
// sets base to that head. The pages go to a file beside it as they arrive
// (a file of a gigabyte is not held in memory), which then replaces it.
func (f *fileClient) download(ctx context.Context) error {
	v, err := f.c.Volume(ctx, f.volume)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	tmp := f.path + ".download"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after the rename, a no-op
	// Pages within the page count that no version wrote are zeros.
	err = out.Truncate(int64(v.PageCount) * int64(f.pageSize))
	w := &runWriter{f: out, pageSize: f.pageSize}
	for first := uint32(1); err == nil && first <= v.PageCount; first += maxReadPages {
		nos := make([]uint32, 0, maxReadPages)
		for no := first; no <= v.PageCount && no < first+maxReadPages; no++ {
			nos = append(nos, no)
		}
		_, err = f.c.ReadPages(ctx, f.volume, v.Head, nos, func(p api.StreamedPage) error {
			if p.No < 1 || p.No > v.PageCount || len(p.Data) != f.pageSize {
				return fmt.Errorf("page %d of %d bytes at version %d", p.No, len(p.Data), v.Head)
			}
			return w.write(p.No, p.Data)
		})
	}
	if err == nil {
		err = w.flush()
	}
	if err = errors.Join(err, out.Close()); err != nil {
		return fmt.Errorf("download version %d: %w", v.Head, err)
	}
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			return err
		}
		f.db = nil
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return err
	}
	f.base = v.Head
	return f.open()
}

// runWriter writes pages into a file, a run of consecutive pages per
// write: a download's pages come in order.
type runWriter struct {
	f        *os.File
	pageSize int
	first    uint32 // the run's first page
	buf      []byte
}

const runWriterMax = 1 << 20 // bytes per write

func (w *runWriter) write(no uint32, data []byte) error {
	n := uint32(len(w.buf) / w.pageSize)
	if len(w.buf) > 0 && (no != w.first+n || len(w.buf) >= runWriterMax) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if len(w.buf) == 0 {
		w.first = no
	}
	w.buf = append(w.buf, data...)
	return nil
}

func (w *runWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.WriteAt(w.buf, int64(w.first-1)*int64(w.pageSize))
	w.buf = w.buf[:0]
	return err
}

func (f *fileClient) CatchUp(ctx context.Context) error {
	if len(f.pending) > 0 {
		return errors.New("catch up with commits pending")
	}
	f.applied = 0
	return f.download(ctx)
}

func (f *fileClient) DB() *sql.DB { return f.db }

func (f *fileClient) Close(ctx context.Context) error {
	if f.db == nil {
		return nil
	}
	return f.db.Close()
}
