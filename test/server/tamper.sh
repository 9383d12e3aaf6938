#!/usr/bin/env bash
# tamper.sh: the trail's hash chain makes a superuser's edits detectable. As a superuser with
# the append-only triggers disabled, one step at a time (each undone before the next):
#   1. change one session's end_user       -> 'changed', naming the first event of that session
#   2. delete one event (a one-event group) -> 'removed', naming it
#   3. insert a forged event, inside a group's ids and past the end -> 'inserted', naming each
#   4. rewrite the events after one and recompute the whole chain after them (the digests of
#      the layout in trail_chain.h, recomputed here in plain SQL, as an outsider would)
#      -> verify_trail alone finds nothing; with the digests exported before
#      (pii_audit.export_digests, held outside), 'external_mismatch' names where it began.
# Also: who may verify, bad arguments, and that an untouched trail verifies 'ok'.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

dir=$(mktemp -d /tmp/pii_audit_tamper.XXXXXX)
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 20" >/dev/null
pgc_start "$dir" >/dev/null
q -d postgres <<'SQL'
CREATE EXTENSION pii_audit;
CREATE TABLE customers (id text PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT 'c' || i, 'name ' || i, '555-' || i FROM generate_series(1, 50) i;
SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
CREATE ROLE auditor LOGIN IN ROLE pii_audit_officer;
CREATE ROLE nobody LOGIN;
CREATE ROLE shipper LOGIN IN ROLE pii_audit_siem;
SQL
wait_until postgres "SELECT state = 'running' FROM pii_audit.status" 30 ||
    { echo "not ok - the worker did not start"; exit 1; }

# Reads by three clerks, in several batches (the worker flushes every 20 ms).
for round in 1 2 3 4; do
    for clerk in 1 2 3; do
        q -d postgres -c "SET pii_audit.end_user = 'clerk-$round-$clerk'" \
            -c "SELECT phone FROM customers WHERE id = 'c$round$clerk'" \
            -c "SELECT phone FROM customers WHERE id = 'c$clerk'" >/dev/null
    done
    sleep 0.2
done
# One statement twenty times in one session, microseconds apart: groups of several events.
q -d postgres -c "SET pii_audit.end_user = 'clerk-repeat'" \
    -c "DO \$\$ BEGIN FOR i IN 1..20 LOOP PERFORM phone FROM customers WHERE id = 'c' || i; END LOOP; END \$\$" >/dev/null
sleep 0.2
settled() {
    wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 30 ||
        { echo "not ok - the worker did not store the events"; exit 1; }
}
settled
verify() {  # verify [FROM TO [IDS DIGESTS]]: problem|event_id lines, as an officer
    local from=${1:-1} to=${2:-9223372036854775807} ext=${3:-}
    q -d postgres -U auditor -c "SELECT problem || '|' || event_id FROM pii_audit.verify_trail($from, $to$ext) ORDER BY event_id, problem"
}
batches=$(q -d postgres -c 'SELECT count(*) FROM pii_audit.trail_digests')
echo "# $batches batches, $(q -d postgres -c 'SELECT count(*) FROM pii_audit.trail_groups') groups, $(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events') events"
check "several batches are chained" t "$(q -d postgres -c "SELECT $batches >= 4")"
check "every batch chains to the one before" t \
    "$(q -d postgres -c 'SELECT bool_and(d.previous_digest = p.digest) FROM pii_audit.trail_digests d JOIN pii_audit.trail_digests p ON p.last_event_id = d.first_event_id - 1')"
check "the batches cover every event, without gaps" t \
    "$(q -d postgres -c 'SELECT min(first_event_id) = 1 AND sum(last_event_id - first_event_id + 1) = max(last_event_id) FROM pii_audit.trail_digests')"
check "an untouched trail verifies" "ok" "$(verify | cut -d'|' -f1)"
contains "and says what it verified" "batches" \
    "$(q -d postgres -U auditor -c 'SELECT detail FROM pii_audit.verify_trail(1, 9223372036854775807)')"

# ---- who may verify, and bad arguments
contains "a role without pii_audit_officer may not verify" "permission denied" \
    "$(q -d postgres -U nobody -c 'SELECT * FROM pii_audit.verify_trail(1, 10)' 2>&1 || true)"
contains "NULL bounds are refused" "must not be NULL" \
    "$(q -d postgres -U auditor -c 'SELECT * FROM pii_audit.verify_trail(NULL, 10)' 2>&1 || true)"
contains "a range that ends before it starts is refused" "at least from_event_id" \
    "$(q -d postgres -U auditor -c 'SELECT * FROM pii_audit.verify_trail(10, 9)' 2>&1 || true)"
contains "digests that are not hex are refused" "not 64 hexadecimal digits" \
    "$(q -d postgres -U auditor -c "SELECT * FROM pii_audit.verify_trail(1, 10, ARRAY[3]::bigint[], ARRAY['xyz'])" 2>&1 || true)"
contains "ids and digests of different lengths are refused" "has 2 items" \
    "$(q -d postgres -U auditor -c "SELECT * FROM pii_audit.verify_trail(1, 10, ARRAY[3, 4]::bigint[], ARRAY[repeat('0', 64)])" 2>&1 || true)"

echo "# ---- 1. one session's end_user changed"
victim=$(q -d postgres -c "SELECT min(event_id) FROM pii_audit.events WHERE end_user = 'clerk-2-2'")
q -d postgres <<'SQL'
ALTER TABLE pii_audit.trail_sessions DISABLE TRIGGER trail_sessions_append_only;
UPDATE pii_audit.trail_sessions SET end_user = 'clerk-9-9' WHERE end_user = 'clerk-2-2';
SQL
check "a changed end_user is named at the first event of its session" "changed|$victim" "$(verify | head -1)"
q -d postgres <<'SQL'
UPDATE pii_audit.trail_sessions SET end_user = 'clerk-2-2' WHERE end_user = 'clerk-9-9';
ALTER TABLE pii_audit.trail_sessions ENABLE ALWAYS TRIGGER trail_sessions_append_only;
SQL
check "put back, the trail verifies again" "ok" "$(verify | cut -d'|' -f1)"

echo "# ---- 2. one event deleted"
gone=$(q -d postgres -c "SELECT first_event_id FROM pii_audit.trail_groups WHERE event_count = 1 ORDER BY first_event_id LIMIT 1 OFFSET 5")
q -d postgres <<SQL
CREATE TABLE saved AS SELECT * FROM pii_audit.trail_groups WHERE first_event_id = $gone;
ALTER TABLE pii_audit.trail_groups DISABLE TRIGGER trail_append_only;
DELETE FROM pii_audit.trail_groups WHERE first_event_id = $gone;
SQL
check "a deleted event is named" "removed|$gone" "$(verify | head -1)"
q -d postgres <<SQL
INSERT INTO pii_audit.trail_groups SELECT * FROM saved;
SQL
check "put back, the trail verifies again" "ok" "$(verify | cut -d'|' -f1)"

echo "# ---- 3. forged events inserted"
triple=$(q -d postgres -c "SELECT first_event_id FROM pii_audit.trail_groups WHERE event_count >= 2 ORDER BY first_event_id LIMIT 1")
check "a group of several events was stored" t "$(q -d postgres -c "SELECT '$triple' <> ''")"
q -d postgres <<SQL
INSERT INTO pii_audit.trail_groups
SELECT $triple + 1, 1, min_time, max_time, recorded_at, session_id, statement_id, backend_pid,
       nesting_level, kind, payload
FROM saved;
INSERT INTO pii_audit.trail_groups
SELECT 1000000, 1, min_time, max_time, recorded_at, session_id, statement_id, backend_pid,
       nesting_level, kind, payload
FROM saved;
SQL
check "forged events are named, inside a group's ids and past the end" \
    "inserted|$((triple + 1)) inserted|1000000" "$(verify | tr '\n' ' ' | sed 's/ $//')"
q -d postgres -c "DELETE FROM pii_audit.trail_groups WHERE first_event_id IN ($triple + 1, 1000000)"
check "taken out again, the trail verifies again" "ok" "$(verify | cut -d'|' -f1)"

echo "# ---- 4. a rewrite after an event, with the whole chain recomputed"
# The digests a SIEM received (every 5 events), in each format.
settled
# (Each connection's login is an event: the trail grows while this runs.)
upto=$(q -d postgres -c "SELECT max(last_event_id) FROM pii_audit.trail_digests")
exported=$(q -d postgres -U shipper -c "SELECT count(*) FROM pii_audit.export_digests(0, 5, 'json') WHERE event_id <= $upto")
check "export_digests gives a digest every 5 events" t \
    "$(q -d postgres -c "SELECT $exported = count(*) AND $exported >= 4 FROM pii_audit.trail_digests WHERE last_event_id / 5 > (first_event_id - 1) / 5 AND last_event_id <= $upto")"
for format in json ocsf cef leef rfc5424; do
    check "each $format digest line carries its digest" "$exported" \
        "$(q -d postgres -U shipper -c "SELECT count(*) FROM pii_audit.export_digests(0, 5, '$format') WHERE event_id <= $upto AND strpos(line, digest) > 0 AND strpos(line, event_id::text) > 0")"
done
check "a json digest line parses and says what it is" t \
    "$(q -d postgres -U shipper -c "SELECT bool_and((line::json -> 'pii_audit' ->> 'digest') = digest AND (line::json -> 'pii_audit' ->> 'event_id')::bigint = event_id) FROM pii_audit.export_digests(0, 5, 'json')")"
contains "a bad interval is refused" "every_events must be 1 or more" \
    "$(q -d postgres -U shipper -c "SELECT * FROM pii_audit.export_digests(0, 0)" 2>&1 || true)"
contains "a bad format is refused" "json, ocsf, cef, leef, rfc5424" \
    "$(q -d postgres -U shipper -c "SELECT * FROM pii_audit.export_digests(0, 5, 'xml')" 2>&1 || true)"
held=$(q -d postgres -U shipper -c "SELECT 'ARRAY[' || string_agg(event_id::text, ',' ORDER BY event_id) || ']::bigint[], ARRAY[' || string_agg(quote_literal(digest), ',' ORDER BY event_id) || ']' FROM pii_audit.export_digests(0, 5, 'cef') WHERE event_id <= $upto")
check "with the digests held outside, an untouched trail verifies" "ok" "$(verify 1 9223372036854775807 ", $held" | cut -d'|' -f1)"

# The attacker's tools: the layout of include/pii_audit/trail_chain.h in plain SQL.
q -d postgres <<'SQL'
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
SQL
# The SQL above is a faithful outsider's copy of the layout: recomputing the untouched chain
# changes nothing.
q -d postgres -c "ALTER TABLE pii_audit.trail_digests DISABLE TRIGGER trail_digests_append_only" \
    -c "CREATE TABLE digests_before AS SELECT * FROM pii_audit.trail_digests" \
    -c "CALL attacker.rechain(1, $upto)"
check "the layout recomputed in plain SQL gives the worker's digests" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.trail_digests d JOIN digests_before b USING (first_event_id) WHERE (d.digest, d.previous_digest, d.groups) IS DISTINCT FROM (b.digest, b.previous_digest, b.groups)")"
# Clerk-4-3's reads are given to clerk-1-1, and the chain recomputed from there on.
framed=$(q -d postgres -c "SELECT min(event_id) FROM pii_audit.events WHERE end_user = 'clerk-4-3'")
q -d postgres <<SQL
ALTER TABLE pii_audit.trail_groups DISABLE TRIGGER trail_append_only;
UPDATE pii_audit.trail_groups SET session_id = (SELECT session_id FROM pii_audit.trail_sessions WHERE end_user = 'clerk-1-1')
WHERE session_id = (SELECT session_id FROM pii_audit.trail_sessions WHERE end_user = 'clerk-4-3');
CALL attacker.rechain($framed, $upto);
SQL
check "the reads now look like clerk-1-1's" 0 "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE end_user = 'clerk-4-3'")"
check "the recomputed chain verifies by itself" "ok" "$(verify 1 "$upto" | cut -d'|' -f1)"
first_changed=$(q -d postgres -c "SELECT coalesce(max(last_event_id), 0) + 1 FROM digests_before WHERE last_event_id < $framed AND last_event_id / 5 > (first_event_id - 1) / 5")
got=$(verify 1 "$upto" ", $held" | head -1)
check "the digests held outside catch it, naming where the rewrite can begin" "external_mismatch|$first_changed" "$got"
check "the event rewritten lies in the span named" t \
    "$(q -d postgres -U auditor -c "SELECT bool_or(detail LIKE '%events from $first_changed to %' AND $framed >= $first_changed) FROM pii_audit.verify_trail(1, $upto, $held) WHERE problem = 'external_mismatch' AND event_id = $first_changed")"

