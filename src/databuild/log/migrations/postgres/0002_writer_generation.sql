-- Several services may share one log (docs/operations.md, "Two service replicas on
-- PostgreSQL"): each new writer bumps ``generation`` under the build_events table lock and
-- advertises its HTTP ``url`` for the standbys to forward writes to. Every append checks
-- the stored generation is its own (fencing) and stamps its rows with it.
ALTER TABLE bel_writer ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bel_writer ADD COLUMN url TEXT NOT NULL DEFAULT '';
ALTER TABLE build_events ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
