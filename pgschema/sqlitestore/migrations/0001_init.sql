-- 0001_init: Cambium's metadata schema in the SQLite dialect. It mirrors
-- pgstore's tables column for column so the two backends store the same facts.
--
-- Conventions: tables are STRICT, so a value of the wrong type is an error
-- rather than a silent conversion. Times are integer unix microseconds, UTC
-- (PostgreSQL's timestamptz precision). Page hashes are uint64 values stored
-- as int64 with the same bits. Segments are named once in `segments` and
-- referred to by integer id, which keeps the page index narrow.

CREATE TABLE volumes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, like a PostgreSQL identity
    name        TEXT    NOT NULL UNIQUE,
    page_size   INTEGER NOT NULL CHECK (page_size BETWEEN 512 AND 65536 AND (page_size & (page_size - 1)) = 0),
    head        INTEGER NOT NULL DEFAULT 0 CHECK (head >= 0),
    page_count  INTEGER NOT NULL DEFAULT 0 CHECK (page_count BETWEEN 0 AND 4294967295),
    policy      TEXT    NOT NULL DEFAULT 'replay',
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    key         TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

-- The commit log. A rowid table rather than WITHOUT ROWID: logical records
-- can be large, and WITHOUT ROWID suits small rows only.
CREATE TABLE commits (
    volume_id    INTEGER NOT NULL REFERENCES volumes (id),
    version      INTEGER NOT NULL CHECK (version >= 1),
    base         INTEGER NOT NULL CHECK (base >= 0 AND base < version),
    client_id    TEXT    NOT NULL CHECK (client_id <> ''),
    client_seq   INTEGER NOT NULL CHECK (client_seq >= 0),
    decision     TEXT    NOT NULL CHECK (decision IN ('fast-path', 'merged', 'replayed')),
    reason       TEXT    NOT NULL DEFAULT '',
    page_count   INTEGER NOT NULL CHECK (page_count BETWEEN 0 AND 4294967295),
    pages_count  INTEGER NOT NULL CHECK (pages_count >= 0),
    record       BLOB    NOT NULL,
    checksum     BLOB    NOT NULL,
    received_at  INTEGER,          -- NULL when the caller gave no time
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (volume_id, version),
    UNIQUE (volume_id, client_id, client_seq) -- the idempotency key
) STRICT;

-- One row per page a version wrote. The primary key serves "latest version
-- of page p at or before v" (a descending seek on (volume_id, page_no)),
-- page_index_version serves "pages changed in (from, to]", and
-- page_index_segment lets a segment's references be counted (and lets the
-- foreign key check a segment delete without a full scan).
CREATE TABLE page_index (
    volume_id     INTEGER NOT NULL,
    page_no       INTEGER NOT NULL CHECK (page_no BETWEEN 1 AND 4294967295),
    version       INTEGER NOT NULL,
    segment_id    INTEGER NOT NULL REFERENCES segments (id),
    frame_offset  INTEGER NOT NULL CHECK (frame_offset >= 0),
    frame_length  INTEGER NOT NULL CHECK (frame_length > 0),
    page_offset   INTEGER NOT NULL CHECK (page_offset >= 0),
    hash          INTEGER NOT NULL, -- uint64 bits as int64
    PRIMARY KEY (volume_id, page_no, version),
    FOREIGN KEY (volume_id, version) REFERENCES commits (volume_id, version)
) STRICT, WITHOUT ROWID;

CREATE INDEX page_index_version ON page_index (volume_id, version);
CREATE INDEX page_index_segment ON page_index (segment_id);

-- Access tokens, stored by hash only. expires_at NULL means never.
CREATE TABLE tokens (
    token_hash  BLOB    PRIMARY KEY,
    volume_id   INTEGER NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    can_read    INTEGER NOT NULL CHECK (can_read IN (0, 1)),
    can_write   INTEGER NOT NULL CHECK (can_write IN (0, 1)),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
) STRICT;

CREATE INDEX tokens_volume ON tokens (volume_id);