echo "# ---- 5. alerts and their reviews"
q -d postgres <<'SQL'
INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity, explanation, evidence)
SELECT now() - g * interval '1 minute', 'actor' || g, 'group', 'bulk_reading', 60, 'medium', 'test alert', '{1,2}'
FROM generate_series(1, 3) g;
SQL
q -d postgres -U auditor -c "UPDATE pii_audit.alerts SET status = 'acknowledged', note = 'looking' WHERE actor = 'actor2'"
verify_alerts() { q -d postgres -U auditor -c "SELECT problem || '|' || coalesce(alert_event_id::text, '-') FROM pii_audit.verify_alerts() ORDER BY alert_event_id, problem"; }
check "alert events are chained" 0 "$(q -d postgres -c "SELECT count(*) FROM pii_audit.alert_events WHERE digest IS NULL")"
check "untouched alerts and reviews verify" "ok|4" "$(verify_alerts)"
raised2=$(q -d postgres -c "SELECT e.alert_event_id FROM pii_audit.alert_events e JOIN pii_audit.alerts a USING (alert_id) WHERE a.actor = 'actor2' AND e.change = 'raised'")
q -d postgres -c "ALTER TABLE pii_audit.alerts DISABLE TRIGGER alerts_review" \
    -c "UPDATE pii_audit.alerts SET score = 5, severity = 'low' WHERE actor = 'actor2'"
