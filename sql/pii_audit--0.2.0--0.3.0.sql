-- pii_audit 0.2.0 -> 0.3.0. There is no install script of 0.3.0: CREATE EXTENSION runs
-- pii_audit--0.2.0.sql and then this script, so new installs and upgraded ones are the same.
\echo Use "ALTER EXTENSION pii_audit UPDATE TO '0.3.0'" to load this file. \quit

-- ---------------------------------------------------------------- retention
-- Events leave the trail a whole month's partition at a time, by the worker (pii_audit.retention)
-- or by a superuser (pii_audit.remove_events); each removal is itself an event of kind 'removal':
-- which partition, the ids and times of the events removed, how many (row_count), when, by whom
-- and why (detail). Nothing is removed that a registered export has not delivered yet.
ALTER TABLE pii_audit.trail_groups DROP CONSTRAINT trail_groups_kind_check,
    ADD CONSTRAINT trail_groups_kind_check
        CHECK (kind IN ('read', 'label_change', 'gap', 'login', 'removal'));
COMMENT ON VIEW pii_audit.events IS
    'every stored event (reads, label changes, gaps, logins, removals) with its session and statement';
COMMENT ON VIEW pii_audit.access_log IS
    'one row per statement execution per relation whose labelled columns it read; also label changes, gaps and removals (kind)';

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_audit_siem') THEN
        CREATE ROLE pii_audit_siem NOLOGIN;
        COMMENT ON ROLE pii_audit_siem IS
            'pulls the pii_audit export (export, export_alerts, export_events, export_alert_events) and moves its export checkpoint, nothing else';
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA pii_audit TO pii_audit_siem;

