CREATE TABLE bel_writer (
    id integer NOT NULL,
    owner text NOT NULL,
    acquired_at double precision NOT NULL,
    generation bigint NOT NULL DEFAULT 0,
    url text NOT NULL DEFAULT ''::text
);
CREATE TABLE build_events (
    sequence bigint NOT NULL,
    timestamp double precision NOT NULL,
    type text NOT NULL,
    version integer NOT NULL,
    payload bytea NOT NULL,
    generation bigint NOT NULL DEFAULT 0
);
CREATE TABLE schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at double precision NOT NULL
);
ALTER TABLE bel_writer ADD CONSTRAINT bel_writer_id_check CHECK ((id = 1));
ALTER TABLE bel_writer ADD CONSTRAINT bel_writer_pkey PRIMARY KEY (id);
ALTER TABLE build_events ADD CONSTRAINT build_events_pkey PRIMARY KEY (sequence);
ALTER TABLE build_events ADD CONSTRAINT build_events_sequence_check CHECK ((sequence > 0));
ALTER TABLE schema_migrations ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
CREATE UNIQUE INDEX bel_writer_pkey ON bel_writer USING btree (id);
CREATE UNIQUE INDEX build_events_pkey ON build_events USING btree (sequence);
CREATE UNIQUE INDEX schema_migrations_pkey ON schema_migrations USING btree (version);
