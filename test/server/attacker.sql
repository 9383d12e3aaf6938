-- The attacker's tools for test/server/tamper.sh and verify.sh: the layout of
-- include/pii_audit/trail_chain.h in plain SQL, as an outsider would write it, and
-- attacker.rechain(from, upto), which recomputes the chain's digests over those events.
CREATE SCHEMA attacker;
CREATE FUNCTION attacker.le(v bigint, n int) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT decode(string_agg(lpad(to_hex((v >> (8 * i)) & 255), 2, '0'), '' ORDER BY i), 'hex')
    FROM generate_series(0, n - 1) i $$;
CREATE FUNCTION attacker.i8(v bigint) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || attacker.le(v, 8) END $$;
CREATE FUNCTION attacker.i4(v bigint) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || attacker.le(v, 4) END $$;
CREATE FUNCTION attacker.us(t timestamptz) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT attacker.i8((extract(epoch FROM t - '2000-01-01 00:00:00+00') * 1000000)::bigint) $$;
CREATE FUNCTION attacker.b(v boolean) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea WHEN v THEN '\x0101'::bytea ELSE '\x0100'::bytea END $$;
CREATE FUNCTION attacker.raw(v bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || attacker.le(octet_length(v), 4) || v END $$;
CREATE FUNCTION attacker.t(v text) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT attacker.raw(convert_to(v, pg_catalog.getdatabaseencoding())) $$;
CREATE FUNCTION attacker.list(v text[]) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || attacker.le(cardinality(v), 4)
        || coalesce((SELECT string_agg(attacker.le(octet_length(convert_to(x, pg_catalog.getdatabaseencoding())), 4)
                                       || convert_to(x, pg_catalog.getdatabaseencoding()), ''::bytea ORDER BY o)
                     FROM unnest(v) WITH ORDINALITY u(x, o)), ''::bytea) END $$;
CREATE FUNCTION attacker.ip(v inet) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea
        ELSE '\x01'::bytea || CASE WHEN family(v) = 4 THEN '\x04'::bytea ELSE '\x06'::bytea END
             || attacker.le(masklen(v), 1) || substring(inet_send(v) FROM 5) END $$;
CREATE FUNCTION attacker.group_digest(g pii_audit.trail_groups) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT sha256('\x4702'::bytea || attacker.i8(g.first_event_id) || attacker.i4(g.event_count)
        || attacker.us(g.min_time) || attacker.us(g.max_time) || attacker.us(g.recorded_at)
        || attacker.t(g.kind) || attacker.i4(g.backend_pid) || attacker.i4(g.nesting_level)
        || '\x01'::bytea || (SELECT sha256('\x5302'::bytea || attacker.t(s.database_name)
               || attacker.t(s.session_user_name) || attacker.t(s.current_user_name)
               || attacker.t(s.end_user) || attacker.t(s.application_name) || attacker.ip(s.client_addr)
               || attacker.t(s.server_name))
               FROM pii_audit.trail_sessions s WHERE s.session_id = g.session_id)
        || CASE WHEN g.statement_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea ||
               (SELECT sha256('\x5402'::bytea || attacker.t(st.command) || attacker.t(st.relation)
                   || attacker.i4(st.relation_oid::bigint) || attacker.list(st.columns)
                   || attacker.list(st.categories) || attacker.i8(st.query_id)
                   || attacker.t(st.query_text) || attacker.b(st.query_truncated))
                FROM pii_audit.trail_statements st WHERE st.statement_id = g.statement_id) END
        || attacker.raw(g.payload)) $$;
-- Recomputes every batch's digest from the one that holds event from_id up to event upto_id.
CREATE PROCEDURE attacker.rechain(from_id bigint, upto_id bigint) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    prev bytea;
    gs bytea;
    entries bytea;
    n integer;
    d bytea;
BEGIN
    SELECT coalesce((SELECT digest FROM pii_audit.trail_digests WHERE last_event_id < from_id
                     ORDER BY last_event_id DESC LIMIT 1), decode(repeat('00', 32), 'hex')) INTO prev;
    FOR r IN SELECT * FROM pii_audit.trail_digests WHERE last_event_id >= from_id
             AND last_event_id <= upto_id ORDER BY first_event_id LOOP
        SELECT string_agg('\x01'::bytea || x.gd, ''::bytea ORDER BY x.fe),
               string_agg(attacker.le(x.cnt, 2) || substring(x.gd FROM 1 FOR 8), ''::bytea ORDER BY x.fe),
               count(*)
        INTO gs, entries, n
        FROM (SELECT g.first_event_id AS fe, g.event_count AS cnt, attacker.group_digest(g) AS gd
              FROM pii_audit.trail_groups g
              WHERE g.first_event_id BETWEEN r.first_event_id AND r.last_event_id) x;
        d := sha256('\x4202'::bytea || '\x01'::bytea || prev || attacker.i8(r.first_event_id)
                    || attacker.i8(r.last_event_id) || attacker.i4(n) || gs);
        UPDATE pii_audit.trail_digests SET previous_digest = prev, digest = d, groups = entries
        WHERE first_event_id = r.first_event_id;
        prev := d;
    END LOOP;
END
$$;
