-- hookledger PostgreSQL schema 3: several nodes on one database (src/cluster). These two
-- tables are coordination state, not history: rows are updated in place, and nothing in them
-- is covered by a chain or needed to audit or replay the ledger.

-- Every node that ever started, with its heartbeat (a node is live while it beats).
CREATE TABLE cluster_nodes (
    node_id      uuid        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at   timestamptz,          -- set by a node that stopped gracefully
    host         text        NOT NULL  -- hostname and pid, for operators
);

-- Which node attempts the deliveries of each partition of webhooks (webhook id mod 64), until
-- when. Changed only under the commit lock, so a commit's ownership check and the lease it
-- checks cannot move apart (see src/cluster/mod.rs).
CREATE TABLE partition_leases (
    partition  integer     PRIMARY KEY,
    node_id    uuid,                   -- NULL: released
    expires_at timestamptz NOT NULL,
    epoch      bigint      NOT NULL    -- +1 each time the partition changes hands
);
INSERT INTO partition_leases (partition, node_id, expires_at, epoch)
SELECT p, NULL, '-infinity', 0 FROM generate_series(0, 63) AS p;
