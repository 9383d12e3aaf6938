-- pii_audit 0.1.0 -> 0.2.0: the trail is stored in groups (pii_audit.trail_groups, partitioned
-- by day, with a subject index); see the install script and the README, "How the trail is
-- stored". Every stored event moves into the new tables as a group of its own (events stored
-- from now on are grouped by the worker); the views and functions keep their columns.
\echo Use "ALTER EXTENSION pii_audit UPDATE TO '0.2.0'" to load this file. \quit

-- The worker of a 0.2.0 library does not write the 0.1.0 tables (it waits, events stay in the
-- queue); this script runs in one transaction, and the worker goes on once it committed.

CREATE OR REPLACE FUNCTION pii_audit._refuse_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A month's partition of trail_groups is named for the table it belongs to.
    RAISE EXCEPTION 'the pii_audit trail is append-only: % on % is not allowed', TG_OP,
        regexp_replace(TG_TABLE_NAME, '^trail_groups_p[0-9]{6}$', 'trail_groups')
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE INDEX trail_sessions_users ON pii_audit.trail_sessions (session_user_name);
CREATE INDEX trail_sessions_current_users ON pii_audit.trail_sessions (current_user_name);
CREATE INDEX trail_sessions_end_users ON pii_audit.trail_sessions (end_user);
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

-- One event of the 0.1.0 trail as the payload of a group of its own (used below only).
CREATE FUNCTION pii_audit._event_payload(event_time timestamptz, status text, row_count bigint,
    detail text, subject_count bigint, subjects bigint[], subjects_truncated boolean,
    subject_count_estimated boolean)
RETURNS bytea LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'pii_audit_event_payload';

CREATE TRIGGER trail_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_groups
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_no_truncate BEFORE TRUNCATE ON pii_audit.trail_groups
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

-- Move the stored events.
SELECT pii_audit._month_partition(d)
FROM (SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC')::date AS d
      FROM pii_audit.trail) months;
INSERT INTO pii_audit.trail_groups
SELECT t.event_id, 1, t.event_time, t.event_time, t.recorded_at, t.session_id, t.statement_id,
       t.backend_pid, t.nesting_level, t.kind,
       pii_audit._event_payload(t.event_time, t.status, t.row_count, t.detail, t.subject_count,
                                t.subjects, t.subjects_truncated, t.subject_count_estimated)
FROM pii_audit.trail t ORDER BY t.event_id;
DROP FUNCTION pii_audit._event_payload(timestamptz, text, bigint, text, bigint, bigint[], boolean,
                                       boolean);

-- The views over the old table go, and come back over the new ones.
DROP VIEW pii_audit.access_log, pii_audit.login_log, pii_audit.label_changes, pii_audit.events;
ALTER EXTENSION pii_audit DROP TABLE pii_audit.trail;
DROP TABLE pii_audit.trail;
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

GRANT SELECT ON pii_audit.access_log, pii_audit.label_changes, pii_audit.login_log
    TO pii_audit_officer;
REVOKE ALL ON pii_audit.trail_groups, pii_audit.trail_sessions, pii_audit.trail_statements,
              pii_audit.trail_subject_index, pii_audit.trail_subject_slices,
              pii_audit.events, pii_audit.worker_state FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_audit._events_in(bigint, bigint), pii_audit._subject_groups(bigint),
              pii_audit.events_after(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.events_after(bigint, integer) TO pii_audit_officer;

-- pg_dump keeps the trail (each month's partition is an ordinary table to pg_dump, dumped with
-- its rows) and the categories an administrator added.
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_subject_slices', '');
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_subject_index', '');

-- The officers' functions read the new tables.
CREATE OR REPLACE FUNCTION pii_audit.subject_access(identifier text, since timestamptz DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION pii_audit.breach_scope(who text, since timestamptz, until timestamptz)
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
