package conflict

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/vfs"
)

// Seeds are checked in under testdata/fuzz/<FuzzName>/; they are real
// SQLite databases and page 1s of 512-byte pages. Regenerate them with
//
//	go test ./conflict/ -run TestFuzzSeeds -args -write-seeds
var writeSeeds = flag.Bool("write-seeds", false, "rewrite the fuzz seeds in testdata/fuzz")

const fuzzPageSize = 512

// FuzzNameTables feeds NameTables arbitrary database images: it must name
// pages or report ErrCorrupt, never panic, and read a bounded number of
// pages whatever the cycles in the image.
func FuzzNameTables(f *testing.F) {
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) == 0 || len(img) > 256*fuzzPageSize {
			return
		}
		img = resize(img, (len(img)+fuzzPageSize-1)/fuzzPageSize*fuzzPageSize)
		count := uint32(len(img) / fuzzPageSize)
		reads := 0
		names, err := NameTables(t.Context(), reader(img, fuzzPageSize, &reads), fuzzPageSize, count, allPages(count))
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err=%v, want nil or ErrCorrupt", err)
		}
		if reads > 5*int(count)+1 {
			t.Fatalf("%d reads for %d pages", reads, count)
		}
		for p, o := range names {
			if p < 1 || p > count {
				t.Fatalf("named page %d of %d", p, count)
			}
			if s := o.String(); len(s) > 1024 || strings.Contains(s, "\n") {
				t.Fatalf("Object.String()=%q", s)
			}
		}
	})
}

// FuzzDetect feeds Detect arbitrary page 1s, counts and page sets, and
// checks the Report's invariants.
func FuzzDetect(f *testing.F) {
	f.Fuzz(func(t *testing.T, base, head, client []byte, baseCount, headCount, clientCount uint32, changed, reads, written []byte) {
		nilIfEmpty := func(b []byte) []byte {
			if len(b) == 0 {
				return nil
			}
			return b
		}
		in := Input{Base: 1, Head: 9, BaseCount: baseCount, HeadCount: headCount, ClientCount: clientCount,
			BasePage1: nilIfEmpty(base), HeadPage1: nilIfEmpty(head), ClientPage1: nilIfEmpty(client)}
		for i := 0; i+4 <= len(changed); i += 4 {
			in.Changed = append(in.Changed, Change{binary.BigEndian.Uint32(changed[i:]), int64(2 + i%7)})
		}
		for i := 0; i+8 <= len(reads); i += 8 {
			in.ReadSet = append(in.ReadSet, Range{binary.BigEndian.Uint32(reads[i:]), binary.BigEndian.Uint32(reads[i+4:])})
		}
		for i := 0; i+4 <= len(written); i += 4 {
			in.Written = append(in.Written, binary.BigEndian.Uint32(written[i:]))
		}
		r := Detect(in)
		if got, want := r.Mergeable(), !r.Page1.Conflicts() && r.ConflictCount == 0; got != want {
			t.Fatalf("Mergeable()=%v with Page1 %v and %d conflicts", got, r.Page1, r.ConflictCount)
		}
		if len(r.Conflicts) > MaxListed || uint64(len(r.Conflicts)) > r.ConflictCount {
			t.Fatalf("%d conflicts listed of %d", len(r.Conflicts), r.ConflictCount)
		}
		for i, c := range r.Conflicts {
			if c.Page <= 1 || i > 0 && r.Conflicts[i-1].Page >= c.Page || c.Cause == 0 {
				t.Fatalf("Conflicts=%+v", r.Conflicts)
			}
		}
		if s := r.Reason(); len(s) > 2048 || strings.Contains(s, "\n") {
			t.Fatalf("Reason()=%q", s)
		}
		if m := r.Merge; m != nil {
			size := len(base) + len(head) + len(client)
			if len(m.Page1) < minPageSize || size%len(m.Page1) != 0 {
				t.Fatalf("Merge.Page1 is %d bytes", len(m.Page1))
			}
			if got := binary.BigEndian.Uint32(m.Page1[hdrPageCount:]); got != m.PageCount || got == 0 {
				t.Fatalf("Merge.Page1 says %d pages, Merge.PageCount %d", got, m.PageCount)
			}
			var headCounter uint32
			if in.HeadPage1 != nil {
				headCounter = binary.BigEndian.Uint32(in.HeadPage1[hdrChangeCounter:])
			}
			if binary.BigEndian.Uint32(m.Page1[hdrChangeCounter:]) != headCounter+1 || binary.BigEndian.Uint32(m.Page1[hdrVersionValid:]) != headCounter+1 {
				t.Fatal("Merge.Page1 counters are not head's + 1")
			}
			for _, p := range in.Written {
				if p > m.PageCount {
					t.Fatalf("written page %d beyond Merge.PageCount %d", p, m.PageCount)
				}
			}
		}
	})
}

