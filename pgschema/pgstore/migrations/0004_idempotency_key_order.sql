-- 0004_idempotency_key_order: the idempotency key's index leads with the
-- client, not the volume.
--
-- Every lookup by idempotency key (a commit's retry, a client's decisions)
-- fixes the volume and the client, so either order serves them. Led by the
-- volume, the index also matched "the commit at (volume, version)", the
-- page-count lookup inside PageAt, PagesAt and ChangedPages; with
-- statistics taken before a volume grew (the server never runs ANALYZE),
-- PostgreSQL took it over the primary key and scanned the volume's every
-- commit to find one: 3.7 ms instead of 0.1 ms for a pull of the last 10
-- of 10,000 versions, growing with the volume's history. Led by the
-- client, it cannot serve that lookup.
ALTER TABLE commits
    DROP CONSTRAINT commits_idempotency_key,
    ADD CONSTRAINT commits_idempotency_key UNIQUE (client_id, volume_id, client_seq);
