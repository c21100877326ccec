//! The database schema, as numbered migrations applied in order at start-up. Each migration is
//! plain SQL that SQLite and PostgreSQL both accept (times are Unix milliseconds in BIGINT,
//! flags are INTEGER 0/1, lists are JSON text), so one set of queries serves both. What only
//! PostgreSQL needs (several instances sharing agents: the claim function and the
//! notifications, see [`super::holds`]) is in [`POSTGRES_ONLY`], applied with the migration of
//! the same number.

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
    (
        10,
        "
        CREATE TABLE agent_holds (
            extension TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            call_id TEXT,
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            since BIGINT NOT NULL,
            until BIGINT
        )
        ",
    ),
    (
        11,
        "
        ALTER TABLE calls ADD COLUMN sms_json TEXT;
        CREATE TABLE sms_replies (
            id TEXT PRIMARY KEY,
            integration TEXT NOT NULL,
            ticket_id TEXT NOT NULL,
            customer TEXT NOT NULL,
            number TEXT NOT NULL,
            body TEXT NOT NULL,
            author TEXT,
            state TEXT NOT NULL,
            detail TEXT,
            instance TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX sms_replies_due ON sms_replies (state, created_at);
        CREATE TABLE helpdesk_cursors (
            integration TEXT PRIMARY KEY,
            position BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )
        ",
    ),
];

/// Statements only PostgreSQL runs, each whole (function bodies hold semicolons), with the
/// migration of the same number.
pub(super) const POSTGRES_ONLY: &[(i64, &[&str])] = &[(
    10,
    &[
        // One round trip rings an agent: the group's cursor row is locked (so claims for one
        // group are taken in turn and the rotation is one across every instance), then the
        // first agent after the cursor who is not skipped, not away and not held (a wrap-up
        // that is over gives way) is held for the call and becomes the cursor. A claim of
        // another group racing for the same agent waits on the row and then finds it taken.
        // The instance's own older hold of an agent it does not skip gives way too: the
        // instance has one claim out at a time and skips every agent it holds, so such a row
        // is a release not yet told (or a claim whose answer was lost).
        r#"
        CREATE OR REPLACE FUNCTION sipdesk_claim(
            p_group TEXT, p_agents TEXT[], p_skip TEXT[], p_instance TEXT, p_call TEXT,
            p_version BIGINT)
        RETURNS TEXT LANGUAGE plpgsql AS $$
        DECLARE
            v_agents TEXT[] := p_agents;
            v_skip TEXT[] := p_skip;
            v_n INT := COALESCE(array_length(v_agents, 1), 0);
            v_now_ms BIGINT := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT);
            v_last TEXT;
            v_start INT;
            v_ext TEXT;
            v_taken INT;
        BEGIN
            IF v_n = 0 THEN
                RETURN NULL;
            END IF;
            INSERT INTO cursors (group_name, extension, updated_at) VALUES (p_group, '', v_now_ms)
                ON CONFLICT (group_name) DO NOTHING;
            SELECT extension INTO v_last FROM cursors WHERE group_name = p_group FOR UPDATE;
            v_start := COALESCE(array_position(v_agents, v_last), 0);
            FOR i IN 1..v_n LOOP
                v_ext := v_agents[((v_start + i - 1) % v_n) + 1];
                CONTINUE WHEN v_ext = ANY(v_skip);
                CONTINUE WHEN EXISTS (
                    SELECT 1 FROM agent_states s WHERE s.extension = v_ext AND s.state = 'away');
                -- Held agents are passed without locking their row: a refused upsert keeps
                -- the row locked, and two claims passing busy agents in another order would
                -- deadlock.
                CONTINUE WHEN EXISTS (
                    SELECT 1 FROM agent_holds x WHERE x.extension = v_ext
                      AND (x.until IS NULL OR x.until > v_now_ms)
                      AND NOT (x.instance = p_instance AND x.version < p_version));
                INSERT INTO agent_holds AS h
                    (extension, instance, call_id, state, version, since, until)
                    VALUES (v_ext, p_instance, p_call, 'busy', p_version, v_now_ms, NULL)
                    ON CONFLICT (extension) DO UPDATE SET instance = excluded.instance,
                        call_id = excluded.call_id, state = excluded.state,
                        version = excluded.version, since = excluded.since, until = NULL
                    WHERE (h.until IS NOT NULL AND h.until <= v_now_ms)
                       OR (h.instance = excluded.instance AND h.version < excluded.version);
                GET DIAGNOSTICS v_taken = ROW_COUNT;
                IF v_taken > 0 THEN
                    UPDATE cursors SET extension = v_ext, updated_at = v_now_ms
                        WHERE group_name = p_group;
                    RETURN v_ext;
                END IF;
            END LOOP;
            RETURN NULL;
        END
        $$
        "#,
        // Every change of a hold, an agent's away state or a contact is told to every
        // instance listening, when it commits.
        r#"
        CREATE OR REPLACE FUNCTION sipdesk_hold_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            now_ms BIGINT := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT);
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('sipdesk_holds', json_build_object(
                    'extension', OLD.extension, 'instance', OLD.instance,
                    'state', 'free')::text);
                RETURN OLD;
            END IF;
            PERFORM pg_notify('sipdesk_holds', json_build_object(
                'extension', NEW.extension, 'instance', NEW.instance, 'state', NEW.state,
                'remaining_ms', NEW.until - now_ms)::text);
            RETURN NEW;
        END
        $$
        "#,
        "CREATE TRIGGER agent_holds_changed AFTER INSERT OR UPDATE OR DELETE ON agent_holds
         FOR EACH ROW EXECUTE FUNCTION sipdesk_hold_changed()",
        r#"
        CREATE OR REPLACE FUNCTION sipdesk_agent_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sipdesk_agents', json_build_object(
                'extension', NEW.extension, 'state', NEW.state, 'reason', NEW.reason)::text);
            RETURN NEW;
        END
        $$
        "#,
        "CREATE TRIGGER agent_states_changed AFTER INSERT OR UPDATE ON agent_states
         FOR EACH ROW EXECUTE FUNCTION sipdesk_agent_changed()",
        r#"
        CREATE OR REPLACE FUNCTION sipdesk_contact_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('sipdesk_contacts', json_build_object(
                    'integration', OLD.integration, 'phone', OLD.phone, 'gone', true)::text);
                RETURN OLD;
            END IF;
            PERFORM pg_notify('sipdesk_contacts', json_build_object(
                'integration', NEW.integration, 'phone', NEW.phone,
                'contact', NEW.contact_id IS NOT NULL, 'inactive', NEW.inactive <> 0)::text);
            RETURN NEW;
        END
        $$
        "#,
        "CREATE TRIGGER contacts_changed AFTER INSERT OR UPDATE OR DELETE ON contacts
         FOR EACH ROW EXECUTE FUNCTION sipdesk_contact_changed()",
    ],
)];
