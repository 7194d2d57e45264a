-- 0002_conflict_settings: what conflict resolution needs per volume.

-- Whether replayed records may change the schema (the replay sandbox denies
-- DDL otherwise). Off by default: a stale schema change is rejected and the
-- client redoes it on head.
ALTER TABLE volumes ADD COLUMN allow_ddl boolean NOT NULL DEFAULT false;

-- SQL-defined named mutations, per volume: statements with :name parameters
-- bound from the mutation's JSON arguments.
CREATE TABLE mutators (
    volume_id  bigint      NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    name       text        NOT NULL CHECK (name <> ''),
    sql        text        NOT NULL CHECK (sql <> ''),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mutators_pkey PRIMARY KEY (volume_id, name)
);
