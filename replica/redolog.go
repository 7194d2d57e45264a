package replica

// The redo log, path+"-cambium-log", holds the local commits made since they
// were last folded into the sidecar's pending table: a local commit is one
// frame appended with one write system call (and, with DurabilityFull, one
// fsync), which costs a fraction of a SQLite transaction inserting the same
// row (issue #3).
//
// A frame is a 20-byte header and a payload, big-endian:
//
//	0   uint32  magic, 0x43424c47 ("CBLG")
//	4   uint32  payload length
//	8   uint64  commit sequence number
//	16  uint32  CRC-32C (Castagnoli) of bytes 4..16 and the payload
//	20  payload uvarint base_version, uvarint page_count, varint created_at,
//	            then read_set, page_numbers, deltas, record and pages, each
//	            a uvarint length and the bytes: the columns of a pending row
//
// The valid log is the longest prefix of whole frames with good checksums
// and consecutive sequence numbers; whatever follows (a torn or lost write,
// stale bytes) is ignored and overwritten by the next append. Without an
// fsync per frame (DurabilityNormal) a power loss may cut the log short but
// never leaves a hole in it, so it keeps a prefix of the commits, as
// SQLite's WAL does with synchronous=NORMAL.
//
// Folding (sidecar.fold) inserts the frames as pending rows and
// records the last one as synced_seq in one sidecar transaction with an
// fsync, then empties the log. Frames at or below synced_seq are already in
// the table: a crash between the two steps leaves them behind, and they are
// skipped.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

const (
	logMagic     = 0x43424c47
	logHeaderLen = 20
	// logMaxPayload bounds a frame, as SQLite's default SQLITE_MAX_LENGTH
	// bounds the blob a pending row held before the log.
	logMaxPayload = 1 << 30
)

// ErrCorruptLog is wrapped by errors decoding a redo log frame's payload,
// and by Open when the log does not continue the sidecar's commits.
var ErrCorruptLog = errors.New("replica: corrupt redo log")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// redoLog is the open redo log. Its methods are called with the sidecar's
// log lock held (sidecar.withLog).
type redoLog struct {
	f          *os.File
	durability Durability
	size       int64  // end of the last valid frame: the next append goes here
	frames     int    // valid frames in the log
	last       uint64 // sequence number of the last one, when frames > 0
	synced     uint64 // meta synced_seq: frames up to it are pending rows already
	buf        []byte // the frame being appended, reused
	// pages holds the pages the log's commits wrote and none cut off
	// since: a commit may store those as deltas (pageset.go).
	pages map[uint32]struct{}
}

// openRedoLog opens (creating) the redo log at path and finds the end of
// its valid frames. A new file's directory entry is fsynced, so a commit
// fsynced into it (DurabilityFull) cannot lose the file to a power loss.
func openRedoLog(path string, d Durability) (*redoLog, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	l := &redoLog{f: f, durability: d, pages: make(map[uint32]struct{})}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	b, err := l.read()
	if err != nil {
		f.Close()
		return nil, err
	}
	l.size, l.frames, l.last = scanLog(b, nil)
	return l, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// read returns the whole file.
func (l *redoLog) read() ([]byte, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	if _, err := l.f.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read redo log: %w", err)
	}
	return b, nil
}

// append writes row as the next frame; with DurabilityFull it is fsynced
// before append returns. A failed append leaves the log as it was: the next
// one overwrites whatever part of the frame reached the file, and a frame
// whose fsync failed is cut off.
func (l *redoLog) append(row pendingRow) error {
	if l.frames > 0 && uint64(row.seq) != l.last+1 {
		return fmt.Errorf("append seq %d after %d: %w", row.seq, l.last, ErrCorruptLog)
	}
	l.buf = appendFrame(l.buf[:0], row)
	if _, err := l.f.WriteAt(l.buf, l.size); err != nil {
		return fmt.Errorf("append redo log: %w", err)
	}
	if l.durability == DurabilityFull {
		if err := fdatasync(l.f); err != nil {
			// COMMIT fails: the frame must not come back at Open.
			return errors.Join(fmt.Errorf("sync redo log: %w", err), l.f.Truncate(l.size))
		}
	}
	l.size += int64(len(l.buf))
	l.frames++
	l.last = uint64(row.seq)
	if cap(l.buf) > 1<<20 {
		l.buf = nil // do not keep one big transaction's buffer
	}
	return nil
}

// rows returns the log's frames with a sequence number above after, in order.
func (l *redoLog) rows(after uint64) ([]pendingRow, error) {
	if l.frames == 0 {
		return nil, nil
	}
	b, err := l.read()
	if err != nil {
		return nil, err
	}
	var rows []pendingRow
	var derr error
	end, n, _ := scanLog(b[:min(int64(len(b)), l.size)], func(seq uint64, payload []byte) bool {
		if seq <= after {
			return true
		}
		row, err := decodeLogPayload(seq, payload)
		if err != nil {
			derr = fmt.Errorf("redo log frame %d: %w", seq, err)
			return false
		}
		rows = append(rows, row)
		return true
	})
	if derr != nil {
		return nil, derr
	}
	if end != l.size || n != l.frames {
		return nil, fmt.Errorf("redo log: %d frames in %d bytes, wrote %d in %d: %w", n, end, l.frames, l.size, ErrCorruptLog)
	}
	return rows, nil
}

