-- 0002_conflict_settings: what conflict resolution needs per volume, as in
-- pgstore's 0002.

ALTER TABLE volumes ADD COLUMN allow_ddl INTEGER NOT NULL DEFAULT 0 CHECK (allow_ddl IN (0, 1));

CREATE TABLE mutators (
    volume_id  INTEGER NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL CHECK (name <> ''),
    sql        TEXT    NOT NULL CHECK (sql <> ''),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (volume_id, name)
) STRICT, WITHOUT ROWID;