// TestFuzzSeeds checks that the checked-in seeds of FuzzNameTables and
// FuzzDetect are there and in the fuzzing corpus format; with -write-seeds
// it rewrites them from real SQLite databases.
func TestFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		for _, target := range []string{"FuzzNameTables", "FuzzDetect"} {
			dir := filepath.Join("testdata", "fuzz", target)
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) == 0 {
				t.Fatalf("%s: %d seeds, %v; want the checked-in seeds (regenerate with -write-seeds)", dir, len(entries), err)
			}
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil || !strings.HasPrefix(string(b), "go test fuzz v1\n") {
					t.Fatalf("seed %s/%s is not a fuzz corpus file: %v", dir, e.Name(), err)
				}
			}
		}
		return
	}
	small := func(setup []string, stmts ...string) *volume {
		v := newVolume(t)
		v.pageSize = fuzzPageSize
		if len(setup) > 0 && strings.Contains(setup[0], "auto_vacuum") {
			v.fastPath(v.autocommit(0, setup...)) // it writes page 1
			setup = nil
		}
		v.fastPath(v.txAfter(v.head(), setup, stmts...))
		return v
	}
	long := make([]string, 60)
	for i := range long {
		long[i] = fmt.Sprintf("column_%02d TEXT", i)
	}
	dbs := map[string]*volume{
		"tables": small(nil,
			"CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT)",
			"CREATE INDEX t_k ON t(k)",
			"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<40) INSERT INTO t SELECT i, printf('%040d', i) FROM s",
		),
		"overflow": small(nil,
			"CREATE TABLE wide("+strings.Join(long, ", ")+")",
			"CREATE TABLE b(x)",
			"INSERT INTO b VALUES(zeroblob(2000))",
			"CREATE INDEX b_x ON b(x)",
		),
		"autovacuum": small([]string{"PRAGMA auto_vacuum = FULL"},
			"CREATE TABLE t(x)",
			"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<30) INSERT INTO t SELECT zeroblob(100) FROM s",
		),
		"utf16": small([]string{"PRAGMA encoding = 'UTF-16be'"},
			"CREATE TABLE \"ü\"(x)",
			"INSERT INTO \"ü\" VALUES('ä')",
		),
	}
	freelist := small(nil, "CREATE TABLE t(x)", "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<30) INSERT INTO t SELECT zeroblob(200) FROM s")
	freelist.fastPath(freelist.tx(freelist.head(), "DELETE FROM t WHERE rowid > 3"))
	dbs["freelist"] = freelist
	for name, v := range dbs {
		img, count := v.images[v.head()], v.count(v.head())
		names, err := NameTables(t.Context(), reader(img, fuzzPageSize, nil), fuzzPageSize, count, allPages(count))
		if err != nil || len(names) != int(count) {
			t.Fatalf("%s: %d of %d pages named, err %v", name, len(names), count, err)
		}
		writeSeed(t, "FuzzNameTables", name, img)
	}

	v := dbs["tables"]
	grew := v.tx(1, "WITH RECURSIVE s(i) AS (SELECT 100 UNION ALL SELECT i+1 FROM s WHERE i<120) INSERT INTO t SELECT i, 'x' FROM s")
	inplace := v.tx(1, "UPDATE t SET k = 'y' WHERE id = 1")
	v.fastPath(v.tx(1, "UPDATE t SET k = 'z' WHERE id = 40"))
	for name, c := range map[string]*vfs.Capture{"grew": grew, "inplace": inplace} {
		in := v.input(1, c)
		var changed, reads, written []byte
		for _, c := range in.Changed {
			changed = binary.BigEndian.AppendUint32(changed, c.Page)
		}
		for _, r := range in.ReadSet {
			reads = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(reads, r.First), r.Count)
		}
		for _, p := range in.Written {
			written = binary.BigEndian.AppendUint32(written, p)
		}
		writeSeed(t, "FuzzDetect", name, in.BasePage1, in.HeadPage1, in.ClientPage1,
			in.BaseCount, in.HeadCount, in.ClientCount, changed, reads, written)
	}
}

// writeSeed writes one seed in the format of the go command's fuzz corpus.
func writeSeed(t *testing.T, fuzz, name string, values ...any) {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", v)
		default:
			t.Fatalf("seed value %T", v)
		}
	}
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
