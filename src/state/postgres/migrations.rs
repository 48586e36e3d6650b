//! The shared store's schema, migration by migration.

/// Migrations, in order: the schema version (in `tapline_schema`) is the number applied.
/// The tables are those of the embedded store (see `state::sqlite` for what each holds),
/// with leases and request slots.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE runs (
        run_id        text PRIMARY KEY,
        pipeline      text NOT NULL,
        pipeline_file text NOT NULL,
        trigger       text NOT NULL,
        started_at    bigint NOT NULL,
        finished_at   bigint,
        status        text NOT NULL,
        read          bigint NOT NULL DEFAULT 0,
        accepted      bigint NOT NULL DEFAULT 0,
        skipped       bigint NOT NULL DEFAULT 0,
        rejected      bigint NOT NULL DEFAULT 0,
        failed        bigint NOT NULL DEFAULT 0,
        requests      bigint NOT NULL DEFAULT 0,
        retries       bigint NOT NULL DEFAULT 0,
        resumed_from  text,
        rows_resumed  bigint NOT NULL DEFAULT 0,
        rejects_file  text,
        stop_reason   text,
        first_errors  text NOT NULL DEFAULT '[]',
        warnings      text NOT NULL DEFAULT '[]',
        unchanged     bigint NOT NULL DEFAULT 0,
        scheduled_for bigint,
        runner        text
    );
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at);
    CREATE TABLE checkpoints (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        run_id        text NOT NULL,
        size          bigint NOT NULL,
        modified_ns   bigint NOT NULL,
        sha256        text NOT NULL,
        settings      text NOT NULL DEFAULT '',
        PRIMARY KEY (pipeline, destination)
    );
    CREATE TABLE settled_lines (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        first_line    bigint NOT NULL,
        last_line     bigint NOT NULL
    );
    CREATE INDEX settled_lines_by_checkpoint ON settled_lines (pipeline, destination);
    CREATE TABLE deliveries (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        sha256        text NOT NULL,
        size          bigint NOT NULL,
        run_id        text NOT NULL,
        delivered_at  bigint NOT NULL,
        settings      text NOT NULL DEFAULT '',
        PRIMARY KEY (pipeline, destination, sha256)
    );
    CREATE TABLE fires (
        pipeline      text PRIMARY KEY,
        fired_at      bigint NOT NULL
    );
    CREATE TABLE arrivals (
        pipeline      text NOT NULL,
        path          text NOT NULL,
        size          bigint NOT NULL,
        modified_ns   bigint NOT NULL,
        seen_at       bigint NOT NULL,
        PRIMARY KEY (pipeline, path, size, modified_ns)
    );
    CREATE TABLE fingerprint_journal (
        id            bigserial PRIMARY KEY,
        scope         bigint NOT NULL,
        entries       bytea NOT NULL
    );
    CREATE INDEX fingerprint_journal_by_scope ON fingerprint_journal (scope, id);
    CREATE TABLE record_fingerprints (
        key           bigint PRIMARY KEY,
        scope         bigint NOT NULL,
        content       bigint NOT NULL,
        expires_at    bigint
    );
    CREATE INDEX record_fingerprints_by_scope ON record_fingerprints (scope, key);
    CREATE TABLE fingerprint_scopes (
        scope         bigint PRIMARY KEY,
        pipeline      text NOT NULL,
        destination   text NOT NULL
    );
    CREATE TABLE watermarks (
        pipeline      text NOT NULL,
        destination   text NOT NULL,
        value         text NOT NULL,
        run_id        text NOT NULL,
        updated_at    bigint NOT NULL,
        PRIMARY KEY (pipeline, destination)
    );
    -- One run of a pipeline at a time: the process (`holder`) that renews the lease.
    CREATE TABLE leases (
        pipeline      text PRIMARY KEY,
        holder        text NOT NULL,
        acquired_at   timestamptz NOT NULL,
        renewed_at    timestamptz NOT NULL,
        expires_at    timestamptz NOT NULL
    );
    -- A CleverTap account's requests in flight, counted across processes: one row per
    -- slot; a request holds a free (or expired) one.
    CREATE TABLE request_slots (
        account       text NOT NULL,
        api           text NOT NULL,
        slot          integer NOT NULL,
        holder        text,
        expires_at    timestamptz,
        PRIMARY KEY (account, api, slot)
    );
",
    "
    -- An event's fingerprint is forgotten `changes.event_days` after the run that sent it, no
    -- longer after its `ts`: the ones kept before are kept as if sent now, for 90 days.
    UPDATE record_fingerprints
    SET expires_at = greatest(expires_at, extract(epoch FROM now())::int8 + 90 * 86400)
    WHERE expires_at IS NOT NULL;
",
    "
    -- Where each run sent: the account ID and host, or `sandbox`.
    ALTER TABLE runs ADD COLUMN destination text;
",
    "
    -- Why a run stopped, as a word a program matches on (`stop_reason` is the message).
    ALTER TABLE runs ADD COLUMN stop_kind text;
",
    "
    -- Indexes for the history's lists (the console, `tapline history`): newest first, of a
    -- pipeline, or of a status, each read from its index in order.
    DROP INDEX runs_by_pipeline;
    CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at, run_id);
    CREATE INDEX runs_by_start ON runs (started_at, run_id);
    CREATE INDEX runs_by_status ON runs (status, started_at, run_id);
",
    "
    -- The limits of requests in flight each run went through (`thread_count: auto`).
    ALTER TABLE runs ADD COLUMN concurrency text;
",
    "
    -- An object's ETag is part of what identifies its arrival (empty for a local file).
    ALTER TABLE arrivals ADD COLUMN version text NOT NULL DEFAULT '';
    ALTER TABLE arrivals DROP CONSTRAINT arrivals_pkey;
    ALTER TABLE arrivals ADD PRIMARY KEY (pipeline, path, size, modified_ns, version);
",
];
