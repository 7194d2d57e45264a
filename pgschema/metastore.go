// Package pgschema owns Cambium's metadata: the Metastore contract (volumes,
// the commit log with each commit's decision, the page index), its types and
// typed errors, and the schema-migration rules its implementations follow.
//
// Implementations: pgschema/pgstore (PostgreSQL, the production backend) and
// pgschema/sqlitestore (an embedded SQLite file, the no-service default). Both
// pass the same conformance suite, pgschema/metastoretest.
//
// It stores no page bytes: a page index row points at a pages.Location in a
// segment that a pages.Store holds. The durability order that keeps invariant 4
// (no metadata points at a missing page) is the caller's: upload the segment,
// then Append the commit that references it.
package pgschema

import (
	"context"
	"time"

	"github.com/cambiumdb/cambium/pages"
)

// Metastore is the authoritative, linear history of every volume. All methods
// are safe for concurrent use, including from several processes sharing one
// database (PostgreSQL); per-volume serialization is the volume row's lock,
// taken by Tx.LockVolume or Tx.LockVolumes.
type Metastore interface {
	// CreateVolume creates an empty volume (head 0, page count 0, policy
	// DefaultPolicy). A taken name is ErrVolumeExists; a bad name or page size
	// is an *InvalidError.
	CreateVolume(ctx context.Context, name string, pageSize int) (Volume, error)

	// Volume returns the volume named name, or ErrVolumeNotFound.
	Volume(ctx context.Context, name string) (Volume, error)

	// VolumeByID returns the volume with the given id, or ErrVolumeNotFound.
	VolumeByID(ctx context.Context, id int64) (Volume, error)

	// Volumes returns every volume, ordered by name.
	Volumes(ctx context.Context) ([]Volume, error)

	// Update runs fn in one metadata transaction. It commits when fn returns
	// nil and rolls back otherwise, returning fn's error unchanged (so typed
	// errors survive). Row locks taken through Tx are held until it ends.
	// fn must not retain tx after it returns.
	Update(ctx context.Context, fn func(tx Tx) error) error

	// Commit returns the stored commit at version of volume, or
	// ErrCommitNotFound.
	Commit(ctx context.Context, volume, version int64) (Commit, error)

	// Commits returns the stored commits with from < version <= to, in
	// version order.
	Commits(ctx context.Context, volume, from, to int64) ([]Commit, error)

	// PageAt returns where page pageNo of snapshot (volume, version) lives:
	// the index row of the latest version <= version that wrote it. A page
	// never written at or before version, or beyond the snapshot's page
	// count, is ErrPageNotFound.
	PageAt(ctx context.Context, volume int64, pageNo uint32, version int64) (PageRef, error)

	// PagesAt is PageAt for many pages in one query. It returns one PageRef
	// per requested page that PageAt would find, in ascending page order;
	// pages PageAt would not find are left out.
	PagesAt(ctx context.Context, volume, version int64, pageNos []uint32) ([]PageRef, error)

	// ChangedPages returns, for the pages written by versions from < v <= to,
	// each page's newest location in that range once, in ascending page
	// order, leaving out pages beyond the page count at version to. It reads
	// the index only, never page bytes.
	ChangedPages(ctx context.Context, volume, from, to int64) ([]PageRef, error)

	// Configure changes a volume's conflict settings (policy, DDL on
	// replay) and returns the volume as changed. The change applies to
	// every commit decided after it. A bad policy is an *InvalidError;
	// a missing volume ErrVolumeNotFound.
	Configure(ctx context.Context, volume int64, s Settings) (Volume, error)

	// SetMutator stores the SQL-defined mutator name of volume, replacing
	// one of that name; empty sql deletes it (deleting a missing one is no
	// error). A bad name or sql is an *InvalidError; a missing volume
	// ErrVolumeNotFound.
	SetMutator(ctx context.Context, volume int64, name, sql string) error

	// Mutator returns volume's mutator name, or ErrMutatorNotFound.
	Mutator(ctx context.Context, volume int64, name string) (Mutator, error)

	// Mutators returns volume's mutators, ordered by name.
	Mutators(ctx context.Context, volume int64) ([]Mutator, error)

	// ClientCommits returns the stored commits of volume by clientID whose
	// sequence numbers are in [fromSeq, toSeq], in sequence order, without
	// their records: what a client that lost a push's response needs to
	// learn what became of its commits.
	ClientCommits(ctx context.Context, volume int64, clientID string, fromSeq, toSeq int64) ([]Commit, error)

	// CreateToken stores an access token. t.ID must be new (else
	// ErrTokenExists); t.Volume 0 means every volume, else the volume must
	// exist (else ErrVolumeNotFound); t.SecretHash must be 32 bytes (a
	// SHA-256) and t.ID 1-64 characters of [A-Za-z0-9_-] (else an
	// *InvalidError). CreatedAt is set by the store when zero. It returns
	// the token as stored.
	CreateToken(ctx context.Context, t Token) (Token, error)

	// Token returns the token with the given id, expired or not, or
	// ErrTokenNotFound.
	Token(ctx context.Context, id string) (Token, error)

	// Tokens returns every token, ordered by id.
	Tokens(ctx context.Context) ([]Token, error)

	// DeleteToken deletes the token with the given id, or returns
	// ErrTokenNotFound.
	DeleteToken(ctx context.Context, id string) error

	// Close releases the metastore's connections.
	Close() error
}

