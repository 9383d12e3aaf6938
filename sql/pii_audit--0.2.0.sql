-- pii_audit install script: the audit trail, categories, views and roles.
\echo Use "CREATE EXTENSION pii_audit" to load this file. \quit

-- Refuse to install where the library was not preloaded: nothing would be audited.
CREATE FUNCTION pii_audit._require_preload() RETURNS void
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'pii_audit_require_preload';
SELECT pii_audit._require_preload();

-- Roles are cluster-wide: create them once, whichever database installs the extension first.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_audit_officer') THEN
        CREATE ROLE pii_audit_officer NOLOGIN;
        COMMENT ON ROLE pii_audit_officer IS 'reads the pii_audit trail, nothing else';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_audit_admin') THEN
        CREATE ROLE pii_audit_admin NOLOGIN;
        COMMENT ON ROLE pii_audit_admin IS 'may set, change and remove pii labels and categories';
    END IF;
END
$roles$;

REVOKE ALL ON SCHEMA pii_audit FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_audit TO pii_audit_officer, pii_audit_admin;

-- ---------------------------------------------------------------- categories
CREATE TABLE pii_audit.categories (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$' AND name <> 'subject_key'),
    description text NOT NULL,
    pipl_sensitive boolean NOT NULL DEFAULT false,
    builtin boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE pii_audit.categories IS
    'categories a pii label may name; pipl_sensitive marks PIPL art. 28 sensitive personal information';

INSERT INTO pii_audit.categories (name, description, pipl_sensitive, builtin) VALUES
    ('name', 'personal name', false, true),
    ('phone', 'telephone number', false, true),
    ('id_number', 'national identity, passport or other document number', true, true),
    ('verification_code', 'one-time SMS or e-mail verification code', true, true),
    ('address', 'postal or home address', false, true),
    ('email', 'e-mail address', false, true),
    ('bank_account', 'bank card or account number', true, true),
    ('credential', 'password, token or other secret that authenticates a person', true, true),
    ('biometric', 'fingerprint, face, voice or other biometric data', true, true),
    ('health', 'medical or health information', true, true),
    ('location', 'precise location or movement track', true, true),
    ('travel', 'itinerary, flight or hotel record', true, true),
    ('vehicle', 'licence plate or vehicle record', false, true),
    ('minor', 'personal information of a child under 14', true, true);

-- Built-in categories stay; a category still named by a label cannot be removed or renamed.
CREATE FUNCTION pii_audit._protect_categories() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') AND (NEW.name !~ '^[a-z][a-z0-9_]{0,62}$' OR NEW.name = 'subject_key') THEN
        RAISE EXCEPTION 'invalid pii category name "%"', NEW.name
            USING HINT = 'Category names are lowercase letters, digits and underscores, start with a letter, are at most 63 characters, and subject_key is reserved.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        RETURN NEW;
    END IF;
    IF OLD.builtin THEN
        RAISE EXCEPTION 'built-in pii category "%" cannot be removed or renamed', OLD.name;
    END IF;
    IF (TG_OP = 'DELETE' OR NEW.name <> OLD.name) AND EXISTS (
        SELECT FROM pg_catalog.pg_seclabel
        WHERE provider = 'pii' AND OLD.name = ANY (
            SELECT lower(btrim(t)) FROM unnest(string_to_array(label, ',')) AS t)) THEN
        RAISE EXCEPTION 'pii category "%" is still used by a label', OLD.name
            USING HINT = 'Change those labels first; see pii_audit.labelled_columns.';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER protect_categories BEFORE INSERT OR UPDATE OR DELETE ON pii_audit.categories
    FOR EACH ROW EXECUTE FUNCTION pii_audit._protect_categories();

GRANT SELECT ON pii_audit.categories TO pii_audit_officer, pii_audit_admin;
GRANT INSERT, UPDATE, DELETE ON pii_audit.categories TO pii_audit_admin;

-- ---------------------------------------------------------------- the trail
-- Written only by the pii_audit background worker, in this (the audit) database. The column
-- order of the trail's tables is checked by the worker at start.
--
-- What events of one connection and of one statement have in common (names, addresses,
-- statement text, column lists) is stored once, in trail_sessions and trail_statements. The
-- events of one batch of the worker that share a session, a statement, a kind, a nesting level
-- and a backend form a group: one row of trail_groups, with consecutive event ids, and each
-- event's own parts (time, status, row count, subjects, detail) packed into the payload (about
-- 15 bytes for a lookup of one person). pii_audit.events (below) unpacks them into one row per
-- event. See the README, "How the trail is stored".
CREATE TABLE pii_audit.trail_sessions (
    session_id bigint PRIMARY KEY,
    database_name text NOT NULL,
    session_user_name text,
    current_user_name text,
    end_user text,
    application_name text,
    client_addr inet
);
CREATE INDEX trail_sessions_users ON pii_audit.trail_sessions (session_user_name);
CREATE INDEX trail_sessions_current_users ON pii_audit.trail_sessions (current_user_name);
CREATE INDEX trail_sessions_end_users ON pii_audit.trail_sessions (end_user);

