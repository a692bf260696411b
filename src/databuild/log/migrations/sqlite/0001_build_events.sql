-- The Build Event Log table. "INTEGER PRIMARY KEY" (not BIGINT) makes sequence the rowid,
-- so appends go to the end of the table b-tree and reads by range need no extra index;
-- SQLite integers are 64-bit either way.
CREATE TABLE build_events (
    sequence INTEGER PRIMARY KEY CHECK (sequence > 0),
    timestamp REAL NOT NULL,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL
);