// Token is an access token as stored: only a hash of its secret is kept.
// It grants Read, Write and Admin on one volume, or on every volume when
// Volume is 0 (DESIGN.md, invariant 7).
type Token struct {
	ID         string // public: shown in lists and logs, part of the token string
	SecretHash []byte // SHA-256 of the secret
	Volume     int64  // 0: every volume
	Read       bool   // read pages, pull, see the volume
	Write      bool   // push commits
	Admin      bool   // settings and mutators; with Volume 0 also create volumes and manage tokens
	Note       string // what it is for, free text
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
}

// Tx is one metadata transaction, handed to the function given to
// Metastore.Update.
type Tx interface {
	// LockVolume locks the volume's row until the transaction ends and
	// returns it as of the lock (its head is current). Locking the same
	// volume twice in one transaction is allowed. Lock several volumes in
	// ascending id order to avoid deadlocks. ErrVolumeNotFound if missing.
	LockVolume(ctx context.Context, id int64) (Volume, error)

	// LockVolumes is LockVolume for several volumes in one query: it locks
	// the rows of ids in ascending id order, whatever order ids come in, so
	// concurrent callers cannot deadlock on them, and returns the volumes as
	// of the lock in ascending id order, each once (ids may repeat). Each
	// then counts as locked for Append and AppendAll exactly as after
	// LockVolume. If an id is missing it returns ErrVolumeNotFound and no
	// volume newly counts as locked (the rows it found may stay locked until
	// the transaction ends). No ids is no query and no volumes.
	LockVolumes(ctx context.Context, ids []int64) ([]Volume, error)

	// CommitBySeq returns the stored commit with idempotency key
	// (volume, clientID, seq), or ErrCommitNotFound.
	CommitBySeq(ctx context.Context, volume int64, clientID string, seq int64) (Commit, error)

	// LookupCommits is CommitBySeq for many keys in one query: it returns
	// the stored commits whose idempotency keys are among keys, each at most
	// once however often its key repeats, in no promised order. Keys with no
	// stored commit are left out; it is not an error. It sees the commits
	// this transaction appended. No keys is no query and no commits.
	LookupCommits(ctx context.Context, keys []CommitKey) ([]Commit, error)

	// ChangedPages is Metastore.ChangedPages inside this transaction.
	ChangedPages(ctx context.Context, volume, from, to int64) ([]PageRef, error)

	// Append stores c as the next version of its volume: the commit row, one
	// page-index row per page written, and the new head and page count. The
	// volume must be locked in this transaction (else ErrVolumeNotLocked) and
	// c.Version must be its head + 1 (else *StaleHeadError). A stored
	// idempotency key is ErrDuplicateCommit; an ill-formed commit is an
	// *InvalidError. Nothing is stored when it fails.
	Append(ctx context.Context, c NewCommit) error

	// AppendAll stores cs in order, each by the rules of Append and with the
	// error Append would return for the first commit that fails when called
	// for each in turn: each volume must be locked (else
	// ErrVolumeNotLocked); each c.Version must be its volume's head + 1,
	// counting the commits before it in cs (else *StaleHeadError); an
	// idempotency key stored already, or used by an earlier commit of cs,
	// is ErrDuplicateCommit; an ill-formed commit is an *InvalidError. It is
	// all or nothing: when it fails, nothing of cs is stored, and the
	// transaction is as usable as after a failed Append (after
	// ErrDuplicateCommit, *StaleHeadError, *InvalidError or
	// ErrVolumeNotLocked it may go on and commit). Each volume's head and
	// page count become those of its last commit in cs. The stored state is
	// the same as after Append of each in turn. No commits is a no-op.
	AppendAll(ctx context.Context, cs []NewCommit) error
}

