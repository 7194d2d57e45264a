package conflict

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// accountsVolume is a volume at v1 with a table accounts of 400 rows (a
// two-level b-tree), an index on its 100-byte k column (several leaves), a
// table blobs with a row that overflows, and a table other.
func accountsVolume(t *testing.T) *volume {
	t.Helper()
	v := newVolume(t)
	v.fastPath(v.tx(0,
		"CREATE TABLE accounts(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, k TEXT, pad BLOB)",
		"CREATE INDEX accounts_k ON accounts(k)",
		"CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)",
		"CREATE TABLE other(x)",
		"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<400) INSERT INTO accounts SELECT i, 0, printf('%0100d', i), zeroblob(200) FROM s",
		"INSERT INTO blobs VALUES(1, zeroblob(20000))",
		"INSERT INTO other VALUES(1)",
	))
	return v
}

func TestNameTables(t *testing.T) {
	v := accountsVolume(t)
	img, count := v.images[1], v.count(1)
	tableAccounts := Object{Type: "table", Name: "accounts", Table: "accounts"}
	indexK := Object{Type: "index", Name: "accounts_k", Table: "accounts"}

	t.Run("Leaf", func(t *testing.T) {
		leaf := others(v.tx(1, "UPDATE accounts SET n = 1 WHERE id = 350"))
		if len(leaf) != 1 {
			t.Fatalf("setup: the update wrote %v, want one leaf", leaf)
		}
		reads := 0
		names, err := NameTables(t.Context(), reader(img, testPageSize, &reads), testPageSize, count, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if got := names[leaf[0]]; got != tableAccounts {
			t.Fatalf("page %d named %v, want %v", leaf[0], got, tableAccounts)
		}
		// Leaves are named from their parent, not read.
		if reads*4 > int(count) {
			t.Fatalf("%d reads to name one leaf of a %d-page database", reads, count)
		}
	})
	t.Run("Index", func(t *testing.T) {
		leaf := others(v.tx(1, "UPDATE accounts SET n = 1 WHERE id = 350"))
		pages := others(v.tx(1, "UPDATE accounts SET k = 'changed' WHERE id = 350"), leaf...)
		if len(pages) == 0 {
			t.Fatal("setup: updating k wrote no index page")
		}
		names, err := NameTables(t.Context(), reader(img, testPageSize, nil), testPageSize, count, pages)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pages {
			if names[p] != indexK {
				t.Fatalf("page %d named %v, want %v", p, names[p], indexK)
			}
		}
	})
	t.Run("Overflow", func(t *testing.T) {
		v := newVolume(t)
		v.fastPath(v.tx(0, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)", "CREATE TABLE other(x)"))
		c := v.tx(1, "INSERT INTO blobs VALUES(1, zeroblob(20000))")
		v.fastPath(c)
		pages := others(c) // the leaf and its overflow chain
		if len(pages) < 5 {
			t.Fatalf("setup: the insert wrote %v, want the leaf and its overflow pages", pages)
		}
		reads := 0
		names, err := NameTables(t.Context(), reader(v.images[2], testPageSize, &reads), testPageSize, v.count(2), pages)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pages {
			if want := (Object{Type: "table", Name: "blobs", Table: "blobs"}); names[p] != want {
				t.Fatalf("page %d named %v, want %v", p, names[p], want)
			}
		}
		// The full walk stops at the chain's last page without reading it.
		if reads > int(v.count(2)) {
			t.Fatalf("%d reads for %d pages", reads, v.count(2))
		}
	})
	t.Run("Roots", func(t *testing.T) {
		db := v.open(1)
		rows, err := db.Query("SELECT type, name, tbl_name, rootpage FROM sqlite_schema WHERE rootpage > 0")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		want := map[uint32]Object{}
		for rows.Next() {
			var o Object
			var root uint32
			if err := rows.Scan(&o.Type, &o.Name, &o.Table, &root); err != nil {
				t.Fatal(err)
			}
			want[root] = o
		}
		names, err := NameTables(t.Context(), reader(img, testPageSize, nil), testPageSize, count, keys(want))
		if err != nil {
			t.Fatal(err)
		}
		for p, o := range want {
			if names[p] != o {
				t.Fatalf("root page %d named %v, want %v", p, names[p], o)
			}
		}
	})
}

func keys[V any](m map[uint32]V) []uint32 {
	var out []uint32
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// allPages is 1..n.
func allPages(n uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i + 1)
	}
	return out
}

// TestNameTables_EveryPage checks that in healthy databases every page has
// an owner, and that the freelist is what SQLite counts.
func TestNameTables_EveryPage(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup string // run before the tables, in a commit of its own if it writes
	}{
		{"Default", ""},
		{"AutoVacuum", "PRAGMA auto_vacuum = FULL"},
		{"IncrementalVacuum", "PRAGMA auto_vacuum = INCREMENTAL"},
		{"UTF16le", "PRAGMA encoding = 'UTF-16le'"},
		{"UTF16be", "PRAGMA encoding = 'UTF-16be'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newVolume(t)
			var setup []string
			if strings.Contains(c.setup, "auto_vacuum") {
				v.fastPath(v.autocommit(0, c.setup))
			} else if c.setup != "" {
				setup = []string{c.setup}
			}
			v.fastPath(v.txAfter(v.head(), setup,
				"CREATE TABLE accounts(id INTEGER PRIMARY KEY, k TEXT, pad BLOB)",
				"CREATE INDEX accounts_k ON accounts(k)",
				"CREATE TABLE \"dépôt ü\"(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
				"CREATE VIEW va AS SELECT * FROM accounts",
				"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<300) INSERT INTO accounts SELECT i, printf('%0900d', i), zeroblob(100 + 30*i) FROM s",
				"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<50) INSERT INTO \"dépôt ü\" SELECT printf('%02000d', i), i FROM s",
			))
			v.fastPath(v.tx(v.head(), "DELETE FROM accounts WHERE id % 3 = 0"))
			ver := v.head()
			db := v.open(ver)
			img, count := v.images[ver], v.count(ver)
			names, err := NameTables(t.Context(), reader(img, testPageSize, nil), testPageSize, count, allPages(count))
			if err != nil {
				t.Fatal(err)
			}
			byType := map[string]int{}
			for _, p := range allPages(count) {
				o, ok := names[p]
				if !ok {
					t.Fatalf("page %d of %d has no owner", p, count)
				}
				byType[o.String()]++
			}
			if got, want := byType["freelist"], int(queryInt(t, db, "PRAGMA freelist_count")); got != want {
				t.Fatalf("%d freelist pages, PRAGMA freelist_count=%d (%v)", got, want, byType)
			}
			if byType[`table "dépôt ü"`] == 0 || byType["index accounts_k on accounts"] == 0 {
				t.Fatalf("owners %v", byType)
			}
			if auto := c.name == "AutoVacuum" || c.name == "IncrementalVacuum"; auto != (byType["pointer map"] > 0) {
				t.Fatalf("owners %v", byType)
			}
		})
	}
}

