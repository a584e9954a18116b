-- hookledger schema 6: each sealed event bucket's id filter in a table of its own. Before this
-- file runs, src/store/duck/migrate.rs creates `event_filter_0000n` for every sealed bucket n
-- (one row: the Bloom filter of its ids, rebuilt from them, and a SHA-256 digest binding it to
-- the bucket's row; src/store/duck/filters.rs). A filter table is written once, when its
-- bucket seals, so a DuckDB checkpoint no longer rewrites every filter stored (it did, as
-- they were all in this one small table's only row group).
ALTER TABLE event_buckets DROP COLUMN filter;