-- How far each SIEM export has delivered the trail (pii-audit-export keeps its own row up to
-- date). Retention removes nothing past the lowest.
CREATE TABLE pii_audit.export_checkpoints (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    delivered_event_id bigint NOT NULL CHECK (delivered_event_id >= 0),
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by text NOT NULL DEFAULT session_user,
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pii_audit.export_checkpoints FROM PUBLIC;
GRANT SELECT ON pii_audit.export_checkpoints TO pii_audit_officer, pii_audit_admin, pii_audit_siem;
SELECT pg_catalog.pg_extension_config_dump('pii_audit.export_checkpoints', '');
COMMENT ON TABLE pii_audit.export_checkpoints IS
    'how far each registered SIEM export has delivered the trail; retention waits for the lowest';

-- Registers an export, or moves its checkpoint forward (never back: an export that starts again
-- from an older id delivers events twice, which the id deduplicates, and must not release
-- events it already held).
CREATE FUNCTION pii_audit.export_checkpoint(name text, delivered_event_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stored bigint;
BEGIN
    IF name IS NULL OR delivered_event_id IS NULL THEN
        RAISE EXCEPTION 'name and delivered_event_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid export checkpoint name "%"', left(name, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Up to 63 letters, digits, "_", "." and "-", starting with a letter or digit.';
    END IF;
    IF delivered_event_id < 0 THEN
        RAISE EXCEPTION 'delivered_event_id must not be negative (got %)', delivered_event_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT w.last_event_id INTO stored FROM pii_audit.worker_state w;
    IF delivered_event_id > stored THEN
        RAISE EXCEPTION 'event % is not in the trail yet (the last stored event is %)',
            delivered_event_id, stored
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A checkpoint says what was delivered; deliver events before checkpointing them.';
    END IF;
    INSERT INTO pii_audit.export_checkpoints AS c (name, delivered_event_id)
    VALUES (export_checkpoint.name, export_checkpoint.delivered_event_id)
    ON CONFLICT ON CONSTRAINT export_checkpoints_pkey DO UPDATE
        SET delivered_event_id = greatest(c.delivered_event_id, excluded.delivered_event_id),
            updated_at = now();
END
$$;
REVOKE ALL ON FUNCTION pii_audit.export_checkpoint(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.export_checkpoint(text, bigint)
    TO pii_audit_siem, pii_audit_admin;
COMMENT ON FUNCTION pii_audit.export_checkpoint(text, bigint) IS
    'registers a SIEM export or moves its checkpoint forward; retention keeps what it has not delivered';

-- Unregisters an export that is gone for good, so that its checkpoint no longer holds events.
CREATE FUNCTION pii_audit.drop_export_checkpoint(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM pii_audit.export_checkpoints c WHERE c.name = drop_export_checkpoint.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'there is no export checkpoint "%"', drop_export_checkpoint.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM pii_audit.export_checkpoints lists them.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pii_audit.drop_export_checkpoint(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.drop_export_checkpoint(text) TO pii_audit_admin;

-- Announces the removal of a partition, just before its DROP; the record reaches the trail when
-- the transaction ends, if the DROP happened (as completed if it committed, failed if not).
CREATE FUNCTION pii_audit._record_removal(relid oid, relation text, events bigint, detail text)
RETURNS void LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'pii_audit_record_removal';
REVOKE ALL ON FUNCTION pii_audit._record_removal(oid, text, bigint, text) FROM PUBLIC;

-- ---------------------------------------------------------------- subject_access without
-- planning every month: the groups the index names are fetched from the months their slice's
-- time bounds meet, through each month's index on first_event_id (group_fetch.cpp). Joining
-- trail_groups made the planner look at every partition first: 80-130 ms in a new session over
-- 14 months, more with every month kept.
CREATE FUNCTION pii_audit._trail_group(first_event_id bigint, not_before timestamptz,
                                       not_after timestamptz)
RETURNS SETOF pii_audit.trail_groups LANGUAGE c STRICT STABLE ROWS 1
AS 'MODULE_PATHNAME', 'pii_audit_trail_group';
REVOKE ALL ON FUNCTION pii_audit._trail_group(bigint, timestamptz, timestamptz) FROM PUBLIC;

-- The result types gain the server each read happened on (server_name, see "server names"
-- below; a hot standby's reads are in this trail too): officers answering "who read this
-- person's data" need to know where. A function's result type cannot be changed in place.
DROP FUNCTION pii_audit.subject_access(text, timestamptz, timestamptz);
DROP FUNCTION pii_audit.breach_scope(text, timestamptz, timestamptz);
CREATE FUNCTION pii_audit.subject_access(identifier text, since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL)
RETURNS TABLE (event_id bigint, event_time timestamptz, database_name text,
               session_user_name text, current_user_name text, end_user text,
               application_name text, client_addr inet, command text, relation text,
               columns text[], categories text[], row_count bigint, subject_count bigint,
               query_text text, status text, match text, server_name text)
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
                ELSE 'possible: the statement read more subjects than were recorded' END,
           s.server_name
    FROM (SELECT DISTINCT c.first_event_id, c.min_time, c.max_time
          FROM pii_audit._subject_groups(h) c) c
    CROSS JOIN LATERAL pii_audit._trail_group(c.first_event_id, c.min_time, c.max_time) g
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
    'every recorded read of rows about one person (by subject_key value), across all keyed tables, with the server it happened on';

CREATE FUNCTION pii_audit.breach_scope(who text, since timestamptz, until timestamptz)
RETURNS TABLE (subject_hash bigint, identifier text, relations text[], reads bigint,
               categories text[], first_read timestamptz, last_read timestamptz,
               server_names text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
    key record;
    truncated_events bigint;
    unnamed bigint[];
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
        subject_hash bigint, statement_id bigint, database_name text, server_name text,
        reads bigint, first_read timestamptz, last_read timestamptz) ON COMMIT DROP;
    TRUNCATE pii_audit_breach_events;
    -- The events are decoded once: the same pass fills the table and counts the statements
    -- whose subjects were not all recorded.
    WITH ev AS (
        SELECT g.statement_id, s.database_name, s.server_name, e.event_time, e.subjects,
               e.subjects_truncated
        FROM pii_audit.trail_sessions s
        JOIN pii_audit.trail_groups g ON g.session_id = s.session_id
             AND g.min_time >= since - interval '1 hour' AND g.min_time < until
        CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
        WHERE (s.end_user = who OR (s.end_user IS NULL AND (s.current_user_name = who OR s.session_user_name = who)))
          AND g.kind = 'read' AND e.event_time >= since AND e.event_time < until
    ), stored AS (
        INSERT INTO pii_audit_breach_events
        SELECT sh.h, ev.statement_id, ev.database_name, ev.server_name, count(*),
               min(ev.event_time), max(ev.event_time)
        FROM ev CROSS JOIN LATERAL unnest(ev.subjects) AS sh(h)
        GROUP BY sh.h, ev.statement_id, ev.database_name, ev.server_name
    )
    SELECT count(*) FILTER (WHERE ev.subjects_truncated) INTO truncated_events FROM ev;
    ANALYZE pii_audit_breach_events;

    IF truncated_events > 0 THEN
        RAISE WARNING '% statements by "%" in this range read more subjects than were recorded; the list below is incomplete', truncated_events, who
            USING HINT = 'See subject_count in pii_audit.access_log; raise pii_audit.max_subjects_per_event to record more.';
    END IF;

    -- Live identifiers: the key columns of each keyed table read in this database, read (an
    -- audited read) and hashed row by row in C until every hash is named.
    CREATE TEMP TABLE IF NOT EXISTS pii_audit_breach_ids (subject_hash bigint, identifier text)
        ON COMMIT DROP;
    TRUNCATE pii_audit_breach_ids;
    FOR rel IN SELECT DISTINCT st.relation_oid
               FROM (SELECT DISTINCT b.statement_id FROM pii_audit_breach_events b
                     WHERE b.database_name = current_database()) b
               JOIN pii_audit.trail_statements st ON st.statement_id = b.statement_id
               WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = st.relation_oid
                             AND c.relkind IN ('r', 'p', 'm'))
               ORDER BY st.relation_oid LOOP
        FOR key IN SELECT a.attname
                   FROM pg_seclabel s
                   JOIN pg_attribute a ON a.attrelid = s.objoid AND a.attnum = s.objsubid
                   WHERE s.provider = 'pii' AND s.classoid = 'pg_class'::regclass
                     AND s.objoid = rel.relation_oid AND NOT a.attisdropped
                     AND EXISTS (SELECT FROM unnest(string_to_array(s.label, ',')) t
                                 WHERE lower(btrim(t)) = 'subject_key') LOOP
            SELECT array_agg(DISTINCT b.subject_hash) INTO unnamed
            FROM pii_audit_breach_events b
            WHERE NOT EXISTS (SELECT FROM pii_audit_breach_ids i WHERE i.subject_hash = b.subject_hash);
            EXIT WHEN unnamed IS NULL;
            INSERT INTO pii_audit_breach_ids
            SELECT i.subject_hash, i.identifier
            FROM pii_audit._identify_subjects(rel.relation_oid, key.attname, unnamed) i;
        END LOOP;
    END LOOP;

    -- Identifiers once per subject, relations and categories through the statements: one
    -- aggregation each, no subquery per subject.
    RETURN QUERY
    WITH per_subject AS (
        SELECT b.subject_hash, array_agg(DISTINCT st.relation ORDER BY st.relation) AS relations,
               sum(b.reads)::bigint AS reads, min(b.first_read) AS first_read,
               max(b.last_read) AS last_read,
               array_remove(array_agg(DISTINCT b.server_name ORDER BY b.server_name), NULL)
                   AS server_names
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
           coalesce(pc.categories, '{}'::text[]), p.first_read, p.last_read, p.server_names
    FROM per_subject p
    LEFT JOIN per_subject_categories pc ON pc.subject_hash = p.subject_hash
    LEFT JOIN ids ON ids.subject_hash = p.subject_hash
    ORDER BY p.first_read, p.subject_hash;
END
$$;
COMMENT ON FUNCTION pii_audit.breach_scope(text, timestamptz, timestamptz) IS
    'the distinct people whose rows a role or end user read in a time range, and on which servers: a notification list';
REVOKE ALL ON FUNCTION pii_audit.subject_access(text, timestamptz, timestamptz),
                       pii_audit.breach_scope(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.subject_access(text, timestamptz, timestamptz),
                          pii_audit.breach_scope(text, timestamptz, timestamptz) TO pii_audit_officer;

-- ---------------------------------------------------------------- subject index upkeep
-- The worker writes small slices (level 0, pii_audit.subject_index_slice entries), so that few
-- reads lie after the last slice, where subject_access has to read groups; a maintenance process
-- merges them, 16 at a time, into slices of the next level (up to level 2), so that a lookup
-- probes a few dozen slices however long the trail. See subject_slice.h for the rows.
ALTER TABLE pii_audit.trail_subject_slices
    ADD COLUMN level smallint NOT NULL DEFAULT 0 CHECK (level BETWEEN 0 AND 8);
-- Merges delete rows: vacuum the index after some ten thousand of them (a few merges), not
-- after a fifth of the table, so that the next slices reuse the space.
ALTER TABLE pii_audit.trail_subject_index SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000, toast.autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 10000);

CREATE FUNCTION pii_audit._merge_subject_entries(entries bytea[], shifts bigint[]) RETURNS bytea
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_merge_subject_entries';
CREATE FUNCTION pii_audit._allow_index_upkeep() RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'pii_audit_allow_index_upkeep';
CREATE FUNCTION pii_audit._index_upkeep_allowed() RETURNS boolean
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_index_upkeep_allowed';
REVOKE ALL ON FUNCTION pii_audit._merge_subject_entries(bytea[], bigint[]),
    pii_audit._allow_index_upkeep() FROM PUBLIC;

-- The index stays append-only for everyone, except for the upkeep of the extension's own
-- functions (merging slices, dropping those of removed months) in the transaction that asked.
CREATE FUNCTION pii_audit._refuse_index_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND pii_audit._index_upkeep_allowed() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the pii_audit trail is append-only: % on % is not allowed', TG_OP,
        TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION pii_audit._refuse_index_change() FROM PUBLIC;
DROP TRIGGER trail_subject_index_append_only ON pii_audit.trail_subject_index;
CREATE TRIGGER trail_subject_index_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_subject_index
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_index_change();
ALTER TABLE pii_audit.trail_subject_index ENABLE ALWAYS TRIGGER trail_subject_index_append_only;
DROP TRIGGER trail_subject_slices_append_only ON pii_audit.trail_subject_slices;
CREATE TRIGGER trail_subject_slices_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_subject_slices
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_index_change();
ALTER TABLE pii_audit.trail_subject_slices ENABLE ALWAYS TRIGGER trail_subject_slices_append_only;

-- Merges the slices whose first ids are ids (consecutive, of one level) into one slice of the
-- next level, a range of buckets at a time (bounded memory), in the caller's transaction. The
-- merged slice has the narrowest bucket width of those merged: a row of a wider slice goes to
-- the bucket its top bits name (the entries keep the hash's low 32 bits either way).
CREATE FUNCTION pii_audit._merge_subject_slices(ids bigint[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first bigint := ids[1];
    n bigint;
    min_first bigint;
    last bigint;
    bits integer;
    lvl integer;
    max_lvl integer;
    t0 timestamptz;
    t1 timestamptz;
    total bigint;
    lo integer;
    hi integer;
    step integer;
    buckets integer[];
    rows bytea[];
BEGIN
    SELECT count(*), min(s.first_event_id), max(s.last_event_id), min(s.bucket_bits),
           min(s.level), max(s.level), min(s.min_time), max(s.max_time), sum(s.entries)
    INTO n, min_first, last, bits, lvl, max_lvl, t0, t1, total
    FROM pii_audit.trail_subject_slices s WHERE s.first_event_id = ANY (ids);
    IF n < 2 OR n <> cardinality(ids) OR min_first <> first OR lvl <> max_lvl
       OR last - first >= 4294967295 THEN
        RAISE EXCEPTION 'pii_audit: subject index slices % cannot be merged', ids
            USING HINT = 'Merged slices are of one level and span fewer than 2^32 ids.';
    END IF;
    IF bits = 0 THEN
        lo := 0; hi := 0; step := 1;
    ELSE
        lo := -(1 << (bits - 1)); hi := (1 << (bits - 1)) - 1; step := greatest(1, (1 << bits) / 8);
    END IF;
    PERFORM pii_audit._allow_index_upkeep();
    WHILE lo <= hi LOOP
        -- Rows of the merged buckets lo .. lo + step - 1: in a slice of width w, the buckets
        -- from lo << (w - bits) to ((lo + step) << (w - bits)) - 1.
        SELECT array_agg(m.bucket ORDER BY m.bucket), array_agg(m.entries ORDER BY m.bucket)
        INTO buckets, rows
        FROM (SELECT x.bucket >> (s.bucket_bits - bits) AS bucket,
                     pii_audit._merge_subject_entries(array_agg(x.entries ORDER BY x.slice, x.bucket),
                                                      array_agg(x.slice - first ORDER BY x.slice, x.bucket)) AS entries
              FROM pii_audit.trail_subject_slices s
              JOIN pii_audit.trail_subject_index x ON x.slice = s.first_event_id
                   AND x.bucket BETWEEN lo << (s.bucket_bits - bits)
                                    AND ((lo + step) << (s.bucket_bits - bits)) - 1
              WHERE s.first_event_id = ANY (ids)
              GROUP BY 1) m;
        DELETE FROM pii_audit.trail_subject_index x USING pii_audit.trail_subject_slices s
        WHERE s.first_event_id = ANY (ids) AND x.slice = s.first_event_id
          AND x.bucket BETWEEN lo << (s.bucket_bits - bits)
                           AND ((lo + step) << (s.bucket_bits - bits)) - 1;
        INSERT INTO pii_audit.trail_subject_index (slice, bucket, entries)
        SELECT first, u.b, u.e FROM unnest(buckets, rows) AS u(b, e);
        lo := lo + step;
    END LOOP;
    DELETE FROM pii_audit.trail_subject_slices s WHERE s.first_event_id = ANY (ids);
    INSERT INTO pii_audit.trail_subject_slices
        (first_event_id, last_event_id, min_time, max_time, bucket_bits, entries, level)
    VALUES (first, last, t0, t1, bits, total, lvl + 1);
END
$$;
REVOKE ALL ON FUNCTION pii_audit._merge_subject_slices(bigint[]) FROM PUBLIC;

-- Merges runs of fanout consecutive slices of one level (below max_level), oldest first, at most max_merges times; returns how many merges it made. The maintenance
-- process calls it with max_merges = 1, one transaction per merge. Returns 0 at once while
-- another transaction merges or removes slices.
CREATE FUNCTION pii_audit.compact_subject_index(fanout integer DEFAULT 16,
                                                max_level integer DEFAULT 2,
                                                max_merges integer DEFAULT 1000000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
    run bigint[];
    run_level integer;
    merges integer := 0;
    merged boolean;
BEGIN
    IF fanout IS NULL OR fanout < 2 OR fanout > 1024 THEN
        RAISE EXCEPTION 'fanout must be between 2 and 1024, not %', coalesce(fanout::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_level IS NULL OR max_level < 1 OR max_level > 8 THEN
        RAISE EXCEPTION 'max_level must be between 1 and 8, not %', coalesce(max_level::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_merges IS NULL OR max_merges < 0 THEN
        RAISE EXCEPTION 'max_merges must be 0 or more, not %', coalesce(max_merges::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One upkeep of the index at a time (retention's removals take the same lock).
    IF NOT pg_try_advisory_xact_lock(1885956449, 1) THEN
        RETURN 0;
    END IF;
    LOOP
        merged := false;
        run := '{}';
        FOR s IN SELECT sl.first_event_id, sl.last_event_id, sl.level, sl.bucket_bits
                 FROM pii_audit.trail_subject_slices sl ORDER BY sl.first_event_id LOOP
            EXIT WHEN merges >= max_merges;
            IF cardinality(run) > 0 AND (s.level <> run_level
                                         OR s.last_event_id - run[1] >= 4294967295) THEN
                run := '{}';
            END IF;
            CONTINUE WHEN s.level >= max_level;
            IF cardinality(run) = 0 THEN
                run_level := s.level;
            END IF;
            run := run || s.first_event_id;
            IF cardinality(run) = fanout THEN
                PERFORM pii_audit._merge_subject_slices(run);
                merges := merges + 1;
                merged := true;
                run := '{}';
            END IF;
        END LOOP;
        EXIT WHEN NOT merged OR merges >= max_merges;
    END LOOP;
    RETURN merges;
END
$$;
COMMENT ON FUNCTION pii_audit.compact_subject_index(integer, integer, integer) IS
    'merges small slices of the subject index into larger ones (the maintenance process does it every minute)';
REVOKE ALL ON FUNCTION pii_audit.compact_subject_index(integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.compact_subject_index(integer, integer, integer) TO pii_audit_admin;

-- Removes, oldest first, each month's partition whose events are all older than older_than (a
-- group's events lie within an hour of its min_time), and the subject index slices that only
-- name groups before the oldest one left. Stops at the first month an export has not delivered
-- whole: quietly when stop_at_hold (the worker), with an error otherwise. The side tables
-- (sessions, statements) are kept: they are small and later events may share their rows.
CREATE FUNCTION pii_audit._remove_partitions(older_than timestamptz, why text, stop_at_hold boolean)
RETURNS TABLE (removed_partition text, first_event_id bigint, last_event_id bigint,
               events bigint, oldest_event timestamptz, newest_event timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
    hold_name text;
    hold_id bigint;
    keep_from bigint;
    removed integer := 0;
BEGIN
    -- No checkpoint moves or appears while this decides what they hold.
    LOCK TABLE pii_audit.export_checkpoints IN SHARE MODE;
    SELECT c.name, c.delivered_event_id INTO hold_name, hold_id
    FROM pii_audit.export_checkpoints c ORDER BY c.delivered_event_id, c.name LIMIT 1;
    FOR p IN
        SELECT c.oid AS relid, c.relname::text AS relname,
               (to_date(substr(c.relname, 15), 'YYYYMM') + interval '1 month')::timestamp
                   AT TIME ZONE 'UTC' AS month_end
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pii_audit.trail_groups'::regclass
          AND c.relname ~ '^trail_groups_p[0-9]{6}$'
        ORDER BY c.relname
    LOOP
        EXIT WHEN p.month_end + interval '1 hour' > older_than;
        EXECUTE format('SELECT min(first_event_id), max(first_event_id + event_count - 1), '
                       'sum(event_count)::bigint, min(min_time), max(max_time) FROM pii_audit.%I',
                       p.relname)
            INTO first_event_id, last_event_id, events, oldest_event, newest_event;
        IF hold_id IS NOT NULL AND last_event_id > hold_id THEN
            IF stop_at_hold THEN
                RAISE NOTICE 'pii_audit: events up to % stay: export checkpoint "%" has delivered up to %',
                    last_event_id, hold_name, hold_id;
                EXIT;
            END IF;
            RAISE EXCEPTION 'cannot remove pii_audit.% (events up to %): export checkpoint "%" has delivered events up to % only',
                p.relname, last_event_id, hold_name, hold_id
                USING ERRCODE = 'object_in_use',
                      HINT = 'Let that export catch up, or, if it is gone for good, unregister it with pii_audit.drop_export_checkpoint.';
        END IF;
        removed_partition := 'pii_audit.' || p.relname;
        -- Announced first, confirmed by the DROP (a partition dropped without an announcement
        -- is recorded too, from its rows, by the drop itself).
        IF events IS NULL THEN
            events := 0;  -- an empty month: nothing is removed, nothing to record
        ELSE
            PERFORM pii_audit._record_removal(p.relid, removed_partition, events,
                format('%s events with ids from %s to %s (%s to %s UTC) removed: %s', events,
                       first_event_id, last_event_id,
                       to_char(oldest_event AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                       to_char(newest_event AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), why));
        END IF;
        EXECUTE format('DROP TABLE pii_audit.%I', p.relname);
        removed := removed + 1;
        RETURN NEXT;
    END LOOP;
    IF removed > 0 THEN
        SELECT min(g.first_event_id) INTO keep_from FROM pii_audit.trail_groups g;
        IF keep_from IS NULL THEN
            SELECT w.last_event_id + 1 INTO keep_from FROM pii_audit.worker_state w;
        END IF;
        -- The index's triggers let this transaction's upkeep delete; one upkeep at a time.
        PERFORM pg_advisory_xact_lock(1885956449, 1);
        PERFORM pii_audit._allow_index_upkeep();
        DELETE FROM pii_audit.trail_subject_index x USING pii_audit.trail_subject_slices s
        WHERE x.slice = s.first_event_id AND s.last_event_id < keep_from;
        DELETE FROM pii_audit.trail_subject_slices s WHERE s.last_event_id < keep_from;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pii_audit._remove_partitions(timestamptz, text, boolean) FROM PUBLIC;

-- A superuser's removal on demand: every month whose events are all older than older_than.
CREATE FUNCTION pii_audit.remove_events(older_than timestamptz, reason text)
RETURNS TABLE (removed_partition text, first_event_id bigint, last_event_id bigint,
               events bigint, oldest_event timestamptz, newest_event timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT current_setting('is_superuser')::boolean THEN
        RAISE EXCEPTION 'only a superuser may remove events from the pii_audit trail'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Set pii_audit.retention to have the worker remove old events.';
    END IF;
    IF older_than IS NULL OR reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'say which events to remove (older_than) and why (reason)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF older_than > now() THEN
        RAISE EXCEPTION 'older_than (%) is in the future', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(reason) > 1000 THEN
        RAISE EXCEPTION 'the reason is % characters long; at most 1000 are kept', length(reason)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM pii_audit._remove_partitions(older_than,
        format('by %s: %s', session_user, reason), false);
    IF NOT FOUND THEN
        RAISE NOTICE 'nothing removed: no month of the trail has all its events older than %',
            older_than;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pii_audit.remove_events(timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION pii_audit.remove_events(timestamptz, text) IS
    'removes every month of the trail whose events are all older than a time, recording the removal (superusers)';

-- ---------------------------------------------------------------- pulls by id
-- _events_in reads the groups in id order and unpacks each in place: a group's events have
-- consecutive ids, in order, so the rows come out in id order without sorting them (sorting
-- 10,000 wide rows was most of what a pull of 10,000 events cost). The groups' subquery keeps
-- its ORDER BY (a subquery with one is never merged into the outer query), and the lateral
-- unpacking runs as the inner side of a nested loop, which keeps the outer order.
CREATE OR REPLACE FUNCTION pii_audit._events_in(after_id bigint, upto_id bigint)
RETURNS SETOF pii_audit.events
LANGUAGE sql STABLE ROWS 10000 AS $$
    SELECT e.event_id, e.event_time, g.recorded_at, g.kind, e.status, g.database_name,
           g.session_user_name, g.current_user_name, g.end_user, g.application_name,
           g.client_addr, g.backend_pid, g.command, g.relation, g.relation_oid, g.columns,
           g.categories, e.row_count, g.query_id, g.query_text, g.query_truncated,
           g.nesting_level, e.detail, e.subject_count, e.subjects, e.subjects_truncated,
           e.subject_count_estimated
    FROM (SELECT g.first_event_id, g.min_time, g.payload, g.recorded_at, g.kind, g.backend_pid,
                 g.nesting_level, s.database_name, s.session_user_name, s.current_user_name,
                 s.end_user, s.application_name, s.client_addr, st.command, st.relation,
                 st.relation_oid, st.columns, st.categories, st.query_id, st.query_text,
                 st.query_truncated
          FROM pii_audit.trail_groups g
          LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
          LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id
          WHERE g.first_event_id > after_id - 4096 AND g.first_event_id <= upto_id
            AND g.first_event_id + g.event_count > after_id + 1
          ORDER BY g.first_event_id) g
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    WHERE e.event_id > after_id AND e.event_id <= upto_id
$$;

-- events_after in C (extension/presentation/export_functions.cpp, as export()): the groups come
-- through a plan kept for the session and are unpacked straight into the result. The PL/pgSQL
-- version put every row through two result sets and a function call per group. Like export(), an
-- empty window with events after it (a month dropped by hand) moves on to them.
CREATE OR REPLACE FUNCTION pii_audit.events_after(after_event_id bigint, max_events integer DEFAULT 10000)
RETURNS SETOF pii_audit.events
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp ROWS 10000
AS 'MODULE_PATHNAME', 'pii_audit_events_after';

-- SIEM export ------------------------------------------------------------------------------
-- The pull side of SIEM export (README, "For SIEM teams"): role pii_audit_siem, export() and
-- export_alerts() returning one line per event in a SIEM format, and views that rising-column
-- collectors (Splunk DB Connect, Logstash's JDBC input) poll directly. Lines are made by
-- pii_audit's formatter (include/pii_audit/siem_format.h) from what the trail holds: subjects
-- as keyed hashes, statements without their constants.
-- (The role pii_audit_siem is created with the export checkpoints above.)

-- What alerts do, each with a rising id: raised by the worker, or their status or note changed
-- by an officer. The id is given at commit (a deferred trigger on pii_audit.alerts) under a lock
-- held until the commit ends, so ids rise in the order rows become visible: a collector that
-- pulls "everything after N" never skips a change committed late.
CREATE TABLE pii_audit.alert_events (
    alert_event_id bigint PRIMARY KEY,
    alert_id bigint NOT NULL,
    change text NOT NULL CHECK (change IN ('raised', 'status')),
    event_time timestamptz NOT NULL,   -- raised_at, or the status change's status_at
    status text NOT NULL,              -- the alert's status after this change
    status_by text,
    status_at timestamptz,
    note text
);
CREATE INDEX alert_events_alert ON pii_audit.alert_events (alert_id);
COMMENT ON TABLE pii_audit.alert_events IS
    'alerts raised and alert status changes, numbered in commit order (alert_event_id)';

CREATE FUNCTION pii_audit._alert_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    next_id bigint;
BEGIN
    -- A restore (pg_dump keeps both tables; alert_events' data comes first) brings the alert
    -- and its events back: the alert's arrival is not a new raising.
    IF TG_OP = 'INSERT' AND EXISTS (SELECT FROM pii_audit.alert_events e
                                    WHERE e.alert_id = NEW.alert_id AND e.change = 'raised') THEN
        RETURN NULL;
    END IF;
    -- Writers of alert_events queue here until the previous one committed; readers are not
    -- blocked (SHARE ROW EXCLUSIVE conflicts only with writers).
    LOCK TABLE pii_audit.alert_events IN SHARE ROW EXCLUSIVE MODE;
    SELECT coalesce(max(alert_event_id), 0) + 1 INTO next_id FROM pii_audit.alert_events;
    INSERT INTO pii_audit.alert_events
    VALUES (next_id, NEW.alert_id, CASE WHEN TG_OP = 'INSERT' THEN 'raised' ELSE 'status' END,
            CASE WHEN TG_OP = 'INSERT' THEN NEW.raised_at ELSE coalesce(NEW.status_at, now()) END,
            NEW.status, NEW.status_by, NEW.status_at, NEW.note)
    ON CONFLICT (alert_event_id) DO NOTHING;
    IF NOT FOUND THEN
        -- Only under REPEATABLE READ or SERIALIZABLE: the snapshot predates the last change.
        RAISE EXCEPTION 'could not number the change of pii_audit alert %: another change committed since this transaction began',
            NEW.alert_id
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry the transaction, or change alerts in READ COMMITTED transactions.';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pii_audit._alert_event() FROM PUBLIC;
CREATE CONSTRAINT TRIGGER alerts_export_raised AFTER INSERT ON pii_audit.alerts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pii_audit._alert_event();
CREATE CONSTRAINT TRIGGER alerts_export_status AFTER UPDATE ON pii_audit.alerts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.note IS DISTINCT FROM NEW.note)
    EXECUTE FUNCTION pii_audit._alert_event();
ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_export_raised;
ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_export_status;

CREATE TRIGGER alert_events_append_only BEFORE UPDATE OR DELETE ON pii_audit.alert_events
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER alert_events_no_truncate BEFORE TRUNCATE ON pii_audit.alert_events
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
ALTER TABLE pii_audit.alert_events ENABLE ALWAYS TRIGGER alert_events_append_only;
ALTER TABLE pii_audit.alert_events ENABLE ALWAYS TRIGGER alert_events_no_truncate;

-- Alerts stored before 0.3.0: raised in alert_id order, then their last status change, if any.
INSERT INTO pii_audit.alert_events
SELECT row_number() OVER (ORDER BY k, t, alert_id), alert_id, change, t, status, status_by,
       status_at, note
FROM (SELECT 1 AS k, a.raised_at AS t, a.alert_id, 'raised' AS change, 'open' AS status,
             NULL::text AS status_by, NULL::timestamptz AS status_at, NULL::text AS note
      FROM pii_audit.alerts a
      UNION ALL
      SELECT 2, a.status_at, a.alert_id, 'status', a.status, a.status_by, a.status_at, a.note
      FROM pii_audit.alerts a WHERE a.status_at IS NOT NULL) x;

REVOKE ALL ON pii_audit.alert_events FROM PUBLIC;
GRANT SELECT ON pii_audit.alert_events TO pii_audit_officer;
SELECT pg_catalog.pg_extension_config_dump('pii_audit.alert_events', '');

-- Formatting (extension/presentation/export_functions.cpp).
CREATE FUNCTION pii_audit._check_export_format(format text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_check_export_format';

-- The columns of pii_audit.events, in its order. COST: formatting is the expensive part of a
-- pull, so the planner formats after sorting and limiting, not before.
CREATE FUNCTION pii_audit._format_event(format text, event_id bigint, event_time timestamptz,
    recorded_at timestamptz, kind text, status text, database_name text,
    session_user_name text, current_user_name text, end_user text, application_name text,
    client_addr inet, backend_pid integer, command text, relation text, columns text[],
    categories text[], row_count bigint, query_id bigint, query_text text,
    query_truncated boolean, nesting_level integer, detail text, subject_count bigint,
    subjects bigint[], subjects_truncated boolean, subject_count_estimated boolean)
RETURNS text LANGUAGE c STABLE PARALLEL SAFE COST 100
AS 'MODULE_PATHNAME', 'pii_audit_format_event';

CREATE FUNCTION pii_audit._format_alert_event(format text, alert_event_id bigint, change text,
    event_time timestamptz, alert_id bigint, alert_time timestamptz, raised_at timestamptz,
    actor text, peer_group text, detector text, score integer, severity text,
    explanation text, evidence bigint[], status text, status_by text, status_at timestamptz,
    note text)
RETURNS text LANGUAGE c STABLE PARALLEL SAFE COST 100
AS 'MODULE_PATHNAME', 'pii_audit_format_alert_event';

-- The next max_events events after an event id, one line each in the format asked for, in id
-- order, made straight from the groups (their index on first_event_id) without unpacking them into
-- rows first (extension/presentation/export_functions.cpp). Before the oldest event it starts at
-- the oldest; a hole in the ids (a month dropped by hand) is stepped over.
CREATE FUNCTION pii_audit.export(after_event_id bigint, max_events integer DEFAULT 10000,
                                 format text DEFAULT 'json')
RETURNS TABLE (event_id bigint, line text)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp ROWS 10000
AS 'MODULE_PATHNAME', 'pii_audit_export';
COMMENT ON FUNCTION pii_audit.export(bigint, integer, text) IS
    'the next events after an event id, one line each in a SIEM format (json, ocsf, cef, leef, rfc5424)';

-- The next max_alerts alert events (alerts raised, status changes) after an alert_event_id.
CREATE FUNCTION pii_audit.export_alerts(after_alert_id bigint, max_alerts integer DEFAULT 10000,
                                        format text DEFAULT 'json')
RETURNS TABLE (alert_event_id bigint, line text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF after_alert_id IS NULL OR max_alerts IS NULL OR format IS NULL THEN
        RAISE EXCEPTION 'after_alert_id, max_alerts and format must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass 0 as after_alert_id to start at the first alert event.';
    END IF;
    IF after_alert_id < 0 THEN
        RAISE EXCEPTION 'after_alert_id must be 0 or more, not %', after_alert_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass 0 to start at the first alert event, or the last alert_event_id received.';
    END IF;
    IF max_alerts < 1 OR max_alerts > 1000000 THEN
        RAISE EXCEPTION 'max_alerts must be between 1 and 1000000, not %', max_alerts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pii_audit._check_export_format(format);
    RETURN QUERY
    SELECT ae.alert_event_id,
           pii_audit._format_alert_event(format, ae.alert_event_id, ae.change, ae.event_time,
               a.alert_id, a.alert_time, a.raised_at, a.actor, a.peer_group, a.detector,
               a.score, a.severity, a.explanation, a.evidence, ae.status, ae.status_by,
               ae.status_at, ae.note)
    FROM pii_audit.alert_events ae
    JOIN pii_audit.alerts a ON a.alert_id = ae.alert_id
    WHERE ae.alert_event_id > after_alert_id
    ORDER BY ae.alert_event_id
    LIMIT max_alerts;
END
$$;
COMMENT ON FUNCTION pii_audit.export_alerts(bigint, integer, text) IS
    'the next alert events (raised, status changed) after an alert_event_id, one line each in a SIEM format';

-- For rising-column collectors: every event in every format. Poll with
--   SELECT event_id, line FROM pii_audit.export_events
--   WHERE format = 'cef' AND event_id > ? ORDER BY event_id
-- (the filter on event_id reaches the trail's groups, as in pii_audit.events).
CREATE VIEW pii_audit.export_events AS
SELECT e.event_id, e.event_time, f.format,
       pii_audit._format_event(f.format, e.event_id, e.event_time, e.recorded_at, e.kind,
           e.status, e.database_name, e.session_user_name, e.current_user_name, e.end_user,
           e.application_name, e.client_addr, e.backend_pid, e.command, e.relation, e.columns,
           e.categories, e.row_count, e.query_id, e.query_text, e.query_truncated,
           e.nesting_level, e.detail, e.subject_count, e.subjects, e.subjects_truncated,
           e.subject_count_estimated) AS line
FROM pii_audit.events e
CROSS JOIN (VALUES ('json'), ('ocsf'), ('cef'), ('leef'), ('rfc5424')) AS f(format);
COMMENT ON VIEW pii_audit.export_events IS
    'every event as one line per SIEM format; poll WHERE format = ... AND event_id > last ORDER BY event_id';

CREATE VIEW pii_audit.export_alert_events AS
SELECT ae.alert_event_id, ae.event_time, f.format,
       pii_audit._format_alert_event(f.format, ae.alert_event_id, ae.change, ae.event_time,
           a.alert_id, a.alert_time, a.raised_at, a.actor, a.peer_group, a.detector, a.score,
           a.severity, a.explanation, a.evidence, ae.status, ae.status_by, ae.status_at,
           ae.note) AS line
FROM pii_audit.alert_events ae
JOIN pii_audit.alerts a ON a.alert_id = ae.alert_id
CROSS JOIN (VALUES ('json'), ('ocsf'), ('cef'), ('leef'), ('rfc5424')) AS f(format);
COMMENT ON VIEW pii_audit.export_alert_events IS
    'alerts raised and status changes as one line per SIEM format; poll WHERE format = ... AND alert_event_id > last ORDER BY alert_event_id';

-- pii_audit_siem: the export surface and nothing else. Functions called inside a view are
-- checked against the caller, hence EXECUTE on the formatters.
REVOKE ALL ON FUNCTION pii_audit._check_export_format(text),
    pii_audit._format_event(text, bigint, timestamptz, timestamptz, text, text, text, text, text,
        text, text, inet, integer, text, text, text[], text[], bigint, bigint, text, boolean,
        integer, text, bigint, bigint[], boolean, boolean),
    pii_audit._format_alert_event(text, bigint, text, timestamptz, bigint, timestamptz,
        timestamptz, text, text, text, integer, text, text, bigint[], text, text, timestamptz,
        text),
    pii_audit.export(bigint, integer, text), pii_audit.export_alerts(bigint, integer, text)
    FROM PUBLIC;
REVOKE ALL ON pii_audit.export_events, pii_audit.export_alert_events FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.export(bigint, integer, text),
    pii_audit.export_alerts(bigint, integer, text),
    pii_audit._format_event(text, bigint, timestamptz, timestamptz, text, text, text, text, text,
        text, text, inet, integer, text, text, text[], text[], bigint, bigint, text, boolean,
        integer, text, bigint, bigint[], boolean, boolean),
    pii_audit._format_alert_event(text, bigint, text, timestamptz, bigint, timestamptz,
        timestamptz, text, text, text, integer, text, text, bigint[], text, text, timestamptz,
        text)
    TO pii_audit_siem;
GRANT SELECT ON pii_audit.export_events, pii_audit.export_alert_events TO pii_audit_siem;

-- Insider scoring's team rules, counted (issue 15): signals held while colleagues may follow,
-- what became of them, and what was excused as the team's. New columns go at the end.
DROP VIEW pii_audit.scorer_status;
DROP FUNCTION pii_audit._scorer_status();
CREATE FUNCTION pii_audit._scorer_status(
    OUT state text, OUT actors bigint, OUT peer_groups bigint, OUT relations bigint,
    OUT state_bytes bigint, OUT scored_upto bigint, OUT alerts_raised bigint,
    OUT last_save timestamptz, OUT relations_loaded_at timestamptz, OUT last_error text,
    OUT alert_threshold integer, OUT signals_held bigint, OUT held_raised bigint,
    OUT held_dropped bigint, OUT team_excused bigint)
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_scorer_status';
CREATE VIEW pii_audit.scorer_status AS SELECT * FROM pii_audit._scorer_status();
COMMENT ON VIEW pii_audit.scorer_status IS
    'what insider scoring in the worker is doing: state, actors, relations, last save, last error, signals held for the team and excused as the team''s';
REVOKE ALL ON pii_audit.scorer_status FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_audit._scorer_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit._scorer_status() TO pii_audit_officer;
GRANT SELECT ON pii_audit.scorer_status TO pii_audit_officer;

-- ---------------------------------------------------------------- tamper evidence
-- Triggers stop ordinary users from changing the trail; a superuser can still disable them.
-- The worker makes that detectable: every batch it stores gets a row here with a SHA-256 digest
-- over the previous batch's digest and the digests of its groups, which cover every field the
-- views show (the group row, its session's and statement's values, its events' payload). The
-- layout is in include/pii_audit/trail_chain.h and the README ("Verifying the trail").
-- pii_audit.verify_trail recomputes the chain; digests held outside the database (exported with
-- pii_audit.export_digests) also catch a superuser who rewrites rows and recomputes the chain.
-- Rows are never removed, retention included (a month's batches take a few kilobytes).
CREATE TABLE pii_audit.trail_digests (
    first_event_id bigint PRIMARY KEY,
    last_event_id bigint NOT NULL,
    recorded_at timestamptz NOT NULL,  -- when the batch was stored (its groups' recorded_at)
    previous_digest bytea NOT NULL,  -- the digest of the batch before (32 zero bytes: none)
    digest bytea NOT NULL,
    groups bytea NOT NULL            -- per group: event count (u16), first 8 bytes of its digest
);
CREATE INDEX trail_digests_last ON pii_audit.trail_digests (last_event_id);
COMMENT ON TABLE pii_audit.trail_digests IS
    'one SHA-256 digest per batch of the trail, chained; see pii_audit.verify_trail';
CREATE TRIGGER trail_digests_append_only BEFORE UPDATE OR DELETE ON pii_audit.trail_digests
    FOR EACH ROW EXECUTE FUNCTION pii_audit._refuse_change();
CREATE TRIGGER trail_digests_no_truncate BEFORE TRUNCATE ON pii_audit.trail_digests
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit._refuse_change();
ALTER TABLE pii_audit.trail_digests ENABLE ALWAYS TRIGGER trail_digests_append_only;
ALTER TABLE pii_audit.trail_digests ENABLE ALWAYS TRIGGER trail_digests_no_truncate;
REVOKE ALL ON pii_audit.trail_digests FROM PUBLIC;
GRANT SELECT ON pii_audit.trail_digests TO pii_audit_officer, pii_audit_siem;
SELECT pg_catalog.pg_extension_config_dump('pii_audit.trail_digests', '');

-- Recomputes the chain over the batches that hold events from_event_id to to_event_id (whole
-- batches) and names what does not match (extension/presentation/verify_functions.cpp).
-- With external_event_ids/external_digests (hex), also compares the chain with digests held
-- outside: the digest of the batch that ends at each of those events.
CREATE FUNCTION pii_audit.verify_trail(from_event_id bigint, to_event_id bigint,
                                       external_event_ids bigint[] DEFAULT NULL,
                                       external_digests text[] DEFAULT NULL)
RETURNS TABLE (event_id bigint, problem text, detail text)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pii_audit_verify_trail';
REVOKE ALL ON FUNCTION pii_audit.verify_trail(bigint, bigint, bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.verify_trail(bigint, bigint, bigint[], text[])
    TO pii_audit_officer, pii_audit_admin;
COMMENT ON FUNCTION pii_audit.verify_trail(bigint, bigint, bigint[], text[]) IS
    'recomputes the trail''s hash chain and names the first event changed, removed or inserted, and any broken link';

CREATE FUNCTION pii_audit._server_name() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_server_name';
REVOKE ALL ON FUNCTION pii_audit._server_name() FROM PUBLIC;

-- Digest records for the export stream: the chain's digest at a fixed interval of events (the
-- batch that holds each event id that is a multiple of every_events), after an event id, in the
-- same SIEM formats as export(). Kept outside the database (a SIEM, a WORM bucket), they let
-- verify_trail catch a superuser who rewrote rows and recomputed the chain.
CREATE FUNCTION pii_audit.export_digests(after_event_id bigint, every_events bigint DEFAULT 10000,
                                         format text DEFAULT 'json',
                                         max_digests integer DEFAULT 1000)
RETURNS TABLE (event_id bigint, digest text, line text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    server text := pii_audit._server_name();
    version text := (SELECT e.extversion FROM pg_extension e WHERE e.extname = 'pii_audit');
BEGIN
    IF after_event_id IS NULL OR every_events IS NULL OR format IS NULL OR max_digests IS NULL THEN
        RAISE EXCEPTION 'after_event_id, every_events, format and max_digests must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF every_events < 1 THEN
        RAISE EXCEPTION 'every_events must be 1 or more, not %', every_events
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '1 exports the digest of every batch.';
    END IF;
    IF max_digests < 1 OR max_digests > 1000000 THEN
        RAISE EXCEPTION 'max_digests must be between 1 and 1000000, not %', max_digests
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pii_audit._check_export_format(format);
    RETURN QUERY
    SELECT d.last_event_id, encode(d.digest, 'hex'),
        CASE format
        WHEN 'json' THEN json_build_object(
            '@timestamp', to_char(d.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'event', json_build_object('id', 'digest-' || d.last_event_id, 'kind', 'state',
                'module', 'pii_audit', 'dataset', 'pii_audit.digests', 'action', 'trail_digest'),
            'host', json_build_object('name', server),
            'observer', json_build_object('vendor', 'pii_audit', 'product', 'pii_audit', 'version', version),
            'pii_audit', json_build_object('kind', 'digest', 'event_id', d.last_event_id,
                'first_event_id', d.first_event_id, 'digest', encode(d.digest, 'hex'),
                'previous_digest', encode(d.previous_digest, 'hex'), 'chain_version', 2,
                'server_name', server))::text
        WHEN 'ocsf' THEN json_build_object(
            'category_uid', 1, 'category_name', 'System Activity', 'class_uid', 1008,
            'class_name', 'Event Log Activity', 'activity_id', 99, 'activity_name', 'Other',
            'type_uid', 100899, 'type_name', 'Event Log Activity: Other', 'severity_id', 1,
            'severity', 'Informational',
            'time', (extract(epoch FROM d.recorded_at) * 1000)::bigint,
            -- (the class needs one of log_name, log_provider, log_type... at its top level)
            'log_name', 'pii_audit.digests', 'log_provider', 'pii_audit',
            'metadata', json_build_object('version', '1.3.0', 'uid', 'digest-' || d.last_event_id,
                'log_name', 'pii_audit.digests', 'log_provider', 'pii_audit',
                'product', json_build_object('name', 'pii_audit', 'vendor_name', 'pii_audit', 'version', version)),
            'unmapped', json_build_object('pii_audit', json_build_object('kind', 'digest',
                'event_id', d.last_event_id, 'first_event_id', d.first_event_id,
                'digest', encode(d.digest, 'hex'), 'previous_digest', encode(d.previous_digest, 'hex'),
                'chain_version', 2, 'server_name', server)))::text
        WHEN 'cef' THEN concat('CEF:0|pii_audit|pii_audit|', version, '|digest|Trail digest|1|rt=',
            (extract(epoch FROM d.recorded_at) * 1000)::bigint, ' externalId=digest-', d.last_event_id,
            ' dvchost=', replace(replace(server, '\', '\\'), '=', '\='), ' cat=digest',
            ' cn1Label=eventId cn1=', d.last_event_id, ' cn2Label=firstEventId cn2=', d.first_event_id,
            ' cs1Label=digest cs1=', encode(d.digest, 'hex'),
            ' cs2Label=previousDigest cs2=', encode(d.previous_digest, 'hex'))
        WHEN 'leef' THEN concat('LEEF:2.0|pii_audit|pii_audit|', version, '|digest|x09|devTime=',
            to_char(d.recorded_at AT TIME ZONE 'UTC', 'Mon DD YYYY HH24:MI:SS.MS "UTC"'),
            E'\tcat=digest\teventId=', d.last_event_id, E'\tfirstEventId=', d.first_event_id,
            E'\tdigest=', encode(d.digest, 'hex'), E'\tpreviousDigest=', encode(d.previous_digest, 'hex'),
            E'\tserverName=', replace(replace(server, '\', '\\'), E'\t', '\t'))
        ELSE concat('<110>1 ', to_char(d.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            ' ', coalesce(nullif(regexp_replace(server, '[^!-~]', '_', 'g'), ''), '-'),
            ' pii_audit - digest [pii_audit@32473 event_id="', d.last_event_id,
            '" first_event_id="', d.first_event_id, '" digest="', encode(d.digest, 'hex'),
            '" previous_digest="', encode(d.previous_digest, 'hex'), '" server_name="',
            replace(replace(replace(server, '\', '\\'), '"', '\"'), ']', '\]'), '"] trail digest')
        END
    FROM pii_audit.trail_digests d
    WHERE d.last_event_id > after_event_id
      AND d.last_event_id / every_events > (d.first_event_id - 1) / every_events
    ORDER BY d.last_event_id
    LIMIT max_digests;
END
$$;
REVOKE ALL ON FUNCTION pii_audit.export_digests(bigint, bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.export_digests(bigint, bigint, text, integer)
    TO pii_audit_siem, pii_audit_officer;
GRANT EXECUTE ON FUNCTION pii_audit._server_name() TO pii_audit_siem, pii_audit_officer;
COMMENT ON FUNCTION pii_audit.export_digests(bigint, bigint, text, integer) IS
    'the trail''s chain digest every N events after an event id, one line each in a SIEM format: keep them outside and pass them to verify_trail';

-- Alerts and their reviews are chained too: each row of alert_events (an alert raised, a
-- status or note changed) carries a digest over the previous row's digest, its own values and
-- its alert's (layout 'A' in trail_chain.h). Rows from before 0.3.0 have none.
ALTER TABLE pii_audit.alert_events ADD COLUMN digest bytea;

CREATE FUNCTION pii_audit._micros(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (extract(epoch FROM t - '2000-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint
$$;

CREATE FUNCTION pii_audit._alert_event_digest(previous bytea, alert_event_id bigint, change text,
    event_time bigint, status text, status_by text, status_at bigint, note text, alert_id bigint,
    alert_time bigint, raised_at bigint, actor text, peer_group text, detector text,
    score integer, severity text, explanation text, evidence bigint[])
RETURNS bytea LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pii_audit_alert_event_digest';
REVOKE ALL ON FUNCTION pii_audit._alert_event_digest(bytea, bigint, text, bigint, text, text,
    bigint, text, bigint, bigint, bigint, text, text, text, integer, text, text, bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pii_audit._alert_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    next_id bigint;
    previous bytea;
    ev pii_audit.alert_events;
BEGIN
    -- A restore (pg_dump keeps both tables; alert_events' data comes first) brings the alert
    -- and its events back: the alert's arrival is not a new raising.
    IF TG_OP = 'INSERT' AND EXISTS (SELECT FROM pii_audit.alert_events e
                                    WHERE e.alert_id = NEW.alert_id AND e.change = 'raised') THEN
        RETURN NULL;
    END IF;
    -- Writers of alert_events queue here until the previous one committed; readers are not
    -- blocked (SHARE ROW EXCLUSIVE conflicts only with writers).
    LOCK TABLE pii_audit.alert_events IN SHARE ROW EXCLUSIVE MODE;
    SELECT coalesce(max(e.alert_event_id), 0) + 1 INTO next_id FROM pii_audit.alert_events e;
    SELECT e.digest INTO previous FROM pii_audit.alert_events e WHERE e.alert_event_id = next_id - 1;
    ev.alert_event_id := next_id;
    ev.alert_id := NEW.alert_id;
    ev.change := CASE WHEN TG_OP = 'INSERT' THEN 'raised' ELSE 'status' END;
    ev.event_time := CASE WHEN TG_OP = 'INSERT' THEN NEW.raised_at ELSE coalesce(NEW.status_at, now()) END;
    ev.status := NEW.status;
    ev.status_by := NEW.status_by;
    ev.status_at := NEW.status_at;
    ev.note := NEW.note;
    ev.digest := pii_audit._alert_event_digest(previous, ev.alert_event_id, ev.change,
        pii_audit._micros(ev.event_time), ev.status, ev.status_by, pii_audit._micros(ev.status_at),
        ev.note, NEW.alert_id, pii_audit._micros(NEW.alert_time), pii_audit._micros(NEW.raised_at),
        NEW.actor, NEW.peer_group, NEW.detector, NEW.score, NEW.severity, NEW.explanation,
        NEW.evidence);
    INSERT INTO pii_audit.alert_events SELECT ev.* ON CONFLICT (alert_event_id) DO NOTHING;
    IF NOT FOUND THEN
        -- Only under REPEATABLE READ or SERIALIZABLE: the snapshot predates the last change.
        RAISE EXCEPTION 'could not number the change of pii_audit alert %: another change committed since this transaction began',
            NEW.alert_id
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry the transaction, or change alerts in READ COMMITTED transactions.';
    END IF;
    RETURN NULL;
END
$$;

-- Recomputes the alert events' chain: names alert events changed (their values or their
-- alert's), missing or added without a digest, alerts without their 'raised' event, and alerts
-- whose review (status, note) differs from their last alert event.
CREATE FUNCTION pii_audit.verify_alerts()
RETURNS TABLE (alert_event_id bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    previous bytea;
    last_id bigint;
    chained boolean := false;
    unchained bigint := 0;
    first_unchained bigint;
    found_problem boolean := false;
    events bigint := 0;
BEGIN
    FOR r IN SELECT ae.alert_event_id AS id, ae.change, ae.event_time, ae.status AS ev_status,
                    ae.status_by AS ev_status_by, ae.status_at AS ev_status_at, ae.note AS ev_note,
                    ae.digest, ae.alert_id AS ev_alert_id, a.*
             FROM pii_audit.alert_events ae LEFT JOIN pii_audit.alerts a ON a.alert_id = ae.alert_id
             ORDER BY ae.alert_event_id LOOP
        events := events + 1;
        IF last_id IS NOT NULL AND r.id <> last_id + 1 THEN
            alert_event_id := last_id + 1; problem := 'removed';
            detail := format('alert events %s to %s are missing', last_id + 1, r.id - 1);
            found_problem := true; RETURN NEXT;
        END IF;
        IF r.digest IS NULL THEN
            IF chained THEN
                alert_event_id := r.id; problem := 'inserted';
                detail := format('alert event %s has no digest, after the chain began', r.id);
                found_problem := true; RETURN NEXT;
            ELSE
                unchained := unchained + 1;
                first_unchained := coalesce(first_unchained, r.id);
            END IF;
        ELSIF r.alert_id IS NULL THEN
            chained := true;
            alert_event_id := r.id; problem := 'removed';
            detail := format('alert %s of alert event %s is gone', r.ev_alert_id, r.id);
            found_problem := true; RETURN NEXT;
        ELSE
            chained := true;
            IF pii_audit._alert_event_digest(previous, r.id, r.change, pii_audit._micros(r.event_time),
                   r.ev_status, r.ev_status_by, pii_audit._micros(r.ev_status_at), r.ev_note,
                   r.alert_id, pii_audit._micros(r.alert_time), pii_audit._micros(r.raised_at),
                   r.actor, r.peer_group, r.detector, r.score, r.severity, r.explanation,
                   r.evidence) IS DISTINCT FROM r.digest THEN
                alert_event_id := r.id; problem := 'changed';
                detail := format('alert event %s (%s of alert %s) or its alert differs from what was chained',
                                 r.id, r.change, r.alert_id);
                found_problem := true; RETURN NEXT;
            END IF;
        END IF;
        previous := r.digest;
        last_id := r.id;
    END LOOP;
    IF unchained > 0 THEN
        alert_event_id := first_unchained; problem := 'unchained';
        detail := format('%s alert events were stored before the chain began (pii_audit 0.2.0)', unchained);
        RETURN NEXT;
    END IF;
    FOR r IN SELECT a.alert_id FROM pii_audit.alerts a
             WHERE NOT EXISTS (SELECT FROM pii_audit.alert_events e
                               WHERE e.alert_id = a.alert_id AND e.change = 'raised')
             ORDER BY a.alert_id LOOP
        alert_event_id := NULL; problem := 'inserted';
        detail := format('alert %s has no ''raised'' alert event', r.alert_id);
        found_problem := true; RETURN NEXT;
    END LOOP;
    FOR r IN SELECT a.alert_id, l.alert_event_id AS id FROM pii_audit.alerts a
             JOIN LATERAL (SELECT e.* FROM pii_audit.alert_events e WHERE e.alert_id = a.alert_id
                           ORDER BY e.alert_event_id DESC LIMIT 1) l ON true
             WHERE (a.status, a.status_by, a.status_at, a.note)
                   IS DISTINCT FROM (l.status, l.status_by, l.status_at, l.note)
             ORDER BY a.alert_id LOOP
        alert_event_id := r.id; problem := 'changed';
        detail := format('the review of alert %s (status, note) differs from its last alert event %s',
                         r.alert_id, r.id);
        found_problem := true; RETURN NEXT;
    END LOOP;
    IF NOT found_problem THEN
        alert_event_id := last_id; problem := 'ok';
        detail := format('%s alert events verified', events - unchained);
        RETURN NEXT;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pii_audit.verify_alerts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.verify_alerts() TO pii_audit_officer, pii_audit_admin;
COMMENT ON FUNCTION pii_audit.verify_alerts() IS
    'recomputes the chain of alert events and names alerts or reviews changed, removed or inserted';

-- No JIT in the functions that read the trail. Their plans' estimates grow with the trail (the
-- groups after the subject index's last slice are estimated at hundreds of thousands of rows
-- before the run-time filter leaves a few), which crossed jit_above_cost at 100M events: the
-- compilation then took longer than the query (subject_access 416 -> 204 ms in a new session,
-- 150 -> 82 ms in the same session, bench/RESULTS.md part 15).
ALTER FUNCTION pii_audit._subject_groups(bigint) SET jit = off;
ALTER FUNCTION pii_audit.subject_access(text, timestamptz, timestamptz) SET jit = off;
ALTER FUNCTION pii_audit.breach_scope(text, timestamptz, timestamptz) SET jit = off;
ALTER FUNCTION pii_audit.events_after(bigint, integer) SET jit = off;
ALTER FUNCTION pii_audit.export(bigint, integer, text) SET jit = off;
ALTER FUNCTION pii_audit.export_alerts(bigint, integer, text) SET jit = off;
ALTER FUNCTION pii_audit.export_digests(bigint, bigint, text, integer) SET jit = off;
ALTER FUNCTION pii_audit.verify_trail(bigint, bigint, bigint[], text[]) SET jit = off;

-- ---------------------------------------------------------------- server names (issue 14)
-- Which server each event happened on: the primary's own events carry its pii_audit.server_name
-- (default cluster_name, else the host name), events a hot standby forwards carry the standby's.
-- A session is per server, so the name lives in the session row (and in its chained digest,
-- layout 'S' of version 2). Events stored before 0.3.0 have none (NULL).
ALTER TABLE pii_audit.trail_sessions ADD COLUMN server_name text;
COMMENT ON COLUMN pii_audit.trail_sessions.server_name IS
    'the server the events happened on (pii_audit.server_name of the primary, or of the standby that forwarded them); NULL before 0.3.0';

-- Every view gets the column at its end (CREATE OR REPLACE VIEW may only add columns there).
CREATE OR REPLACE VIEW pii_audit.events AS
SELECT e.event_id, e.event_time, g.recorded_at, g.kind, e.status, s.database_name,
       s.session_user_name, s.current_user_name, s.end_user, s.application_name, s.client_addr,
       g.backend_pid, st.command, st.relation, st.relation_oid, st.columns, st.categories,
       e.row_count, st.query_id, st.query_text, st.query_truncated, g.nesting_level, e.detail,
       e.subject_count, e.subjects, e.subjects_truncated, e.subject_count_estimated,
       s.server_name
FROM pii_audit.trail_groups g
CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id;

CREATE OR REPLACE FUNCTION pii_audit._events_in(after_id bigint, upto_id bigint)
RETURNS SETOF pii_audit.events
LANGUAGE sql STABLE ROWS 10000 AS $$
    SELECT e.event_id, e.event_time, g.recorded_at, g.kind, e.status, g.database_name,
           g.session_user_name, g.current_user_name, g.end_user, g.application_name,
           g.client_addr, g.backend_pid, g.command, g.relation, g.relation_oid, g.columns,
           g.categories, e.row_count, g.query_id, g.query_text, g.query_truncated,
           g.nesting_level, e.detail, e.subject_count, e.subjects, e.subjects_truncated,
           e.subject_count_estimated, g.server_name
    FROM (SELECT g.first_event_id, g.min_time, g.payload, g.recorded_at, g.kind, g.backend_pid,
                 g.nesting_level, s.database_name, s.session_user_name, s.current_user_name,
                 s.end_user, s.application_name, s.client_addr, st.command, st.relation,
                 st.relation_oid, st.columns, st.categories, st.query_id, st.query_text,
                 st.query_truncated, s.server_name
          FROM pii_audit.trail_groups g
          LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id
          LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id
          WHERE g.first_event_id > after_id - 4096 AND g.first_event_id <= upto_id
            AND g.first_event_id + g.event_count > after_id + 1
          ORDER BY g.first_event_id) g
    CROSS JOIN LATERAL pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
    WHERE e.event_id > after_id AND e.event_id <= upto_id
$$;

CREATE OR REPLACE VIEW pii_audit.access_log AS
SELECT event_id, event_time, database_name, session_user_name, current_user_name, end_user,
       application_name, client_addr, command, relation, columns, categories, row_count,
       query_id, query_text, status, kind, backend_pid, nesting_level, query_truncated,
       recorded_at, detail, subject_count, subjects_truncated, subject_count_estimated,
       server_name
FROM pii_audit.events WHERE kind <> 'login';

CREATE OR REPLACE VIEW pii_audit.login_log AS
SELECT event_id, event_time, database_name, session_user_name AS user_name, application_name,
       client_addr, backend_pid, status, recorded_at, server_name
FROM pii_audit.events WHERE kind = 'login';

CREATE OR REPLACE VIEW pii_audit.label_changes AS
SELECT event_id, event_time, session_user_name, current_user_name, relation, columns[1] AS column_name,
       categories, status, detail, server_name
FROM pii_audit.events WHERE kind = 'label_change';

-- The formatter takes the event's server name too (host.name, dvchost, HOSTNAME ...).
CREATE FUNCTION pii_audit._format_event(format text, event_id bigint, event_time timestamptz,
    recorded_at timestamptz, kind text, status text, database_name text,
    session_user_name text, current_user_name text, end_user text, application_name text,
    client_addr inet, backend_pid integer, command text, relation text, columns text[],
    categories text[], row_count bigint, query_id bigint, query_text text,
    query_truncated boolean, nesting_level integer, detail text, subject_count bigint,
    subjects bigint[], subjects_truncated boolean, subject_count_estimated boolean,
    server_name text)
RETURNS text LANGUAGE c STABLE PARALLEL SAFE COST 100
AS 'MODULE_PATHNAME', 'pii_audit_format_event';
CREATE OR REPLACE VIEW pii_audit.export_events AS
SELECT e.event_id, e.event_time, f.format,
       pii_audit._format_event(f.format, e.event_id, e.event_time, e.recorded_at, e.kind,
           e.status, e.database_name, e.session_user_name, e.current_user_name, e.end_user,
           e.application_name, e.client_addr, e.backend_pid, e.command, e.relation, e.columns,
           e.categories, e.row_count, e.query_id, e.query_text, e.query_truncated,
           e.nesting_level, e.detail, e.subject_count, e.subjects, e.subjects_truncated,
           e.subject_count_estimated, e.server_name) AS line
FROM pii_audit.events e
CROSS JOIN (VALUES ('json'), ('ocsf'), ('cef'), ('leef'), ('rfc5424')) AS f(format);
DROP FUNCTION pii_audit._format_event(text, bigint, timestamptz, timestamptz, text, text, text,
    text, text, text, text, inet, integer, text, text, text[], text[], bigint, bigint, text,
    boolean, integer, text, bigint, bigint[], boolean, boolean);
REVOKE ALL ON FUNCTION pii_audit._format_event(text, bigint, timestamptz, timestamptz, text,
    text, text, text, text, text, text, inet, integer, text, text, text[], text[], bigint, bigint,
    text, boolean, integer, text, bigint, bigint[], boolean, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit._format_event(text, bigint, timestamptz, timestamptz, text,
    text, text, text, text, text, text, inet, integer, text, text, text[], text[], bigint, bigint,
    text, boolean, integer, text, bigint, bigint[], boolean, boolean, text) TO pii_audit_siem;

-- ---------------------------------------------------------------- reads on hot standbys (issue 14)
-- A standby's worker hands the events of its queue to the primary as pii_audit_forwarder, which
-- may do nothing else: pii_audit.forward_events keeps the batch here, and the primary's worker
-- (the trail's only writer) stores its events and deletes the row in one transaction.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_audit_forwarder') THEN
        CREATE ROLE pii_audit_forwarder NOLOGIN;
        COMMENT ON ROLE pii_audit_forwarder IS
            'hot standbys hand their audit events to the primary as this role (pii_audit.forward_events), nothing else; give it LOGIN and a password';
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA pii_audit TO pii_audit_forwarder;

-- Per standby (its server name): the last queue sequence of its queue file (generation) that
-- the primary kept, so that a batch sent again after a lost confirmation is not kept twice, and
-- how many events it had dropped, so that a new drop becomes a gap of that server.
CREATE TABLE pii_audit.forwarded_origins (
    server_name text PRIMARY KEY,
    generation bigint NOT NULL,
    last_queue_seq bigint NOT NULL,
    dropped bigint NOT NULL,
    batches bigint NOT NULL,
    events bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    key_fingerprint bigint NOT NULL,  -- of the subject key its last batch was made with
    note_serial bigint NOT NULL DEFAULT 0  -- the last loss note of this queue file kept
);
COMMENT ON TABLE pii_audit.forwarded_origins IS
    'hot standbys that forward their audit events: how far each was kept (exactly once), batches and events received';
-- Batches kept, not yet stored by the worker.
CREATE TABLE pii_audit.forwarded_batches (
    batch_id bigserial PRIMARY KEY,
    server_name text NOT NULL,
    skip_through bigint NOT NULL,  -- records up to this queue sequence were kept before
    lost bigint NOT NULL,          -- events the standby dropped since its last batch
    received_at timestamptz NOT NULL,
    records bytea NOT NULL,        -- framed queue records (include/pii_audit/forward_batch.h)
    note text                      -- a loss of unknown size on the standby: why
);
REVOKE ALL ON pii_audit.forwarded_origins, pii_audit.forwarded_batches FROM PUBLIC;
GRANT SELECT ON pii_audit.forwarded_origins TO pii_audit_officer;

CREATE FUNCTION pii_audit._forward_check(records bytea, key_fingerprint bigint) RETURNS bigint[]
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'pii_audit_forward_check';
CREATE FUNCTION pii_audit._forwarded_wake() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_forwarded_wake';
REVOKE ALL ON FUNCTION pii_audit._forward_check(bytea, bigint), pii_audit._forwarded_wake()
    FROM PUBLIC;

-- Called by a standby's worker with a batch of its queue's records (in queue order), its queue
-- file's generation, its subject key's fingerprint, how many events it has dropped in all, and
-- when it lost events it cannot count (its queue file not trusted after an OS crash, or
-- damaged) why, with that note's serial in its queue file. Returns 'kept', or 'duplicate' for
-- a batch kept before (its confirmation was lost).
CREATE FUNCTION pii_audit.forward_events(server_name text, generation bigint,
                                         key_fingerprint bigint, dropped bigint, records bytea,
                                         loss_note text DEFAULT NULL,
                                         loss_note_serial bigint DEFAULT 0)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    summary bigint[];
    origin pii_audit.forwarded_origins;
    skip bigint := 0;
    lost bigint := 0;
    new_note boolean;
BEGIN
    IF server_name IS NULL OR generation IS NULL OR dropped IS NULL THEN
        RAISE EXCEPTION 'server_name, generation and dropped must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF server_name = pii_audit._server_name() THEN
        RAISE EXCEPTION 'a standby forwards events under the name of this server (%)', server_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the standby its own pii_audit.server_name or cluster_name.';
    END IF;
    IF loss_note IS NOT NULL AND (loss_note_serial IS NULL OR loss_note_serial < 1) THEN
        RAISE EXCEPTION 'a loss note needs its serial in the standby''s queue file (1 or more), not %',
            coalesce(loss_note_serial::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    summary := pii_audit._forward_check(records, key_fingerprint);
    INSERT INTO pii_audit.forwarded_origins AS o VALUES
        (forward_events.server_name, forward_events.generation, 0, 0, 0, 0, now(), key_fingerprint)
        ON CONFLICT DO NOTHING;
    SELECT * INTO origin FROM pii_audit.forwarded_origins o
        WHERE o.server_name = forward_events.server_name FOR UPDATE;
    new_note := loss_note IS NOT NULL AND (origin.generation <> generation
                                           OR coalesce(loss_note_serial, 0) > origin.note_serial);
    IF origin.generation > generation THEN
        RAISE EXCEPTION 'standby "%" sent a batch of an older queue file (generation % after %)',
            server_name, generation, origin.generation
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF origin.generation = generation THEN
        IF summary[1] > 0 AND summary[3] <= origin.last_queue_seq AND dropped <= origin.dropped
           AND NOT new_note THEN
            RETURN 'duplicate';
        END IF;
        IF summary[1] = 0 AND dropped <= origin.dropped AND NOT new_note THEN
            RETURN 'duplicate';  -- nothing new (the standby says it is there)
        END IF;
        skip := origin.last_queue_seq;
        lost := greatest(dropped - origin.dropped, 0);
    ELSE
        -- A new queue file on the standby: its sequences start again.
        lost := CASE WHEN origin.batches = 0 THEN 0 ELSE greatest(dropped - origin.dropped, 0) END;
    END IF;
    UPDATE pii_audit.forwarded_origins o SET generation = forward_events.generation,
           last_queue_seq = CASE WHEN summary[1] > 0 THEN greatest(summary[3], skip) ELSE skip END,
           dropped = CASE WHEN o.generation = forward_events.generation
                          THEN greatest(forward_events.dropped, o.dropped)
                          ELSE forward_events.dropped END,
           batches = o.batches + 1, events = o.events + summary[1], updated_at = now(),
           key_fingerprint = forward_events.key_fingerprint,
           note_serial = CASE WHEN new_note THEN coalesce(loss_note_serial, 0)
                              WHEN o.generation = forward_events.generation THEN o.note_serial
                              ELSE 0 END
        WHERE o.server_name = forward_events.server_name;
    IF summary[1] > 0 OR lost > 0 OR new_note THEN
        INSERT INTO pii_audit.forwarded_batches (server_name, skip_through, lost, received_at,
                                                 records, note)
        VALUES (server_name, skip, lost, now(), records,
                CASE WHEN new_note THEN left(loss_note, 400) END);
        PERFORM pii_audit._forwarded_wake();
    END IF;
    RETURN 'kept';
END
$$;
REVOKE ALL ON FUNCTION pii_audit.forward_events(text, bigint, bigint, bigint, bytea, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.forward_events(text, bigint, bigint, bigint, bytea, text, bigint)
    TO pii_audit_forwarder;
COMMENT ON FUNCTION pii_audit.forward_events(text, bigint, bigint, bigint, bytea, text, bigint) IS
    'a hot standby hands a batch of its audit events to this primary (role pii_audit_forwarder); kept exactly once';

-- Called by a standby's forwarder right after forward_events, in the same session: where the
-- commit that kept the batch ended, and on which timeline. The standby releases the batch's
-- queue space only once its own replay is past that point, so that a promoted standby finds in
-- its own forwarded_origins every batch it released.
CREATE FUNCTION pii_audit.forwarded_commit_position(OUT commit_lsn pg_lsn, OUT timeline_id integer)
RETURNS record
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_forwarded_commit_position';
REVOKE ALL ON FUNCTION pii_audit.forwarded_commit_position() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pii_audit.forwarded_commit_position() TO pii_audit_forwarder;
COMMENT ON FUNCTION pii_audit.forwarded_commit_position() IS
    'where this session''s last commit record ended, and this server''s timeline: a hot standby releases a forwarded batch once it has replayed that far';

-- ---------------------------------------------------------------- naming the people in breach_scope
-- breach_scope named the people on its list by hashing every key of each table read through SQL
-- (pii_audit.subject_hash per row, then a filter): at 100M events, a clerk's month (24,000
-- people) spent most of its 1.7 s there. _identify_subjects reads the key column with a query
-- of its own (audited like the SQL did, with the caller's privileges) and hashes each row in C,
-- stopping once every hash is named; identifiers are made exactly as the capture makes them.
-- breach_scope (created above with its server names) calls it.
CREATE FUNCTION pii_audit._identify_subjects(relation regclass, key_column name, hashes bigint[])
RETURNS TABLE (subject_hash bigint, identifier text)
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'pii_audit_identify_subjects_sql';
REVOKE ALL ON FUNCTION pii_audit._identify_subjects(regclass, name, bigint[]) FROM PUBLIC;
COMMENT ON FUNCTION pii_audit._identify_subjects(regclass, name, bigint[]) IS
    'which of the hashes belong to a key value of the table, with the identifier (breach_scope; an audited read)';

-- ---------------------------------------------------------------- subject_access beyond the index
-- The groups after the subject index's last slice were read by a query over trail_groups, which
-- planned every month in a new session (a fifth of a new session's first subject_access over
-- 14 months). _tail_groups probes each month's index on first_event_id and reads the payloads in
-- place instead.
CREATE FUNCTION pii_audit._tail_groups(after bigint, subject_hash bigint)
RETURNS TABLE (first_event_id bigint, min_time timestamptz)
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'pii_audit_tail_groups';
REVOKE ALL ON FUNCTION pii_audit._tail_groups(bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION pii_audit._tail_groups(bigint, bigint) IS
    'the groups after an id that recorded a subject or may have read it (subject_access beyond the index)';

CREATE OR REPLACE FUNCTION pii_audit._subject_groups(h bigint)
RETURNS TABLE (first_event_id bigint, min_time timestamptz, max_time timestamptz)
LANGUAGE sql STABLE ROWS 10 SET search_path = pg_catalog, pg_temp SET jit = off AS $$
    SELECT sl.first_event_id + o.offs, sl.min_time, sl.max_time
    FROM pii_audit.trail_subject_slices sl
    CROSS JOIN (VALUES (h), ((-9223372036854775807 - 1)::bigint)) AS want(hh)
    JOIN pii_audit.trail_subject_index x ON x.slice = sl.first_event_id
         AND x.bucket = CASE WHEN sl.bucket_bits = 0 THEN 0
                             ELSE (want.hh >> (64 - sl.bucket_bits))::integer END
    CROSS JOIN LATERAL pii_audit._subject_offsets(x.entries, want.hh) AS o(offs)
    UNION
    SELECT t.first_event_id, t.min_time, t.min_time
    FROM pii_audit._tail_groups((SELECT coalesce(max(last_event_id), 0)
                                 FROM pii_audit.trail_subject_slices), h) t
$$;

-- ---------------------------------------------------------------- groups spanning more than 10 s
-- A time filter on the views (event_time >= x) must find every group that has an event at x or
-- later. Groups span at most an hour, so it went back an hour through trail_groups_time: on a
-- trail written at 50,000 events/s that is an hour of groups filtered for a window of seconds.
-- Nearly every group spans a fraction of a second (one batch's events of one statement); the
-- few that span more (a backlog stored late, a long flush_interval) are in this index too, and
-- the planner hook (trail_planner.cpp) adds "min_time >= x - 10 s OR max_time - min_time >
-- 10 s", which the two indexes answer together. The predicate must stay exactly this
-- expression: the hook builds the same one.
CREATE INDEX trail_groups_long_span ON pii_audit.trail_groups (min_time)
    WHERE max_time - min_time > interval '10 seconds';

-- ---------------------------------------------------------------- no statistics of payloads
-- ANALYZE kept a histogram of the groups' payloads (about 40 kB of pg_statistic per month) and
-- of the subject index's entries, which no query filters on, and a new session's first plan
-- over the trail read and detoasted them (about 5 of its 25-35 ms). They are not collected any
-- more (new months too: _month_partition sets it), and those kept are removed.
ALTER TABLE pii_audit.trail_groups ALTER COLUMN payload SET STATISTICS 0;
ALTER TABLE pii_audit.trail_subject_index ALTER COLUMN entries SET STATISTICS 0;
DELETE FROM pg_catalog.pg_statistic s
USING pg_catalog.pg_class c, pg_catalog.pg_attribute a
WHERE c.oid = s.starelid AND a.attrelid = s.starelid AND a.attnum = s.staattnum
  AND c.relnamespace = 'pii_audit'::pg_catalog.regnamespace
  AND ((c.relname ~ '^trail_groups' AND a.attname = 'payload')
       OR (c.relname = 'trail_subject_index' AND a.attname = 'entries'));
CREATE OR REPLACE FUNCTION pii_audit._month_partition(day date) RETURNS regclass
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
    EXECUTE format('ALTER TABLE pii_audit.%I ALTER COLUMN payload SET STATISTICS 0', name);
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