check "an alert's score lowered is named at its raising" "changed|$raised2" "$(verify_alerts | head -1)"
q -d postgres -c "UPDATE pii_audit.alerts SET score = 60, severity = 'medium' WHERE actor = 'actor2'"
check "put back, alerts verify again" "ok|4" "$(verify_alerts)"
q -d postgres -c "ALTER TABLE pii_audit.alerts DISABLE TRIGGER alerts_export_status" \
    -c "UPDATE pii_audit.alerts SET note = 'nothing to see' WHERE actor = 'actor2'"
check "a review rewritten without its alert event is named" "changed|4" "$(verify_alerts | head -1)"
q -d postgres -c "UPDATE pii_audit.alerts SET note = 'looking' WHERE actor = 'actor2'" \
    -c "ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_export_status" \
    -c "ALTER TABLE pii_audit.alerts ENABLE ALWAYS TRIGGER alerts_review"
q -d postgres -c "ALTER TABLE pii_audit.alert_events DISABLE TRIGGER alert_events_append_only" \
    -c "CREATE TABLE saved_alert_event AS SELECT * FROM pii_audit.alert_events WHERE alert_event_id = 2" \
    -c "DELETE FROM pii_audit.alert_events WHERE alert_event_id = 2"
check "a deleted alert event is named" "removed|2" "$(verify_alerts | head -1)"
q -d postgres -c "INSERT INTO pii_audit.alert_events SELECT * FROM saved_alert_event" \
    -c "ALTER TABLE pii_audit.alert_events ENABLE ALWAYS TRIGGER alert_events_append_only"
check "put back, alerts verify again" "ok|4" "$(verify_alerts)"

check "no error in the server log" "" \
    "$(pgc_log "$dir" | grep -E 'ERROR|PANIC|TRAP|WARNING' | grep -v 'extension is not installed in audit database\|unknown export format\|permission denied\|must not be NULL\|at least from_event_id\|hexadecimal digits\|has 2 items\|every_events must be\|invalid export format\|not a SIEM format\|STATEMENT' | head -3)"

echo "# tamper: $passes passed, $failures failed"
if ((failures > 0)); then
    pgc_log "$dir" | tail -30
    exit 1
fi
