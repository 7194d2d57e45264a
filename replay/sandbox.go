package replay

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// sandbox is the authorizer of one replay connection
// (https://www.sqlite.org/c3ref/set_authorizer.html). While active — from
// the engine's BEGIN to its COMMIT, i.e. while the record runs — it denies:
//   - ATTACH and DETACH, always;
//   - BEGIN, COMMIT and ROLLBACK (the replay owns the one transaction;
//     SAVEPOINT, RELEASE and ROLLBACK TO stay allowed);
//   - load_extension() and fts3_tokenizer(), always;
//   - every PRAGMA off pragmaAlwaysRead, and of pragmaRead when given a
//     value (user_version and application_id may be set when DDL is
//     allowed, defer_foreign_keys always: it only lasts the transaction);
//   - when DDL is not allowed, every change to the main schema: CREATE,
//     DROP and ALTER of tables, indexes, views, triggers and virtual
//     tables, and ANALYZE (it creates sqlite_stat1). TEMP objects are
//     private to the connection and stay allowed. Other writes to
//     sqlite_schema need writable_schema, which is denied, so SQLite
//     refuses them itself.
//
// The authorizer runs when a statement is prepared, so the connection
// must not reuse statements prepared while it was inactive for the
// record's SQL: replay connections have no statement cache.
type sandbox struct {
	allowDDL bool
	active   atomic.Bool

	mu     sync.Mutex
	denied string // the first denial, for the RejectError's reason
}

// pragmaAlwaysRead lists pragmas that never change anything, whatever
// their argument (a table or index name).
var pragmaAlwaysRead = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true,
	"index_list": true, "index_info": true, "index_xinfo": true,
	"foreign_key_list": true, "foreign_key_check": true,
	"integrity_check": true, "quick_check": true,
	"collation_list": true, "function_list": true, "module_list": true, "pragma_list": true,
	"database_list": true, "compile_options": true,
}

// pragmaRead lists pragmas that may be read (no argument) but not set.
var pragmaRead = map[string]bool{
	"user_version": true, "application_id": true, "schema_version": true, "data_version": true,
	"page_count": true, "page_size": true, "freelist_count": true, "max_page_count": true,
	"encoding": true, "auto_vacuum": true, "foreign_keys": true, "defer_foreign_keys": true,
	"recursive_triggers": true, "case_sensitive_like": true, "journal_mode": true,
	"cache_size": true, "temp_store": true, "trusted_schema": true, "secure_delete": true,
}

// schemaOps are the authorizer actions that change the main schema.
var schemaOps = map[int]string{
	sqlite3.SQLITE_CREATE_INDEX:   "CREATE INDEX",
	sqlite3.SQLITE_CREATE_TABLE:   "CREATE TABLE",
	sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
	sqlite3.SQLITE_CREATE_VIEW:    "CREATE VIEW",
	sqlite3.SQLITE_CREATE_VTABLE:  "CREATE VIRTUAL TABLE",
	sqlite3.SQLITE_DROP_INDEX:     "DROP INDEX",
	sqlite3.SQLITE_DROP_TABLE:     "DROP TABLE",
	sqlite3.SQLITE_DROP_TRIGGER:   "DROP TRIGGER",
	sqlite3.SQLITE_DROP_VIEW:      "DROP VIEW",
	sqlite3.SQLITE_DROP_VTABLE:    "DROP VIRTUAL TABLE",
	sqlite3.SQLITE_ALTER_TABLE:    "ALTER TABLE",
	sqlite3.SQLITE_ANALYZE:        "ANALYZE",
}

// deniedFuncs are SQL functions no record may call.
var deniedFuncs = map[string]bool{"load_extension": true, "fts3_tokenizer": true}

// authorize is the authorizer callback: arg1 and arg2 depend on op, db is
// the schema name ("main", "temp").
func (s *sandbox) authorize(op int, arg1, arg2, db string) int {
	if !s.active.Load() {
		return sqlite3.SQLITE_OK
	}
	if why := s.check(op, arg1, arg2, db); why != "" {
		s.mu.Lock()
		if s.denied == "" {
			s.denied = why
		}
		s.mu.Unlock()
		return sqlite3.SQLITE_DENY
	}
	return sqlite3.SQLITE_OK
}

// check returns why op is denied, or "".
func (s *sandbox) check(op int, arg1, arg2, db string) string {
	switch op {
	case sqlite3.SQLITE_ATTACH:
		return "ATTACH is not allowed in replay"
	case sqlite3.SQLITE_DETACH:
		return "DETACH is not allowed in replay"
	case sqlite3.SQLITE_TRANSACTION:
		return fmt.Sprintf("%s is not allowed in replay: the record runs in one transaction", arg1)
	case sqlite3.SQLITE_FUNCTION:
		if deniedFuncs[strings.ToLower(arg2)] {
			return fmt.Sprintf("function %s() is not allowed in replay", arg2)
		}
	case sqlite3.SQLITE_PRAGMA:
		name := strings.ToLower(arg1)
		switch {
		case pragmaAlwaysRead[name]:
		case pragmaRead[name] && arg2 == "":
		case name == "defer_foreign_keys":
		case (name == "user_version" || name == "application_id") && s.allowDDL:
		default:
			if arg2 != "" {
				return fmt.Sprintf("PRAGMA %s=%s is not allowed in replay", arg1, arg2)
			}
			return fmt.Sprintf("PRAGMA %s is not allowed in replay", arg1)
		}
	default:
		if what, ok := schemaOps[op]; ok && !s.allowDDL && db != "temp" {
			return fmt.Sprintf("%s is not allowed: the volume does not allow schema changes", what)
		}
	}
	return ""
}

// deniedReason returns the first denial, or "".
func (s *sandbox) deniedReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied
}
