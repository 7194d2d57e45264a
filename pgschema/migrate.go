package pgschema

import (
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
)

// Migration is one schema change, applied once, in version order, in its own
// transaction, and recorded in the schema_migrations table. Released
// migrations are never edited: a change of schema is a new migration.
type Migration struct {
	Version int    // 1, 2, 3, ... with no gaps
	Name    string // from the file name, for the record
	SQL     string
}

var migrationFileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// LoadMigrations reads the migrations in the root of fsys, named
// NNNN_name.sql, and checks that they are numbered 1, 2, 3, ... with no gap.
// Backends embed their own directory of SQL in their dialect.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := migrationFileRE.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			continue
		}
		v, _ := strconv.Atoi(m[1])
		sql, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(sql)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations: want version %d, found %04d_%s", i+1, m.Version, m.Name)
		}
	}
	return ms, nil
}

// PendingMigrations returns the migrations after version applied, the highest
// one the database records. A database ahead of this binary is a
// *SchemaTooNewError.
func PendingMigrations(all []Migration, applied int) ([]Migration, error) {
	if applied > len(all) {
		return nil, &SchemaTooNewError{Applied: applied, Known: len(all)}
	}
	return all[applied:], nil
}
