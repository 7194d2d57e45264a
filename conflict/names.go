package conflict

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// ErrCorrupt is what every *CorruptError unwraps to.
var ErrCorrupt = errors.New("conflict: corrupt database")

// CorruptError reports a page that does not follow the SQLite file format
// where NameTables expected it to.
type CorruptError struct {
	Page   uint32
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("conflict: corrupt database: page %d: %s", e.Page, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(pgno uint32, reason string) error { return &CorruptError{Page: pgno, Reason: reason} }

// PageReader reads page pgno (1-based) of one snapshot. The returned slice
// must hold the whole page; NameTables never modifies it, so it may be
// shared with a cache.
type PageReader func(ctx context.Context, pgno uint32) ([]byte, error)

// Object is what owns a page in a SQLite database: a table or index (from
// sqlite_schema; the schema table itself is the table "sqlite_schema"), the
// freelist, or the pointer map of an auto-vacuum database.
type Object struct {
	Type  string // "table", "index", "freelist" or "ptrmap"
	Name  string // the table's or index's name
	Table string // the table an index belongs to (tbl_name)
}

// String describes o in one line of bounded length: "table accounts",
// "index accounts_k on accounts", "freelist", "pointer map". Names that are
// not plain identifiers are quoted and long ones are cut.
func (o Object) String() string {
	switch o.Type {
	case "freelist":
		return "freelist"
	case "ptrmap":
		return "pointer map"
	case "table":
		return "table " + ident(o.Name)
	case "index":
		return "index " + ident(o.Name) + " on " + ident(o.Table)
	}
	return ident(o.Type) + " " + ident(o.Name)
}

// maxIdent is the most runes of a name that Object.String shows.
const maxIdent = 64

// ident returns s as it can appear in a one-line message.
func ident(s string) string {
	plain := s != "" && utf8.ValidString(s)
	n := 0
	cut := len(s)
	for i, r := range s {
		if n == maxIdent {
			cut = i
			break
		}
		n++
		if r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			plain = false
		}
	}
	if cut < len(s) {
		return strconv.QuoteToGraphic(s[:cut]) + "…"
	}
	if plain {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

var schemaObject = Object{Type: "table", Name: "sqlite_schema", Table: "sqlite_schema"}

// maxSchemaRecord bounds how much of one sqlite_schema record is assembled
// from overflow pages: its first four columns (type, name, tbl_name,
// rootpage) must fit in it.
const maxSchemaRecord = 1 << 20

// NameTables names the objects that own pages of the snapshot read serves,
// a database of pageCount pages of pageSize bytes: for each of pages it can
// place, the table or index whose b-tree holds it (overflow pages
// included), or the freelist or pointer map. Pages it cannot place are
// absent from the map.
//
// It reads sqlite_schema (the b-tree rooted at page 1), then walks the
// b-trees it lists from their roots, stopping as soon as every page is
// named. A first walk reads interior pages only — in a b-tree every leaf is
// at the same depth, so once an interior page's first child is a leaf, its
// other children are leaves too and need no read — and a second, full walk
// runs only for pages still unnamed (overflow pages hang off leaf cells).
// No walk reads a page more than twice, so the reads are bounded by a small
// multiple of pageCount (the tests hold it to 5·pageCount+1) — still, call
// it to explain a conflict, never on the fast path.
//
// Corrupt pages never make it fail or loop: a page that breaks the file
// format, a child pointer out of range, or a page reached twice (a cycle)
// ends the walk of that subtree, and NameTables returns what it could name
// with the first *CorruptError. An error from read or ctx is returned as is,
// with a nil map.
func NameTables(ctx context.Context, read PageReader, pageSize int, pageCount uint32, pages []uint32) (map[uint32]Object, error) {
	if pageSize < minPageSize || pageSize > maxPageSize || pageSize&(pageSize-1) != 0 {
		return nil, fmt.Errorf("name tables: page size %d is not a power of two in %d..%d", pageSize, minPageSize, maxPageSize)
	}
	w := &walker{ctx: ctx, read: read, pageSize: pageSize, pageCount: pageCount,
		want: make(map[uint32]bool), out: make(map[uint32]Object)}
	for _, p := range pages {
		if p >= 1 && p <= pageCount {
			w.want[p] = true
		}
	}
	if len(w.want) == 0 {
		return w.out, nil
	}
	if err := w.run(); err != nil {
		return nil, err
	}
	return w.out, w.firstCorrupt
}

// NameTables names the objects owning r's listed conflicts in a snapshot,
// normally head's, by NameTables, and sets their Object. Pages beyond that
// snapshot's page count (Truncated ones, at head) stay unknown. It returns
// NameTables' error; the names it could find are set even then.
func (r *Report) NameTables(ctx context.Context, read PageReader, pageSize int, pageCount uint32) error {
	pages := make([]uint32, len(r.Conflicts))
	for i, c := range r.Conflicts {
		pages[i] = c.Page
	}
	names, err := NameTables(ctx, read, pageSize, pageCount, pages)
	for i, c := range r.Conflicts {
		if o, ok := names[c.Page]; ok {
			r.Conflicts[i].Object = o
		}
	}
	return err
}

// walker is one NameTables call.
type walker struct {
	ctx       context.Context
	read      PageReader
	pageSize  int
	usable    int
	enc       uint32
	pageCount uint32

	want         map[uint32]bool   // requested pages not named yet
	out          map[uint32]Object // named pages
	firstCorrupt error
}

func (w *walker) run() error {
	p1, err := w.page(1)
	if err != nil {
		return err
	}
	if p1 == nil {
		return nil
	}
	switch {
	case string(p1[:len(magic)]) != magic:
		w.corrupt(1, "no SQLite header string")
		return nil
	case headerPageSize(p1) != w.pageSize:
		w.corrupt(1, fmt.Sprintf("header page size %d, want %d", headerPageSize(p1), w.pageSize))
		return nil
	}
	w.usable = w.pageSize - int(p1[hdrReserved])
	if w.usable < minUsable {
		w.corrupt(1, fmt.Sprintf("usable size %d", w.usable))
		return nil
	}
	w.enc = binary.BigEndian.Uint32(p1[hdrTextEncoding:])

	rows, err := w.schema(p1)
	if err != nil || len(w.want) == 0 {
		return err
	}
	if binary.BigEndian.Uint32(p1[hdrLargestRoot:]) != 0 {
		for p := range w.want {
			if w.isPtrmap(p) {
				w.name(p, Object{Type: "ptrmap"})
			}
		}
	}
	if err := w.freelist(p1); err != nil || len(w.want) == 0 {
		return err
	}
	for _, full := range []bool{false, true} {
		visited := make(pageSet)
		visited.add(1)
		for _, row := range rows {
			if err := w.tree(row, full, visited); err != nil || len(w.want) == 0 {
				return err
			}
		}
	}
	return nil
}

// page reads page pgno. A page of the wrong size is corruption: it returns
// nil, nil after recording it.
func (w *walker) page(pgno uint32) ([]byte, error) {
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	b, err := w.read(w.ctx, pgno)
	if err != nil {
		return nil, fmt.Errorf("read page %d: %w", pgno, err)
	}
	if len(b) != w.pageSize {
		w.corrupt(pgno, fmt.Sprintf("%d bytes, want %d", len(b), w.pageSize))
		return nil, nil
	}
	return b, nil
}

func (w *walker) corrupt(pgno uint32, reason string) {
	if w.firstCorrupt == nil {
		w.firstCorrupt = corrupt(pgno, reason)
	}
}

func (w *walker) noteCorrupt(err error) {
	if w.firstCorrupt == nil {
		w.firstCorrupt = err
	}
}

func (w *walker) name(p uint32, o Object) {
	if w.want[p] {
		delete(w.want, p)
		w.out[p] = o
	}
}

// namedRoot is one b-tree to walk.
type namedRoot struct {
	root uint32
	obj  Object
}

// schema walks sqlite_schema in full, naming its pages, and returns the
// b-trees it lists — all of them, unless every page got named on the way.
func (w *walker) schema(p1 []byte) ([]namedRoot, error) {
	var rows []namedRoot
	visited := make(pageSet)
	err := w.walk(1, p1, schemaObject, true, visited, func(pg *btreePage, i int) error {
		if !pg.table() {
			w.corrupt(pg.pgno, "sqlite_schema page is not a table b-tree page")
			return nil
		}
		total, local, overflow, err := pg.payload(i)
		if err != nil {
			w.noteCorrupt(err)
			return nil
		}
		rec := append([]byte(nil), local...)
		if overflow != 0 {
			if err := w.overflow(pg.pgno, overflow, total-uint64(len(local)), schemaObject, visited, &rec); err != nil {
				return err
			}
		}
		row, err := decodeSchemaRow(rec, w.enc)
		if err != nil {
			w.corrupt(pg.pgno, fmt.Sprintf("schema cell %d: %v", i, err))
			return nil
		}
		switch {
		case row.rootPage == 0: // views, triggers, virtual tables
		case row.rootPage < 2 || row.rootPage > int64(w.pageCount):
			w.corrupt(pg.pgno, fmt.Sprintf("schema cell %d: root page %d", i, row.rootPage))
		default:
			rows = append(rows, namedRoot{uint32(row.rootPage), Object{Type: row.typ, Name: row.name, Table: row.tblName}})
		}
		return nil
	})
	return rows, err
}

// tree walks one b-tree listed in sqlite_schema.
func (w *walker) tree(r namedRoot, full bool, visited pageSet) error {
	if !visited.add(r.root) {
		w.corrupt(r.root, fmt.Sprintf("root of %s is already part of another b-tree", r.obj))
		return nil
	}
	w.name(r.root, r.obj)
	data, err := w.page(r.root)
	if err != nil || data == nil {
		return err
	}
	return w.walk(r.root, data, r.obj, full, visited, nil)
}

// stackEntry is a page waiting in walk's stack; data is set when the page
// was already read.
type stackEntry struct {
	pgno uint32
	data []byte
}

// walk walks the b-tree rooted at root (already read, in visited and named),
// naming its pages o. With full, it reads every page and follows the
// overflow chains of cells, calling cell (when non-nil) for every leaf cell;
// without, it reads interior pages only.
func (w *walker) walk(root uint32, data []byte, o Object, full bool, visited pageSet, cell func(*btreePage, int) error) error {
	w.name(root, o)
	table := true
	stack := []stackEntry{{root, data}}
	for len(stack) > 0 && len(w.want) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if e.data == nil {
			var err error
			if e.data, err = w.page(e.pgno); err != nil {
				return err
			}
			if e.data == nil {
				continue
			}
		}
		pg, err := parsePage(e.pgno, e.data, w.usable)
		if err != nil {
			w.noteCorrupt(err)
			continue
		}
		if e.pgno == root {
			table = pg.table()
		} else if pg.table() != table {
			w.corrupt(e.pgno, fmt.Sprintf("page type 0x%02x in a b-tree rooted at page %d", pg.kind, root))
			continue
		}
		if full {
			if err := w.cellOverflows(pg, o, visited, cell); err != nil {
				return err
			}
		}
		if pg.leaf() {
			continue
		}
		kids, err := pg.children()
		if err != nil {
			w.noteCorrupt(err)
			continue
		}
		var first []byte
		if !full && kids[0] >= 2 && kids[0] <= w.pageCount {
			// Read the first child to learn whether this page is just
			// above the leaves.
			if first, err = w.page(kids[0]); err != nil {
				return err
			}
		}
		leaves := first != nil && (first[0] == tableLeaf || first[0] == indexLeaf)
		for i, k := range kids {
			if k < 2 || k > w.pageCount {
				w.corrupt(pg.pgno, fmt.Sprintf("child page %d out of range 2..%d", k, w.pageCount))
				continue
			}
			if !visited.add(k) {
				w.corrupt(pg.pgno, fmt.Sprintf("child page %d reached twice", k))
				continue
			}
			w.name(k, o)
			switch {
			case leaves:
			case i == 0 && first != nil:
				stack = append(stack, stackEntry{k, first})
			default:
				stack = append(stack, stackEntry{k, nil})
			}
		}
	}
	return nil
}

// cellOverflows follows the overflow chains of pg's cells, naming their
// pages o, and calls cell for each leaf cell.
func (w *walker) cellOverflows(pg *btreePage, o Object, visited pageSet, cell func(*btreePage, int) error) error {
	if pg.kind == tableInterior {
		return nil
	}
	for i := 0; i < pg.ncells; i++ {
		if cell != nil && pg.leaf() {
			if err := cell(pg, i); err != nil {
				return err
			}
			continue
		}
		total, local, overflow, err := pg.payload(i)
		if err != nil {
			w.noteCorrupt(err)
			return nil
		}
		if overflow != 0 {
			if err := w.overflow(pg.pgno, overflow, total-uint64(len(local)), o, visited, nil); err != nil {
				return err
			}
		}
		if len(w.want) == 0 {
			return nil
		}
	}
	return nil
}

// overflow follows an overflow chain of left bytes starting at page first,
// found on page from, naming its pages o. When rec is non-nil the chain's
// content is appended to it, up to maxSchemaRecord bytes in all.
func (w *walker) overflow(from, first uint32, left uint64, o Object, visited pageSet, rec *[]byte) error {
	per := uint64(w.usable - 4)
	for p := first; left > 0; {
		if p < 2 || p > w.pageCount {
			w.corrupt(from, fmt.Sprintf("overflow page %d out of range 2..%d", p, w.pageCount))
			return nil
		}
		if !visited.add(p) {
			w.corrupt(from, fmt.Sprintf("overflow page %d reached twice", p))
			return nil
		}
		w.name(p, o)
		take := min(left, per)
		// The last page's next pointer is unused; once every page is
		// named, the rest of the chain only matters for its bytes.
		needBytes := rec != nil && len(*rec) < maxSchemaRecord
		if !needBytes && (take == left || len(w.want) == 0) {
			return nil
		}
		data, err := w.page(p)
		if err != nil || data == nil {
			return err
		}
		if needBytes {
			n := min(int(take), maxSchemaRecord-len(*rec))
			*rec = append(*rec, data[4:4+n]...)
		}
		from, p, left = p, binary.BigEndian.Uint32(data), left-take
	}
	return nil
}

// isPtrmap reports whether p is a pointer-map page of an auto-vacuum
// database, as SQLite's ptrmapPageno computes them: page 2, then every
// usable/5+1 pages, skipping the page holding the lock byte at 2^30.
func (w *walker) isPtrmap(p uint32) bool {
	if p < 2 {
		return false
	}
	per := uint32(w.usable/5 + 1)
	pending := uint32(0x40000000/w.pageSize + 1)
	pm := (p-2)/per*per + 2
	if pm == pending {
		pm++
	}
	return pm == p
}

// freelist walks the freelist trunk chain from the header (bytes 32–39),
// naming trunk and leaf pages.
func (w *walker) freelist(p1 []byte) error {
	visited := make(pageSet)
	o := Object{Type: "freelist"}
	from := uint32(1)
	for p := binary.BigEndian.Uint32(p1[hdrFreelistTrunk:]); p != 0 && len(w.want) > 0; {
		if p < 2 || p > w.pageCount {
			w.corrupt(from, fmt.Sprintf("freelist trunk page %d out of range 2..%d", p, w.pageCount))
			return nil
		}
		if !visited.add(p) {
			w.corrupt(from, fmt.Sprintf("freelist trunk page %d reached twice", p))
			return nil
		}
		w.name(p, o)
		data, err := w.page(p)
		if err != nil || data == nil {
			return err
		}
		n := binary.BigEndian.Uint32(data[4:])
		if uint64(n) > uint64(w.usable/4-2) {
			w.corrupt(p, fmt.Sprintf("freelist trunk lists %d leaves", n))
			return nil
		}
		for i := uint32(0); i < n; i++ {
			w.name(binary.BigEndian.Uint32(data[8+4*i:]), o)
		}
		from, p = p, binary.BigEndian.Uint32(data)
	}
	return nil
}
