-- 0003_tokens: access tokens in the shape Metastore.CreateToken stores
-- (pgschema.Token): a public id, the SHA-256 of the secret, and what the
-- token grants on one volume or on every volume.
--
-- The tokens table of 0001 was never read or written by any code, so it
-- holds no rows worth keeping: it is dropped (with its index) and created
-- anew rather than altered.
DROP TABLE tokens;

-- volume_id NULL means every volume; expires_at NULL means never.
CREATE TABLE tokens (
    id          text        NOT NULL CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    secret_hash bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    volume_id   bigint      REFERENCES volumes (id) ON DELETE CASCADE,
    can_read    boolean     NOT NULL DEFAULT false,
    can_write   boolean     NOT NULL DEFAULT false,
    can_admin   boolean     NOT NULL DEFAULT false,
    note        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    CONSTRAINT tokens_pkey PRIMARY KEY (id)
);
-- A volume's tokens, and the foreign key's check when a volume is deleted.
CREATE INDEX tokens_volume ON tokens (volume_id);