// reset empties the log. It needs no fsync: frames left behind by a lost
// truncate are at or below synced_seq, or cut off by the checksums.
func (l *redoLog) reset() error {
	if l.size == 0 {
		return nil
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate redo log: %w", err)
	}
	l.size, l.frames, l.last = 0, 0, 0
	clear(l.pages)
	return nil
}

// wrote records the pages of a commit appended to the log, with its page
// count: pages above it are cut off.
func (l *redoLog) wrote(count uint32, pages map[uint32][]byte) {
	for pgno := range l.pages {
		if pgno > count {
			delete(l.pages, pgno)
		}
	}
	for pgno := range pages {
		if pgno <= count {
			l.pages[pgno] = struct{}{}
		}
	}
}

func (l *redoLog) close() error { return l.f.Close() }

// appendFrame appends row's frame to b.
func appendFrame(b []byte, row pendingRow) []byte {
	start := len(b)
	b = append(b, make([]byte, logHeaderLen)...)
	b = binary.AppendUvarint(b, uint64(row.base))
	b = binary.AppendUvarint(b, uint64(row.pageCount))
	b = binary.AppendVarint(b, row.createdAt)
	for _, blob := range [][]byte{row.readSet, row.pageNumbers, row.deltas, row.record, row.pages} {
		b = binary.AppendUvarint(b, uint64(len(blob)))
		b = append(b, blob...)
	}
	h := b[start : start+logHeaderLen]
	binary.BigEndian.PutUint32(h[0:], logMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(len(b)-start-logHeaderLen))
	binary.BigEndian.PutUint64(h[8:], uint64(row.seq))
	crc := crc32.Update(0, castagnoli, h[4:16])
	binary.BigEndian.PutUint32(h[16:], crc32.Update(crc, castagnoli, b[start+logHeaderLen:]))
	return b
}

// scanLog walks b's valid frames, calling fn (if not nil) with each one's
// sequence number and payload until fn returns false. It returns the end
// of the last valid frame walked, how many there were and the last one's
// sequence number.
func scanLog(b []byte, fn func(seq uint64, payload []byte) bool) (end int64, frames int, last uint64) {
	off := 0
	for len(b)-off >= logHeaderLen {
		h := b[off : off+logHeaderLen]
		n := int(binary.BigEndian.Uint32(h[4:]))
		seq := binary.BigEndian.Uint64(h[8:])
		if binary.BigEndian.Uint32(h[0:]) != logMagic || n > logMaxPayload || n > len(b)-off-logHeaderLen {
			break
		}
		if frames > 0 && seq != last+1 {
			break
		}
		payload := b[off+logHeaderLen : off+logHeaderLen+n]
		crc := crc32.Update(0, castagnoli, h[4:16])
		if crc32.Update(crc, castagnoli, payload) != binary.BigEndian.Uint32(h[16:]) {
			break
		}
		off += logHeaderLen + n
		frames++
		last = seq
		if fn != nil && !fn(seq, payload) {
			break
		}
	}
	return int64(off), frames, last
}

// decodeLogPayload is the inverse of appendFrame's payload; the blobs alias
// payload.
func decodeLogPayload(seq uint64, payload []byte) (pendingRow, error) {
	row := pendingRow{seq: int64(seq)}
	off := 0
	uv := func(what string) (uint64, error) {
		v, n := binary.Uvarint(payload[off:])
		if n <= 0 {
			return 0, fmt.Errorf("%s at %d: bad varint: %w", what, off, ErrCorruptLog)
		}
		off += n
		return v, nil
	}
	base, err := uv("base_version")
	if err != nil {
		return row, err
	}
	count, err := uv("page_count")
	if err != nil {
		return row, err
	}
	created, n := binary.Varint(payload[off:])
	if n <= 0 {
		return row, fmt.Errorf("created_at at %d: bad varint: %w", off, ErrCorruptLog)
	}
	off += n
	if seq > 1<<63-1 || base > 1<<63-1 || count > 1<<32-1 {
		return row, fmt.Errorf("seq %d, base_version %d, page_count %d out of range: %w", seq, base, count, ErrCorruptLog)
	}
	row.base, row.pageCount, row.createdAt = int64(base), int64(count), created
	for _, blob := range []*[]byte{&row.readSet, &row.pageNumbers, &row.deltas, &row.record, &row.pages} {
		n, err := uv("blob length")
		if err != nil {
			return row, err
		}
		if n > uint64(len(payload)-off) {
			return row, fmt.Errorf("blob of %d bytes at %d, %d left: %w", n, off, len(payload)-off, ErrCorruptLog)
		}
		*blob = payload[off : off+int(n) : off+int(n)]
		off += int(n)
	}
	if off != len(payload) {
		return row, fmt.Errorf("%d trailing bytes: %w", len(payload)-off, ErrCorruptLog)
	}
	return row, nil
}
