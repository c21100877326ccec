//! The database schema, as numbered migrations applied in order at start-up. Each migration is
//! plain SQL that SQLite and PostgreSQL both accept (times are Unix milliseconds in BIGINT,
//! flags are INTEGER 0/1, lists are JSON text), so one set of queries serves both.

/// Migrations in order; a migration is never edited once released, only followed by another.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
    1,
    "
    CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        sip_call_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        queue TEXT,
        group_name TEXT,
        groups_json TEXT NOT NULL DEFAULT '[]',
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        agent TEXT,
        agent_email TEXT,
        started_at BIGINT NOT NULL,
        answered_at BIGINT,
        ended_at BIGINT,
        outcome TEXT,
        reason TEXT,
        ended_by TEXT,
        out_of_hours INTEGER NOT NULL DEFAULT 0,
        recording_url TEXT,
        explanation_json TEXT NOT NULL DEFAULT '[]',
        tags_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX calls_by_start ON calls (started_at);
    CREATE INDEX calls_by_end ON calls (ended_at);
    CREATE TABLE call_events (
        call_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (call_id, seq)
    );
    CREATE TABLE cursors (
        group_name TEXT PRIMARY KEY,
        extension TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE agent_states (
        extension TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    ",
),
    (
        2,
        "
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            call_id TEXT NOT NULL,
            integration TEXT NOT NULL,
            contact_key TEXT NOT NULL,
            call_started_at BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            pending_since BIGINT NOT NULL,
            next_attempt_at BIGINT NOT NULL,
            lease_until BIGINT,
            last_error TEXT,
            detail TEXT,
            contact_id TEXT,
            request TEXT,
            ticket_id TEXT,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX deliveries_due ON deliveries (integration, state, next_attempt_at);
        CREATE INDEX deliveries_by_contact ON deliveries (integration, contact_key, call_started_at);
        CREATE INDEX deliveries_by_call ON deliveries (call_id);
        CREATE TABLE contacts (
            integration TEXT NOT NULL,
            phone TEXT NOT NULL,
            contact_id TEXT,
            name TEXT,
            inactive INTEGER NOT NULL DEFAULT 0,
            checked_at BIGINT NOT NULL,
            PRIMARY KEY (integration, phone)
        )
        ",
    ),
    (
        3,
        "
        CREATE TABLE dead_records (
            id TEXT PRIMARY KEY,
            recorded_at BIGINT NOT NULL,
            kind TEXT NOT NULL,
            call_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload TEXT NOT NULL
        );
        CREATE TABLE write_check (
            id INTEGER PRIMARY KEY,
            checked_at BIGINT NOT NULL
        )
        ",
    ),
    (
        4,
        "
        ALTER TABLE deliveries ADD COLUMN action TEXT
        ",
    ),
    (
        5,
        "
        ALTER TABLE calls ADD COLUMN agents_json TEXT NOT NULL DEFAULT '[]'
        ",
    ),
    (
        6,
        "
        ALTER TABLE agent_states ADD COLUMN reason TEXT
        ",
    ),
    (
        7,
        "
        ALTER TABLE calls ADD COLUMN voicemail_json TEXT
        ",
    ),
    (
        8,
        "
        ALTER TABLE calls ADD COLUMN instance TEXT;
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            heartbeat_at BIGINT NOT NULL,
            dead_after_ms BIGINT NOT NULL
        )
        ",
    ),
    (
        9,
        "
        ALTER TABLE calls ADD COLUMN voicemail_removed_at BIGINT;
        CREATE INDEX calls_voicemail_to_sweep ON calls (ended_at) WHERE voicemail_json IS NOT NULL AND voicemail_removed_at IS NULL
        ",
    ),
];
