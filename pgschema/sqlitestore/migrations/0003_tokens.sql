-- 0003_tokens: access tokens in the shape Metastore.CreateToken stores, as in
-- pgstore's 0003.
--
-- The tokens table of 0001 was never read or written by any code, so it
-- holds no rows worth keeping: it is dropped (with its index) and created
-- anew rather than altered.
DROP TABLE tokens;

-- volume_id NULL means every volume; expires_at NULL means never. Times are
-- integer unix microseconds, UTC, as in 0001.
CREATE TABLE tokens (
    id          TEXT    NOT NULL PRIMARY KEY
                CHECK (length(id) BETWEEN 1 AND 64 AND id NOT GLOB '*[^A-Za-z0-9_-]*'),
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    volume_id   INTEGER REFERENCES volumes (id) ON DELETE CASCADE,
    can_read    INTEGER NOT NULL DEFAULT 0 CHECK (can_read IN (0, 1)),
    can_write   INTEGER NOT NULL DEFAULT 0 CHECK (can_write IN (0, 1)),
    can_admin   INTEGER NOT NULL DEFAULT 0 CHECK (can_admin IN (0, 1)),
    note        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX tokens_volume ON tokens (volume_id);