CREATE TABLE pii_audit.trail_statements (
    statement_id bigint PRIMARY KEY,
    command text,
    relation text,
    relation_oid oid,
    columns text[],
    categories text[],
    query_id bigint,
    query_text text,
    query_truncated boolean
);
CREATE INDEX trail_statements_relations ON pii_audit.trail_statements (relation);

-- Partitioned by UTC calendar month of min_time: the worker adds each month's partition
-- (ATTACH, which takes no lock that blocks readers).
-- A group's events lie within one hour (max_time - min_time), so a time range on events bounds
-- the groups to read.
CREATE TABLE pii_audit.trail_groups (
    first_event_id bigint NOT NULL,
    event_count integer NOT NULL CHECK (event_count BETWEEN 1 AND 4096),
    min_time timestamptz NOT NULL,
    max_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    session_id bigint NOT NULL,     -- pii_audit.trail_sessions
    statement_id bigint,            -- pii_audit.trail_statements; NULL for gaps
    backend_pid integer,
    nesting_level integer,
    kind text NOT NULL CHECK (kind IN ('read', 'label_change', 'gap', 'login')),
    payload bytea NOT NULL,
    CHECK (max_time >= min_time AND max_time - min_time <= interval '1 hour')
) PARTITION BY RANGE (min_time);
-- Hashes do not compress, and a group row is at most a few tens of kilobytes.
ALTER TABLE pii_audit.trail_groups ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE INDEX trail_groups_event_id ON pii_audit.trail_groups (first_event_id);
CREATE INDEX trail_groups_time ON pii_audit.trail_groups (min_time);
CREATE INDEX trail_groups_session ON pii_audit.trail_groups (session_id, min_time);