func TestNameTables_Corrupt(t *testing.T) {
	v := accountsVolume(t)
	img, count := v.images[1], v.count(1)
	root := uint32(queryInt(t, v.open(1), "SELECT rootpage FROM sqlite_schema WHERE name = 'accounts'"))
	leafOfOther := uint32(queryInt(t, v.open(1), "SELECT rootpage FROM sqlite_schema WHERE name = 'other'"))
	patched := func(pgno uint32, off int, b ...byte) []byte {
		out := slices.Clone(img)
		copy(out[int(pgno-1)*testPageSize+off:], b)
		return out
	}
	be32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	for _, c := range []struct {
		name string
		img  []byte
	}{
		{"NoHeader", patched(1, 0, 'X')},
		{"PageSize", patched(1, hdrPageSize, 0x20, 0)},
		{"Reserved", patched(1, hdrReserved, 255)},
		{"SchemaPageType", patched(1, hdrSize, 0x07)},
		{"SchemaCellCount", patched(1, hdrSize+3, 0xff, 0xff)},
		{"SelfCycle", patched(root, 8, be32(root)...)},
		{"FirstChildCycle", func() []byte {
			off := int(binary.BigEndian.Uint16(img[int(root-1)*testPageSize+12:]))
			return patched(root, off, be32(root)...)
		}()},
		{"SharedLeaf", patched(root, 8, be32(leafOfOther)...)},
		{"ChildOutOfRange", patched(root, 8, be32(count+1)...)},
		{"ChildZero", patched(root, 8, 0, 0, 0, 0)},
		{"RootPageType", patched(root, 0, 0x0a)},
		{"FreelistLoop", func() []byte {
			out := patched(1, hdrFreelistTrunk, be32(leafOfOther)...)
			copy(out[int(leafOfOther-1)*testPageSize:], be32(leafOfOther))
			return out
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			reads := 0
			names, err := NameTables(t.Context(), reader(c.img, testPageSize, &reads), testPageSize, count, allPages(count))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err=%v, want ErrCorrupt", err)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Page == 0 {
				t.Fatalf("err=%#v, want a *CorruptError naming a page", err)
			}
			if names == nil {
				t.Fatal("nil names with a corrupt database: want what could be named")
			}
			if reads > 5*int(count)+1 {
				t.Fatalf("%d reads for %d pages", reads, count)
			}
		})
	}
	t.Run("ShortPage", func(t *testing.T) {
		read := func(ctx context.Context, pgno uint32) ([]byte, error) { return img[:100], nil }
		if _, err := NameTables(t.Context(), read, testPageSize, count, []uint32{2}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err=%v, want ErrCorrupt", err)
		}
	})
	t.Run("ReadError", func(t *testing.T) {
		boom := errors.New("boom")
		read := func(ctx context.Context, pgno uint32) ([]byte, error) { return nil, boom }
		names, err := NameTables(t.Context(), read, testPageSize, count, []uint32{2})
		if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) || names != nil {
			t.Fatalf("names=%v, err=%v, want nil, boom", names, err)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := NameTables(ctx, reader(img, testPageSize, nil), testPageSize, count, []uint32{2}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err=%v, want context.Canceled", err)
		}
	})
	t.Run("BadPageSize", func(t *testing.T) {
		if _, err := NameTables(t.Context(), reader(img, testPageSize, nil), 1000, count, []uint32{2}); err == nil {
			t.Fatal("page size 1000 accepted")
		}
	})
	t.Run("Mutations", func(t *testing.T) {
		// Random byte changes in a real database: never a panic or an
		// unbounded walk, only names or ErrCorrupt.
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 2000; i++ {
			m := slices.Clone(img)
			for j := 0; j < 1+rng.IntN(8); j++ {
				p := rng.IntN(int(count))
				var off int
				switch rng.IntN(3) {
				case 0: // page headers and cell pointers
					off = rng.IntN(24)
					if p == 0 {
						off += hdrSize
					}
				case 1: // the database header
					p, off = 0, rng.IntN(hdrSize)
				default:
					off = rng.IntN(testPageSize)
				}
				m[p*testPageSize+off] = byte(rng.Uint32())
			}
			reads := 0
			_, err := NameTables(t.Context(), reader(m, testPageSize, &reads), testPageSize, count, allPages(count))
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("mutation %d: %v", i, err)
			}
			if reads > 5*int(count)+1 {
				t.Fatalf("mutation %d: %d reads for %d pages", i, reads, count)
			}
		}
	})
}

func TestReport_NameTables(t *testing.T) {
	v := accountsVolume(t)
	a := v.tx(1, "UPDATE accounts SET k = 'a' WHERE id = 10")
	b := v.tx(1, "UPDATE accounts SET k = 'b' WHERE id = 10")
	v.push(1, a)
	r := v.push(1, b)
	if r.Mergeable() {
		t.Fatal("setup: merged")
	}
	if err := r.NameTables(t.Context(), reader(v.images[2], testPageSize, nil), testPageSize, v.count(2)); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range r.Conflicts {
		seen[c.Object.String()] = true
	}
	if !seen["table accounts"] || !seen["index accounts_k on accounts"] || len(seen) != 2 {
		t.Fatalf("conflicts named %v", seen)
	}
	if !strings.Contains(r.Reason(), "(index accounts_k on accounts) written by v2, read and written by this commit") {
		t.Fatalf("Reason()=%q", r.Reason())
	}
}
