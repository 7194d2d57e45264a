-- 0001_init: Cambium's metadata schema (DESIGN.md, Storage). Released
-- migrations are never edited; a change of schema is a new file.

-- One replicated SQLite database. head and page_count move together with
-- each appended commit, under this row's lock.
CREATE TABLE volumes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    page_size   integer     NOT NULL CHECK (page_size BETWEEN 512 AND 65536 AND page_size & (page_size - 1) = 0),
    head        bigint      NOT NULL DEFAULT 0 CHECK (head >= 0),
    page_count  bigint      NOT NULL DEFAULT 0 CHECK (page_count BETWEEN 0 AND 4294967295),
    policy      text        NOT NULL DEFAULT 'replay' CHECK (policy IN ('replay', 'strict', 'no-merge')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT volumes_name_key UNIQUE (name)
);

-- Immutable page-store objects, named once here so the page index holds an
-- 8-byte id per row rather than a key; garbage collection counts a
-- segment's page_index references before deleting the object.
CREATE TABLE segments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT segments_key_key UNIQUE (key)
);

-- The commit log: one row per version, with its decision. The idempotency
-- key (volume_id, client_id, client_seq) makes a retried commit find the
-- version it already became.
CREATE TABLE commits (
    volume_id   bigint      NOT NULL REFERENCES volumes (id),
    version     bigint      NOT NULL CHECK (version >= 1),
    base        bigint      NOT NULL CHECK (base >= 0 AND base < version),
    client_id   text        NOT NULL CHECK (client_id <> ''),
    client_seq  bigint      NOT NULL CHECK (client_seq >= 0),
    decision    text        NOT NULL CHECK (decision IN ('fast-path', 'merged', 'replayed')),
    reason      text        NOT NULL DEFAULT '',
    page_count  bigint      NOT NULL CHECK (page_count BETWEEN 0 AND 4294967295),
    pages_count integer     NOT NULL CHECK (pages_count >= 0),
    record      bytea       NOT NULL DEFAULT '',
    checksum    bytea       NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT commits_pkey PRIMARY KEY (volume_id, version),
    CONSTRAINT commits_idempotency_key UNIQUE (volume_id, client_id, client_seq)
);

-- The page index: page page_no of volume_id as written by version lives in
-- segment_id at (frame_offset, frame_length, page_offset). The primary key
-- serves "latest version of page p at or before v" as a backward index scan;
-- page_index_version serves "pages changed in (from, to]". hash is the
-- page's uint64 content hash, bit-cast to bigint.
CREATE TABLE page_index (
    volume_id    bigint NOT NULL,
    page_no      bigint NOT NULL CHECK (page_no BETWEEN 1 AND 4294967295),
    version      bigint NOT NULL CHECK (version >= 1),
    segment_id   bigint NOT NULL REFERENCES segments (id),
    frame_offset bigint NOT NULL CHECK (frame_offset >= 0),
    frame_length bigint NOT NULL CHECK (frame_length > 0),
    page_offset  bigint NOT NULL CHECK (page_offset >= 0),
    hash         bigint NOT NULL,
    CONSTRAINT page_index_pkey PRIMARY KEY (volume_id, page_no, version),
    CONSTRAINT page_index_commit_fkey FOREIGN KEY (volume_id, version) REFERENCES commits (volume_id, version)
);
CREATE INDEX page_index_version ON page_index (volume_id, version) INCLUDE (page_no);
-- Garbage collection: is segment s still referenced?
CREATE INDEX page_index_segment ON page_index (segment_id);

-- Access tokens, stored as a hash of the secret. volume_id NULL means every
-- volume.
CREATE TABLE tokens (
    token_hash bytea       PRIMARY KEY,
    volume_id  bigint      REFERENCES volumes (id) ON DELETE CASCADE,
    can_read   boolean     NOT NULL DEFAULT true,
    can_write  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX tokens_volume ON tokens (volume_id);
