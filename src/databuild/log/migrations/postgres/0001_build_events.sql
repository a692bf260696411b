-- The Build Event Log table; sequence is assigned by the writer under a table lock (never
-- by a SEQUENCE), so it is gap-free and commits in order.
CREATE TABLE build_events (
    sequence BIGINT PRIMARY KEY CHECK (sequence > 0),
    timestamp DOUBLE PRECISION NOT NULL,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BYTEA NOT NULL
);

-- Who holds the writer lock (a session advisory lock): advisory locks carry no name, so
-- the holder records its owner string here for the LogLocked message of the next comer.
CREATE TABLE bel_writer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL
);