-- The subject index: which groups hold which subject hashes. The worker writes it in slices of
-- about a million events: per slice, one row per bucket (the top bucket_bits bits of the hash)
-- holding sorted 8-byte entries (the hash's low 32 bits, the group's first_event_id minus the
-- slice's). Events after the last slice are found by reading their groups.
CREATE TABLE pii_audit.trail_subject_slices (
    first_event_id bigint PRIMARY KEY,
    last_event_id bigint NOT NULL,
    min_time timestamptz NOT NULL,   -- bounds of its groups' min_time
    max_time timestamptz NOT NULL,
    bucket_bits integer NOT NULL CHECK (bucket_bits BETWEEN 0 AND 16),
    entries bigint NOT NULL
);
CREATE TABLE pii_audit.trail_subject_index (
    slice bigint NOT NULL,          -- trail_subject_slices.first_event_id
    bucket integer NOT NULL,
    entries bytea NOT NULL,
    PRIMARY KEY (slice, bucket)
);
ALTER TABLE pii_audit.trail_subject_index ALTER COLUMN entries SET STORAGE EXTERNAL;

-- Unpacks a group's payload into its events (see trail_group.h).
CREATE FUNCTION pii_audit._group_events(first_event_id bigint, min_time timestamptz, payload bytea,
    OUT event_id bigint, OUT event_time timestamptz, OUT status text, OUT row_count bigint,
    OUT detail text, OUT subject_count bigint, OUT subjects bigint[],
    OUT subjects_truncated boolean, OUT subject_count_estimated boolean)
RETURNS SETOF record LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE ROWS 20
AS 'MODULE_PATHNAME', 'pii_audit_group_events';

-- Whether a group's events recorded a subject hash, or may have read it (a list cut short).
CREATE FUNCTION pii_audit._group_has_subject(min_time timestamptz, payload bytea, subject_hash bigint)
RETURNS boolean LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pii_audit_group_has_subject';

-- The group offsets one subject index row holds for a subject hash.
CREATE FUNCTION pii_audit._subject_offsets(entries bytea, subject_hash bigint)
RETURNS SETOF bigint LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE ROWS 2
AS 'MODULE_PATHNAME', 'pii_audit_subject_offsets';

-- Every event as one row. The side tables are LEFT joins on primary keys, so a query that needs
-- no column of a side table does not read it.
CREATE VIEW pii_audit.events AS
SELECT e.event_id, e.event_time, g.recorded_at, g.kind, e.status, s.database_name,
       s.session_user_name, s.current_user_name, s.end_user, s.application_name, s.client_addr,
       g.backend_pid, st.command, st.relation, st.relation_oid, st.columns, st.categories,
       e.row_count, st.query_id, st.query_text, st.query_truncated, g.nesting_level, e.detail,
       e.subject_count, e.subjects, e.subjects_truncated, e.subject_count_estimated
FROM pii_audit.trail_groups g
CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id;
COMMENT ON VIEW pii_audit.events IS
    'every stored event (reads, label changes, gaps, logins) with its session and statement';

-- The events with ids in (after_id, upto_id], in id order, read through the groups' index on
-- first_event_id (a filter on the view's event_id cannot use it). A group holds at most 4096
-- events, so its first id is within 4096 of any of its ids.
-- No SET clause, so that the planner inlines it into the calling query (every name in it is
-- schema-qualified, and the operators are built-in ones on built-in types).
CREATE FUNCTION pii_audit._events_in(after_id bigint, upto_id bigint)
RETURNS SETOF pii_audit.events
LANGUAGE sql STABLE ROWS 10000 AS $$
    SELECT e.event_id, e.event_time, g.recorded_at, g.kind, e.status, s.database_name,
           s.session_user_name, s.current_user_name, s.end_user, s.application_name,
           s.client_addr, g.backend_pid, st.command, st.relation, st.relation_oid, st.columns,
           st.categories, e.row_count, st.query_id, st.query_text, st.query_truncated,
           g.nesting_level, e.detail, e.subject_count, e.subjects, e.subjects_truncated,
           e.subject_count_estimated
    FROM pii_audit.trail_groups g
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
    LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id
    WHERE g.first_event_id > after_id - 4096 AND g.first_event_id <= upto_id
      AND g.first_event_id + g.event_count > after_id + 1
      AND e.event_id > after_id AND e.event_id <= upto_id
    ORDER BY e.event_id
$$;

-- The next max_events events after an event id, in id order: what a collector polling "every
-- event after the last one I saw" needs. Ids have no gaps (events removed by retention aside:
-- then the oldest remaining ones follow).
CREATE FUNCTION pii_audit.events_after(after_event_id bigint, max_events integer DEFAULT 10000)
RETURNS SETOF pii_audit.events
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start bigint := after_event_id;
    oldest bigint;
BEGIN
    IF after_event_id IS NULL OR max_events IS NULL THEN
        RAISE EXCEPTION 'after_event_id and max_events must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass 0 to start at the oldest event.';
    END IF;
    IF max_events < 1 OR max_events > 1000000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 1000000, not %', max_events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT g.first_event_id INTO oldest FROM pii_audit.trail_groups g
    ORDER BY g.first_event_id LIMIT 1;
    IF oldest IS NOT NULL AND start < oldest - 1 THEN
        start := oldest - 1;
    END IF;
    RETURN QUERY SELECT * FROM pii_audit._events_in(start, start + max_events);
END
$$;
COMMENT ON FUNCTION pii_audit.events_after(bigint, integer) IS
    'the next events after an event id, in id order (for collectors that poll by a rising id)';

-- Groups that may hold a subject: those the subject index names for its hash or for events
-- whose subject list was cut short (the index keeps those under the smallest bigint), and the
-- groups stored after the index's last slice that hold it (read in place, not unpacked). With
-- the bounds of their min_time, so that fetching them reads only the partitions concerned.
CREATE FUNCTION pii_audit._subject_groups(h bigint)
RETURNS TABLE (first_event_id bigint, min_time timestamptz, max_time timestamptz)
LANGUAGE sql STABLE ROWS 10 SET search_path = pg_catalog, pg_temp AS $$
    SELECT sl.first_event_id + o.offs, sl.min_time, sl.max_time
    FROM pii_audit.trail_subject_slices sl
    CROSS JOIN (VALUES (h), ((-9223372036854775807 - 1)::bigint)) AS want(hh)
    JOIN pii_audit.trail_subject_index x ON x.slice = sl.first_event_id
         AND x.bucket = CASE WHEN sl.bucket_bits = 0 THEN 0
                             ELSE (want.hh >> (64 - sl.bucket_bits))::integer END
    CROSS JOIN LATERAL pii_audit._subject_offsets(x.entries, want.hh) AS o(offs)
    UNION
    SELECT g.first_event_id, g.min_time, g.min_time FROM pii_audit.trail_groups g
    WHERE g.first_event_id > (SELECT coalesce(max(last_event_id), 0)
                              FROM pii_audit.trail_subject_slices)
      AND pii_audit._group_has_subject(g.min_time, g.payload, h)
$$;

CREATE TABLE pii_audit.worker_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL DEFAULT 0,
    last_queue_seq bigint NOT NULL DEFAULT 0,
    dropped_recorded bigint NOT NULL DEFAULT 0,
    last_event_id bigint NOT NULL DEFAULT 0,
    clean_shutdown boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pii_audit.worker_state DEFAULT VALUES;

-- Audit rows are append-only for everyone, the owner included. ENABLE ALWAYS keeps the
-- triggers firing under session_replication_role = replica.
CREATE FUNCTION pii_audit._refuse_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A month's partition of trail_groups is named for the table it belongs to.
    RAISE EXCEPTION 'the pii_audit trail is append-only: % on % is not allowed', TG_OP,
        regexp_replace(TG_TABLE_NAME, '^trail_groups_p[0-9]{6}$', 'trail_groups')
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER trail_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_groups
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
-- Statement triggers are not inherited: each partition gets its own (the worker adds it).
CREATE TRIGGER trail_no_truncate BEFORE TRUNCATE ON pii_audit.trail_groups
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_sessions_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_sessions
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_sessions_no_truncate BEFORE TRUNCATE ON pii_audit.trail_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_statements_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_statements
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_statements_no_truncate BEFORE TRUNCATE ON pii_audit.trail_statements
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_subject_index_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_subject_index
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_subject_index_no_truncate BEFORE TRUNCATE ON pii_audit.trail_subject_index
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_subject_slices_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_subject_slices
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_subject_slices_no_truncate BEFORE TRUNCATE ON pii_audit.trail_subject_slices
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
ALTER TABLE pii_audit.trail_groups ENABLE ALWAYS TRIGGER trail_append_only;
ALTER TABLE pii_audit.trail_groups ENABLE ALWAYS TRIGGER trail_no_truncate;
ALTER TABLE pii_audit.trail_sessions ENABLE ALWAYS TRIGGER trail_sessions_append_only;
ALTER TABLE pii_audit.trail_sessions ENABLE ALWAYS TRIGGER trail_sessions_no_truncate;
ALTER TABLE pii_audit.trail_statements ENABLE ALWAYS TRIGGER trail_statements_append_only;
ALTER TABLE pii_audit.trail_statements ENABLE ALWAYS TRIGGER trail_statements_no_truncate;
ALTER TABLE pii_audit.trail_subject_index ENABLE ALWAYS TRIGGER trail_subject_index_append_only;
ALTER TABLE pii_audit.trail_subject_index ENABLE ALWAYS TRIGGER trail_subject_index_no_truncate;
ALTER TABLE pii_audit.trail_subject_slices ENABLE ALWAYS TRIGGER trail_subject_slices_append_only;
ALTER TABLE pii_audit.trail_subject_slices ENABLE ALWAYS TRIGGER trail_subject_slices_no_truncate;

-- The partition of trail_groups for the UTC calendar month of a day, created if missing:
-- standalone first, with a CHECK constraint matching its bounds, then ATTACHed (which locks the
-- parent only against other schema changes, never against readers or the worker's inserts). The
-- worker calls it before it stores the month's first group, and between batches for the next.
CREATE FUNCTION pii_audit._month_partition(day date) RETURNS regclass
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first date := date_trunc('month', day)::date;
    name text := 'trail_groups_p' || to_char(first, 'YYYYMM');
    lo text := to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi text := to_char((first + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00';
    existing regclass := to_regclass('pii_audit.' || name);
    old_timeout text := current_setting('lock_timeout');
BEGIN
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    EXECUTE format('CREATE TABLE pii_audit.%I (LIKE pii_audit.trail_groups INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE, '
                   'CONSTRAINT %I CHECK (min_time >= %L AND min_time < %L))',
                   name, name || '_month', lo, hi);
    EXECUTE format('ALTER TABLE pii_audit.trail_groups ATTACH PARTITION pii_audit.%I '
                   'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    -- Statement triggers are not inherited; row triggers are, but not their ENABLE ALWAYS.
    EXECUTE format('CREATE TRIGGER trail_no_truncate BEFORE TRUNCATE ON pii_audit.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change()', name);
    EXECUTE format('ALTER TABLE pii_audit.%I ENABLE ALWAYS TRIGGER trail_no_truncate', name);
    EXECUTE format('ALTER TABLE pii_audit.%I ENABLE ALWAYS TRIGGER trail_append_only', name);
    EXECUTE format('REVOKE ALL ON pii_audit.%I FROM PUBLIC', name);
    PERFORM set_config('lock_timeout', old_timeout, true);
    RETURN ('pii_audit.' || name)::regclass;
END
$$;
REVOKE ALL ON FUNCTION pii_audit._month_partition(date) FROM PUBLIC;

REVOKE ALL ON pii_audit.trail_groups, pii_audit.trail_sessions, pii_audit.trail_statements,
              pii_audit.trail_subject_index, pii_audit.trail_subject_slices,
              pii_audit.events, pii_audit.worker_state FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_audit._events_in(bigint, bigint), pii_audit._subject_groups(bigint),
              pii_audit.events_after(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.events_after(bigint, integer) TO pii_audit_officer;

-- pg_dump keeps the trail (each month's partition is an ordinary table to pg_dump, dumped with
-- its rows) and the categories an administrator added.
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_statements', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_subject_slices', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_subject_index', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.categories', 'WHERE NOT builtin');

-- ---------------------------------------------------------------- views
CREATE VIEW pii_audit.access_log AS
SELECT event_id, event_time, database_name, session_user_name, current_user_name, end_user,
       application_name, client_addr, command, relation, columns, categories, row_count,
       query_id, query_text, status, kind, backend_pid, nesting_level, query_truncated,
       recorded_at, detail, subject_count, subjects_truncated, subject_count_estimated
FROM pii_audit.events WHERE kind <> 'login';
COMMENT ON VIEW pii_audit.access_log IS
    'one row per statement execution per relation whose labelled columns it read; also label changes and gaps (kind)';

-- Connection attempts (ClientAuthentication hook): failures are what credential stuffing leaves.
CREATE VIEW pii_audit.login_log AS
SELECT event_id, event_time, database_name, session_user_name AS user_name, application_name,
       client_addr, backend_pid, status, recorded_at
FROM pii_audit.events WHERE kind = 'login';
COMMENT ON VIEW pii_audit.login_log IS
    'one row per connection attempt that reached authentication: completed (logged in) or failed';

CREATE VIEW pii_audit.label_changes AS
SELECT event_id, event_time, session_user_name, current_user_name, relation, columns[1] AS column_name,
       categories, status, detail
FROM pii_audit.events WHERE kind = 'label_change';

CREATE FUNCTION pii_audit._status(
    OUT queue_capacity_bytes bigint, OUT queue_depth_bytes bigint, OUT events_enqueued bigint,
    OUT events_persisted bigint, OUT events_dropped bigint, OUT capture_errors bigint,
    OUT worker_pid integer, OUT last_flush timestamptz, OUT state text,
    OUT audit_database text, OUT enabled boolean)
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_status';
REVOKE ALL ON FUNCTION pii_audit._status() FROM PUBLIC;
-- Functions in a view run with the caller's EXECUTE right, unlike the view's table reads.
GRANT EXECUTE ON FUNCTION pii_audit._status() TO pii_audit_officer;

CREATE VIEW pii_audit.status AS SELECT * FROM pii_audit._status();
COMMENT ON VIEW pii_audit.status IS
    'health of capture and storage since the server started (counters live in shared memory)';

CREATE VIEW pii_audit.labelled_columns AS
SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
       s.label,
       ARRAY(SELECT lower(btrim(t)) FROM unnest(string_to_array(s.label, ',')) AS t
             WHERE lower(btrim(t)) <> 'subject_key') AS categories,
       EXISTS (SELECT FROM unnest(string_to_array(s.label, ',')) AS t
               WHERE lower(btrim(t)) = 'subject_key') AS subject_key,
       c.oid AS relation_oid, a.attnum
FROM pg_catalog.pg_seclabel s
JOIN pg_catalog.pg_class c ON c.oid = s.objoid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = s.objoid AND a.attnum = s.objsubid
WHERE s.provider = 'pii' AND s.classoid = 'pg_catalog.pg_class'::regclass AND s.objsubid > 0;

REVOKE ALL ON pii_audit.access_log, pii_audit.label_changes, pii_audit.status,
              pii_audit.labelled_columns, pii_audit.login_log FROM PUBLIC;
GRANT SELECT ON pii_audit.access_log, pii_audit.label_changes, pii_audit.status,
                pii_audit.labelled_columns, pii_audit.login_log TO pii_audit_officer;
GRANT SELECT ON pii_audit.labelled_columns TO pii_audit_admin;

-- ---------------------------------------------------------------- data subjects
-- Subject identifiers are never stored: events hold HMAC-SHA-256 hashes keyed by a secret in
-- the data directory (pii_audit_subject.key). These functions hash on the server's side.
CREATE FUNCTION pii_audit.subject_hash(identifier text) RETURNS bigint
    LANGUAGE c STRICT STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_subject_hash_sql';
COMMENT ON FUNCTION pii_audit.subject_hash(text) IS
    'the keyed hash pii_audit stores for a subject identifier (the text of a subject_key column)';

CREATE FUNCTION pii_audit.subject_access(identifier text, since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL)
RETURNS TABLE (event_id bigint, event_time timestamptz, database_name text,
               session_user_name text, current_user_name text, end_user text,
               application_name text, client_addr inet, command text, relation text,
               columns text[], categories text[], row_count bigint, subject_count bigint,
               query_text text, status text, match text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bigint;
BEGIN
    IF identifier IS NULL THEN
        RAISE EXCEPTION 'identifier must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the value of the subject_key column, e.g. a phone number or customer id, as text.';
    END IF;
    IF since IS NOT NULL AND until IS NOT NULL AND since > until THEN
        RAISE EXCEPTION 'time range is reversed: since (%) is after until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    h := pii_audit.subject_hash(identifier);
    RETURN QUERY
    SELECT e.event_id, e.event_time, s.database_name, s.session_user_name, s.current_user_name,
           s.end_user, s.application_name, s.client_addr, st.command, st.relation, st.columns,
           st.categories, e.row_count, e.subject_count, st.query_text, e.status,
           CASE WHEN h = ANY (e.subjects) THEN 'recorded'
                ELSE 'possible: the statement read more subjects than were recorded' END
    FROM (SELECT DISTINCT c.first_event_id, c.min_time, c.max_time
          FROM pii_audit._subject_groups(h) c) c
    JOIN pii_audit.trail_groups g ON g.first_event_id = c.first_event_id
         AND g.min_time BETWEEN c.min_time AND c.max_time
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
    LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id
    WHERE g.kind = 'read' AND e.subject_count IS NOT NULL
      AND (h = ANY (e.subjects) OR e.subjects_truncated)
      AND (since IS NULL OR e.event_time >= since)
      AND (until IS NULL OR e.event_time < until)
    ORDER BY e.event_id;
END
$$;
COMMENT ON FUNCTION pii_audit.subject_access(text, timestamptz, timestamptz) IS
    'every recorded read of rows about one person (by subject_key value), across all keyed tables';

CREATE FUNCTION pii_audit.breach_scope(who text, since timestamptz, until timestamptz)
RETURNS TABLE (subject_hash bigint, identifier text, relations text[], reads bigint,
               categories text[], first_read timestamptz, last_read timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
    key record;
    truncated_events bigint;
BEGIN
    IF who IS NULL OR since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'who, since and until must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'who is a role or a pii_audit.end_user; since and until bound the time range.';
    END IF;
    IF since > until THEN
        RAISE EXCEPTION 'time range is reversed: since (%) is after until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = who)
       AND NOT EXISTS (SELECT FROM pii_audit.trail_sessions s WHERE s.end_user = who) THEN
        RAISE EXCEPTION 'no role or end user named "%"', who
            USING ERRCODE = 'undefined_object',
                  HINT = 'who is a role name or a value applications set in pii_audit.end_user.';
    END IF;

    -- One row per (subject, statement) read by who in the range: the sessions of who, their
    -- groups in the range (a group's events lie within an hour of its min_time), their events.
    CREATE TEMP TABLE IF NOT EXISTS pii_audit_breach_events (
        subject_hash bigint, statement_id bigint, database_name text, reads bigint,
        first_read timestamptz, last_read timestamptz) ON COMMIT DROP;
    TRUNCATE pii_audit_breach_events;
    INSERT INTO pii_audit_breach_events
    SELECT sh.h, g.statement_id, s.database_name, count(*), min(e.event_time), max(e.event_time)
    FROM pii_audit.trail_sessions s
    JOIN pii_audit.trail_groups g ON g.session_id = s.session_id
         AND g.min_time >= since - interval '1 hour' AND g.min_time < until
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    CROSS JOIN LATERAL unnest(e.subjects) AS sh(h)
    WHERE (s.end_user = who OR (s.end_user IS NULL AND (s.current_user_name = who OR s.session_user_name = who)))
      AND g.kind = 'read' AND e.event_time >= since AND e.event_time < until
    GROUP BY sh.h, g.statement_id, s.database_name;
    ANALYZE pii_audit_breach_events;

    SELECT count(*) INTO truncated_events
    FROM pii_audit.trail_sessions s
    JOIN pii_audit.trail_groups g ON g.session_id = s.session_id
         AND g.min_time >= since - interval '1 hour' AND g.min_time < until
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    WHERE (s.end_user = who OR (s.end_user IS NULL AND (s.current_user_name = who OR s.session_user_name = who)))
      AND g.kind = 'read' AND e.subjects_truncated
      AND e.event_time >= since AND e.event_time < until;
    IF truncated_events > 0 THEN
        RAISE WARNING '% statements by "%" in this range read more subjects than were recorded; the list below is incomplete', truncated_events, who
            USING HINT = 'See subject_count in pii_audit.access_log; raise pii_audit.max_subjects_per_event to record more.';
    END IF;

    -- Live identifiers: hash the key columns of each keyed table read in this database.
    CREATE TEMP TABLE IF NOT EXISTS pii_audit_breach_ids (subject_hash bigint, identifier text)
        ON COMMIT DROP;
    TRUNCATE pii_audit_breach_ids;
    FOR rel IN SELECT DISTINCT st.relation_oid
               FROM (SELECT DISTINCT b.statement_id FROM pii_audit_breach_events b
                     WHERE b.database_name = current_database()) b
               JOIN pii_audit.trail_statements st ON st.statement_id = b.statement_id
               WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = st.relation_oid) LOOP
        -- Identifiers as the capture makes them: char(n) without padding (::text trims it),
        -- numeric without trailing fractional zeros.
        FOR key IN SELECT a.attname,
                          CASE WHEN coalesce(nullif(t.typbasetype, 0), t.oid) = 'numeric'::regtype
                               THEN 'trim_scale(k)::text' ELSE 'k::text' END AS ident
                   FROM pg_seclabel s
                   JOIN pg_attribute a ON a.attrelid = s.objoid AND a.attnum = s.objsubid
                   JOIN pg_type t ON t.oid = a.atttypid
                   WHERE s.provider = 'pii' AND s.classoid = 'pg_class'::regclass
                     AND s.objoid = rel.relation_oid AND NOT a.attisdropped
                     AND EXISTS (SELECT FROM unnest(string_to_array(s.label, ',')) t
                                 WHERE lower(btrim(t)) = 'subject_key') LOOP
            EXECUTE format(
                'INSERT INTO pii_audit_breach_ids
                 SELECT DISTINCT h, v FROM (SELECT %s AS v, pii_audit.subject_hash(%s) AS h
                                            FROM %s AS t(k) WHERE k IS NOT NULL) x
                 WHERE h IN (SELECT subject_hash FROM pii_audit_breach_events)',
                key.ident, key.ident,
                format('(SELECT %I FROM %s)', key.attname, rel.relation_oid::regclass));
        END LOOP;
    END LOOP;

    -- Identifiers once per subject, relations and categories through the statements: one
    -- aggregation each, no subquery per subject.
    RETURN QUERY
    WITH per_subject AS (
        SELECT b.subject_hash, array_agg(DISTINCT st.relation ORDER BY st.relation) AS relations,
               sum(b.reads)::bigint AS reads, min(b.first_read) AS first_read,
               max(b.last_read) AS last_read
        FROM pii_audit_breach_events b
        JOIN pii_audit.trail_statements st ON st.statement_id = b.statement_id
        GROUP BY b.subject_hash
    ), per_subject_categories AS (
        SELECT b.subject_hash, array_agg(DISTINCT c ORDER BY c) AS categories
        FROM pii_audit_breach_events b
        JOIN pii_audit.trail_statements st ON st.statement_id = b.statement_id
        CROSS JOIN LATERAL unnest(st.categories) AS c
        GROUP BY b.subject_hash
    ), ids AS (
        SELECT i.subject_hash, min(i.identifier) AS identifier
        FROM pii_audit_breach_ids i GROUP BY i.subject_hash
    )
    SELECT p.subject_hash, ids.identifier, p.relations, p.reads,
           coalesce(pc.categories, '{}'::text[]), p.first_read, p.last_read
    FROM per_subject p
    LEFT JOIN per_subject_categories pc ON pc.subject_hash = p.subject_hash
    LEFT JOIN ids ON ids.subject_hash = p.subject_hash
    ORDER BY p.first_read, p.subject_hash;
END
$$;
COMMENT ON FUNCTION pii_audit.breach_scope(text, timestamptz, timestamptz) IS
    'the distinct people whose rows a role or end user read in a time range: a notification list';

REVOKE ALL ON FUNCTION pii_audit.subject_hash(text), pii_audit.subject_access(text, timestamptz, timestamptz),
                       pii_audit.breach_scope(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.subject_hash(text), pii_audit.subject_access(text, timestamptz, timestamptz),
                          pii_audit.breach_scope(text, timestamptz, timestamptz) TO pii_audit_officer;

-- ---------------------------------------------------------------- insider detection
-- The background worker scores every stored event (see README, "Insider detection") and writes
-- alerts here in the same transaction as the events that raised them.
CREATE TABLE pii_audit.alerts (
    alert_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_time timestamptz NOT NULL,   -- time of the event that raised the alert
    raised_at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,               -- the end user if the application named one, else the role
    peer_group text NOT NULL,
    detector text NOT NULL CHECK (detector IN ('sensitive_categories', 'distinct_subjects',
        'no_business_reason', 'bulk_reading', 'unusual_hours', 'departed_or_dormant',
        'machine_like_access', 'login_abuse')),
    score integer NOT NULL CHECK (score BETWEEN 0 AND 100),
    severity text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    explanation text NOT NULL,
    evidence bigint[] NOT NULL,        -- event_ids in pii_audit.events, oldest first
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'closed')),
    status_by text,                    -- the officer who last changed status
    status_at timestamptz,
    note text,
    -- After a crash the worker re-scores events stored since its last saved baseline; the same
    -- alert must not appear twice.
    UNIQUE (actor, detector, alert_time, severity)
);
COMMENT ON TABLE pii_audit.alerts IS
    'explained insider alerts; officers change status and note only';

-- Officers may change status and note (column privileges); who and when are filled in here,
-- and nothing else about an alert may change, for anyone.
CREATE FUNCTION pii_audit._alert_review() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'pii_audit alerts cannot be deleted or truncated'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Close an alert instead: UPDATE pii_audit.alerts SET status = ''closed'', note = ''...''.';
    END IF;
    IF (NEW.alert_id, NEW.alert_time, NEW.raised_at, NEW.actor, NEW.peer_group, NEW.detector,
        NEW.score, NEW.severity, NEW.explanation, NEW.evidence)
       IS DISTINCT FROM
       (OLD.alert_id, OLD.alert_time, OLD.raised_at, OLD.actor, OLD.peer_group, OLD.detector,
        OLD.score, OLD.severity, OLD.explanation, OLD.evidence) THEN
        RAISE EXCEPTION 'only status and note of a pii_audit alert can be changed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.note IS DISTINCT FROM OLD.note THEN
        NEW.status_by := current_user;
        NEW.status_at := now();
    ELSE
        NEW.status_by := OLD.status_by;
        NEW.status_at := OLD.status_at;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER alerts_review BEFORE UPDATE OR DELETE ON pii_audit.alerts
    FOR EACH ROW EXECUTE FUNCTION pii_audit._alert_review();
CREATE TRIGGER alerts_no_truncate BEFORE TRUNCATE ON pii_audit.alerts
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._alert_review();
ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_review;
ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_no_truncate;

-- Peer groups: by default an actor's peers are the others who log in with the same role. The DBA
-- maps actors (roles or end users) to other groups here.
CREATE TABLE pii_audit.peer_groups (
    actor text PRIMARY KEY CHECK (actor <> ''),
    peer_group text NOT NULL CHECK (peer_group <> '')
);
COMMENT ON TABLE pii_audit.peer_groups IS
    'actor -> peer group for insider scoring; actors not listed are grouped by login role';

-- Accounts whose owner left: any later activity is a critical alert.
CREATE TABLE pii_audit.departed (
    actor text PRIMARY KEY,
    departed_at timestamptz NOT NULL,
    marked_by text NOT NULL,
    cleared_at timestamptz,     -- set by clear_departed (a mistaken mark, or the person returned)
    cleared_by text
);

-- The worker's learned baselines, saved every pii_audit.baseline_save_interval and at shutdown.
CREATE TABLE pii_audit.scorer_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    scored_upto bigint,          -- last event_id the saved state has learned from
    saved_at timestamptz,
    state bytea                  -- opaque, versioned by the scorer library
);
ALTER TABLE pii_audit.scorer_state ALTER COLUMN state SET STORAGE EXTERNAL;
INSERT INTO pii_audit.scorer_state DEFAULT VALUES;

-- Tells the worker that peer groups or departed accounts changed, once the transaction commits.
CREATE FUNCTION pii_audit._scorer_inputs_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'pii_audit_scorer_inputs_changed';
CREATE TRIGGER peer_groups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON pii_audit.peer_groups FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._scorer_inputs_changed();
CREATE TRIGGER departed_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON pii_audit.departed FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._scorer_inputs_changed();

CREATE FUNCTION pii_audit.mark_departed(who text, since timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF who IS NULL OR btrim(who) = '' THEN
        RAISE EXCEPTION 'who must name a role or an end user'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the role name or the pii_audit.end_user value of the person who left.';
    END IF;
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO pii_audit.departed AS d (actor, departed_at, marked_by)
    VALUES (who, since, session_user)
    ON CONFLICT (actor) DO UPDATE
        SET departed_at = EXCLUDED.departed_at, marked_by = EXCLUDED.marked_by,
            cleared_at = NULL, cleared_by = NULL;
END
$$;
COMMENT ON FUNCTION pii_audit.mark_departed(text, timestamptz) IS
    'any activity of this role or end user after since raises a critical departed_or_dormant alert';

CREATE FUNCTION pii_audit.clear_departed(who text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'who must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE pii_audit.departed SET cleared_at = now(), cleared_by = session_user
    WHERE actor = who AND cleared_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION '"%" is not marked as departed', who
            USING ERRCODE = 'undefined_object',
                  HINT = 'See pii_audit.departed.';
    END IF;
END
$$;

CREATE FUNCTION pii_audit._scorer_status(
    OUT state text, OUT actors bigint, OUT peer_groups bigint, OUT relations bigint,
    OUT state_bytes bigint, OUT scored_upto bigint, OUT alerts_raised bigint,
    OUT last_save timestamptz, OUT relations_loaded_at timestamptz, OUT last_error text,
    OUT alert_threshold integer)
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_scorer_status';
CREATE VIEW pii_audit.scorer_status AS SELECT * FROM pii_audit._scorer_status();
COMMENT ON VIEW pii_audit.scorer_status IS
    'what insider scoring in the worker is doing: state, actors, relations, last save, last error';

REVOKE ALL ON pii_audit.alerts, pii_audit.peer_groups, pii_audit.departed, pii_audit.scorer_state,
    pii_audit.scorer_status FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_audit._scorer_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit._scorer_status() TO pii_audit_officer;
GRANT SELECT ON pii_audit.scorer_status TO pii_audit_officer;
REVOKE ALL ON FUNCTION pii_audit._scorer_inputs_changed(), pii_audit.mark_departed(text, timestamptz),
    pii_audit.clear_departed(text) FROM PUBLIC;
GRANT SELECT ON pii_audit.alerts, pii_audit.peer_groups, pii_audit.departed TO pii_audit_officer;
GRANT UPDATE (status, note) ON pii_audit.alerts TO pii_audit_officer;
GRANT SELECT, INSERT, UPDATE, DELETE ON pii_audit.peer_groups TO pii_audit_admin;
GRANT SELECT ON pii_audit.departed TO pii_audit_admin;
GRANT EXECUTE ON FUNCTION pii_audit.mark_departed(text, timestamptz), pii_audit.clear_departed(text)
    TO pii_audit_admin;

SELECT pg_catalog.pg_extension_config_dump('pii_audit.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.peer_groups', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.departed', '');

-- Known events: periods the DBA declares in advance (an audit week, a migration, a campaign) so
-- that insider scoring expects a peer group's unusual work. peer_group NULL: every group.
CREATE TABLE pii_audit.known_events (
    event_name text PRIMARY KEY
        CONSTRAINT known_events_name_not_blank CHECK (btrim(event_name) <> ''),
    peer_group text CONSTRAINT known_events_peer_group_not_blank CHECK (btrim(peer_group) <> ''),
    starts timestamptz NOT NULL,
    ends timestamptz NOT NULL,
    note text,
    CONSTRAINT known_events_ends_after_starts CHECK (ends > starts),
    CONSTRAINT known_events_at_most_a_year CHECK (ends <= starts + interval '366 days')
);
COMMENT ON TABLE pii_audit.known_events IS
    'declared events: during [starts, ends) the peer group (NULL: every group) may read 5x the '
    'volumes that alert on other days, and categories new to it, without an insider alert';
CREATE TRIGGER known_events_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON pii_audit.known_events FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._scorer_inputs_changed();
REVOKE ALL ON pii_audit.known_events FROM PUBLIC;
GRANT SELECT ON pii_audit.known_events TO pii_audit_officer;
GRANT SELECT, INSERT, UPDATE, DELETE ON pii_audit.known_events TO pii_audit_admin;
SELECT pg_catalog.pg_extension_config_dump('pii_audit.known_events', '');