// CommitKey is a commit's idempotency key: a client's sequence number on
// one volume.
type CommitKey struct {
	Volume   int64
	ClientID string
	Seq      int64
}

// Volume is one replicated SQLite database.
type Volume struct {
	ID        int64
	Name      string
	PageSize  int
	Head      int64  // latest version; 0 is the empty database
	PageCount uint32 // database size in pages at Head
	Policy    string // conflict policy; DefaultPolicy unless changed
	AllowDDL  bool   // replayed records may change the schema
	CreatedAt time.Time
}

// Conflict policies (DESIGN.md, the commit protocol): what the server may do
// with a commit whose base is stale.
const (
	PolicyReplay  = "replay"   // merge when nothing it touched changed, else replay its record
	PolicyStrict  = "strict"   // fast-path only: stale commits are rejected, as Graft does
	PolicyNoMerge = "no-merge" // never merge: stale commits are replayed
)

// DefaultPolicy is the conflict policy of a new volume: fast-path, merged,
// or replayed.
const DefaultPolicy = PolicyReplay

// Settings are a volume's conflict settings, changed with Configure.
type Settings struct {
	Policy   string // PolicyReplay, PolicyStrict or PolicyNoMerge
	AllowDDL bool   // replayed records may change the schema (CREATE, DROP, ALTER)
}

// Mutator is a named mutation defined in SQL for one volume: statements
// separated by ';' with :name parameters bound from the mutation's JSON
// arguments. Client and server run the same definition.
type Mutator struct {
	Volume    int64
	Name      string
	SQL       string
	UpdatedAt time.Time
}

// Decision says how a stored commit became a version (DESIGN.md). Rejected
// commits store nothing, so they have no Decision here.
type Decision string

const (
	FastPath Decision = "fast-path" // base was head: the client's pages as they were
	Merged   Decision = "merged"    // stale base, nothing read or written changed since
	Replayed Decision = "replayed"  // pages produced by replaying the logical record on head
)

// Valid reports whether d is one of the stored decisions.
func (d Decision) Valid() bool { return d == FastPath || d == Merged || d == Replayed }

// NewCommit is a commit to Append.
type NewCommit struct {
	Volume     int64
	Version    int64 // the version it becomes: the locked head + 1
	Base       int64 // the version the client's transaction started from, <= head
	ClientID   string
	ClientSeq  int64 // with Volume and ClientID, the idempotency key
	Decision   Decision
	Reason     string // why, in words, for merged and replayed commits
	PageCount  uint32 // database size in pages after this commit
	Pages      []PageWrite
	Record     []byte // the encoded logical record; may be empty
	Checksum   []byte // the client's checksum over the whole commit
	ReceivedAt time.Time
}

// PageWrite is one page a commit wrote and where its bytes were stored.
type PageWrite struct {
	PageNo uint32 // 1-based, <= the commit's PageCount
	pages.Location
}

// Commit is a stored commit, as the commit log has it.
type Commit struct {
	Volume     int64
	Version    int64
	Base       int64
	ClientID   string
	ClientSeq  int64
	Decision   Decision
	Reason     string
	PageCount  uint32
	PagesCount int // how many pages it wrote
	Record     []byte
	Checksum   []byte
	ReceivedAt time.Time
	CreatedAt  time.Time
}

// PageRef is one page-index row: page PageNo as written by Version, stored at
// Location.
type PageRef struct {
	PageNo  uint32
	Version int64
	pages.Location
}
