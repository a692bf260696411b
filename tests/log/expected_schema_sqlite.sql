-- table build_events
CREATE TABLE build_events (sequence INTEGER PRIMARY KEY CHECK (sequence > 0), timestamp REAL NOT NULL, type TEXT NOT NULL, version INTEGER NOT NULL, payload BLOB NOT NULL);
-- table schema_migrations
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
