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
gone=$(q -d postgres -c "SELECT first_event_id FROM pii_audit.trail_groups WHERE event_count = 1 AND kind = 'read' ORDER BY first_event_id LIMIT 1 OFFSET 3")
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
