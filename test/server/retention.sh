#!/usr/bin/env bash
# retention.sh BUILD_DIR: old events leave the trail whole months at a time, each removal is an
# event of the trail, registered exports hold what they have not delivered, and the statistics
# autovacuum and ANALYZE need follow the inserts.
#
# The trail gets four old months of synthetic reads (the benchmark's loader module puts them in
# the queue, so the worker stores them through its production path), and real reads of now.
# Then, in order: a checkpoint at 0 holds everything; a checkpoint moved to the end of the oldest
# month releases that month only; remove_events refuses bad arguments, non-superusers and held
# months; dropping the checkpoint releases the rest. After each step: which months are left,
# the removal events (kind, count, ids, times, why, who), ids of what is left unchanged,
# events_after and subject_access on what is left. Meanwhile the maintenance process merges the
# subject index's slices: lookups find the same reads.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"
build_dir=$(cd "${1:?usage: retention.sh BUILD_DIR}" && pwd)
loader=$build_dir/bench/trail/pii_audit_trail_loader.so
[[ -f "$loader" ]] || { echo "not ok - no $loader (build $build_dir first)"; exit 1; }

dir=$(mktemp -d /tmp/pii_audit_retention.XXXXXX)
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
cp "$loader" "$dir/loader.so"
chmod 755 "$dir" && chmod 644 "$dir/loader.so"

# Autovacuum wakes every second and analyzes after a few hundred rows: its statistics of the
# trail are checked below.
pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50" \
    "pii_audit.subject_index_slice = 1000" "autovacuum_naptime = 1" \
    "autovacuum_analyze_threshold = 100" "autovacuum_vacuum_insert_threshold = 100" >/dev/null
pgc_start "$dir" >/dev/null
q -d postgres -c 'CREATE EXTENSION pii_audit'
q -d postgres -v subjects=500 -v actors=3 -v loader="$dir/loader.so" \
    -f "$repo/bench/trail/schema.sql" >/dev/null
q -d postgres <<SQL
CREATE ROLE auditor LOGIN IN ROLE pii_audit_officer;
CREATE ROLE shipper LOGIN IN ROLE pii_audit_siem;
SQL
wait_until postgres "SELECT state = 'running' FROM pii_audit.status" 30 ||
    { echo "not ok - the worker did not start"; exit 1; }

# 200,000 reads in 8 bursts spread over four whole months that ended at least a month ago.
span=$(q -d postgres -c "SELECT date_trunc('month', now() - interval '5 months') + interval '1 day', date_trunc('month', now() - interval '1 month') - interval '2 days'")
span_start=${span%%|*}
span_end=${span##*|}
# In 200 loads of 1,000 a little apart, so that the worker stores them in about as many batches
# and writes as many slices of the subject index (a slice ends with a batch).
taken=$(q -d postgres -c "CREATE FUNCTION pg_temp.load() RETURNS bigint LANGUAGE plpgsql AS \$\$
    DECLARE taken bigint := 0;
    BEGIN
        FOR i IN 0..199 LOOP
            taken := taken + bench_load(1000, i * 1000, 200000, 4, 3, 500, '$span_start', '$span_end', 1, 'postgres', ARRAY['customers'::regclass, 'accounts'::regclass, 'visits'::regclass]::oid[]);
            PERFORM pg_sleep(0.06);
        END LOOP;
        RETURN taken;
    END \$\$; SELECT pg_temp.load()")
check "the loader queued its 200,000 old reads" 200000 "$taken"
for i in 1 2 3 4 5; do q -d postgres -c "SELECT name FROM customers WHERE id = 'c$i'" >/dev/null; done
wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 120 ||
    { echo "not ok - the worker did not store the events"; exit 1; }
total=$(q -d postgres -c 'SELECT count(*) FROM pii_audit.events')
months() {  # the trail's partitions, oldest first
    q -d postgres -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'pii_audit.trail_groups'::regclass"
}
old_months=$(q -d postgres -c "SELECT count(DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC')) FROM pii_audit.events WHERE event_time < date_trunc('month', now() - interval '1 month')")
check "four old months hold events" 4 "$old_months"
before=$(months)
echo "# partitions: $before"
check "events_after pulls every event in id order, across groups and months" t \
    "$(q -d postgres -U auditor -c "SELECT array_agg(event_id) = array_agg(event_id ORDER BY event_id) AND min(event_id) = 1 AND max(event_id) = count(*) AND count(*) >= $total FROM pii_audit.events_after(0, 1000000)")"

# ---- the subject index: the worker writes slices of at least 1,000 entries; the maintenance
# process merges them, 16 at a time, while the worker goes on storing. (Level 2 needs 256
# slices; the regression suite merges that far with a fanout of 2.)
wait_until postgres "SELECT count(*) FILTER (WHERE level = 0) < 16 FROM pii_audit.trail_subject_slices" 90 || true
check "the worker wrote a slice per load" t \
    "$(q -d postgres -c "SELECT sum(CASE level WHEN 0 THEN 1 WHEN 1 THEN 16 ELSE 256 END) >= 150 FROM pii_audit.trail_subject_slices")"
check "the maintenance process merged every run of 16 slices" "t|t" \
    "$(q -d postgres -c "SELECT count(*) FILTER (WHERE level = 1) >= 9, count(*) FILTER (WHERE level = 0) < 16 FROM pii_audit.trail_subject_slices")"
for who in c7 c250 c499; do
    check "subject_access over merged slices finds every read of $who" \
        "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE pii_audit.subject_hash('$who') = ANY (subjects)")" \
        "$(q -d postgres -U auditor -c "SELECT count(*) FROM pii_audit.subject_access('$who')")"
done
check "the index's rows are still refused to anyone else" "ERROR:  the pii_audit trail is append-only: DELETE on trail_subject_index is not allowed" \
    "$(q -d postgres -c "DELETE FROM pii_audit.trail_subject_index WHERE slice = (SELECT min(slice) FROM pii_audit.trail_subject_index)" 2>&1 | head -1)"

# ---- statistics: what autovacuum and ANALYZE see
# Every inserted group row is counted in the cumulative statistics, and autoanalyze gives the
# planner the partitions' sizes.
if wait_until postgres "SELECT (SELECT count(*) FROM pii_audit.trail_groups) = (SELECT sum(n_tup_ins)
        FROM pg_stat_user_tables WHERE relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'pii_audit.trail_groups'::regclass))" 30; then
    check "n_tup_ins of the trail's partitions counts every stored group" ok ok
else
    check "n_tup_ins of the trail's partitions counts every stored group" \
        "$(q -d postgres -c 'SELECT count(*) FROM pii_audit.trail_groups')" \
        "$(q -d postgres -c "SELECT sum(n_tup_ins) FROM pg_stat_user_tables WHERE relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'pii_audit.trail_groups'::regclass)")"
fi
if wait_until postgres "SELECT bool_and(abs(c.reltuples - (SELECT count(*) FROM pii_audit.trail_groups g WHERE g.tableoid = c.oid)) <= 0.1 * (SELECT count(*) FROM pii_audit.trail_groups g WHERE g.tableoid = c.oid))
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pii_audit.trail_groups'::regclass
          AND (SELECT count(*) FROM pii_audit.trail_groups g WHERE g.tableoid = c.oid) > 100" 60; then
    check "autoanalyze gave every partition with rows its row count (within 10%)" ok ok
else
    check "autoanalyze gave every partition with rows its row count (within 10%)" ok \
        "$(q -d postgres -c "SELECT string_agg(c.relname || '=' || c.reltuples, ' ') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'pii_audit.trail_groups'::regclass")"
fi

# ---- the setting
contains "retention refuses a value without a unit" 'needs a unit' \
    "$(q -d postgres -c "ALTER SYSTEM SET pii_audit.retention = '400'" 2>&1 || true)"
contains "retention refuses hours" 'unknown unit "hours"' \
    "$(q -d postgres -c "ALTER SYSTEM SET pii_audit.retention = '400 hours'" 2>&1 || true)"
contains "retention refuses less than a day" 'at least one day' \
    "$(q -d postgres -c "ALTER SYSTEM SET pii_audit.retention = '0 days'" 2>&1 || true)"
contains "retention cannot be SET in a session" 'cannot be changed now' \
    "$(q -d postgres -c "SET pii_audit.retention = '1 day'" 2>&1 || true)"

# ---- a registered export holds everything it has not delivered
contains "a checkpoint cannot claim events not stored yet" 'is not in the trail yet' \
    "$(q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('siem', $total + 1000)" 2>&1 || true)"
contains "a checkpoint name is checked" 'invalid export checkpoint name' \
    "$(q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('bad name;', 1)" 2>&1 || true)"
contains "a checkpoint is never negative" 'must not be negative' \
    "$(q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('siem', -1)" 2>&1 || true)"
q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('siem', 0)" >/dev/null
q -d postgres -c "ALTER SYSTEM SET pii_audit.retention = '1 day'" -c 'SELECT pg_reload_conf()' >/dev/null
sleep 3
check "a checkpoint at 0 holds every month" "$before" "$(months)"
check "nothing held was recorded as removed" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'removal'")"

# The oldest month's last id: the checkpoint moves there, and only that month may go.
oldest=${before%% *}
first_last=$(q -d postgres -c "SELECT min(first_event_id) || ' ' || max(first_event_id + event_count - 1) || ' ' || sum(event_count) FROM pii_audit.$oldest")
read -r oldest_first oldest_last oldest_events <<<"$first_last"
q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('siem', $oldest_last)" >/dev/null
q -d postgres -U shipper -c "SELECT pii_audit.export_checkpoint('siem', 1)" >/dev/null
check "a checkpoint never moves back" "$oldest_last" \
    "$(q -d postgres -c "SELECT delivered_event_id FROM pii_audit.export_checkpoints WHERE name = 'siem'")"
q -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE kind = 'removal'" 30; then
    check "the worker removed the delivered month and recorded it" ok ok
else
    check "the worker removed the delivered month and recorded it" ok "$(months); $(pgc_log "$dir" | grep -i 'retention\|remov' | tail -3)"
fi
check "only the delivered month is gone" "${before#* }" "$(months)"
removal=$(q -d postgres -c "SELECT status || '|' || row_count || '|' || relation || '|' || command || '|' || detail FROM pii_audit.events WHERE kind = 'removal'")
check "the removal says completed, how many, which partition, REMOVE EVENTS" \
    "completed|$oldest_events|pii_audit.$oldest|REMOVE EVENTS" "$(cut -d'|' -f1-4 <<<"$removal")"
contains "the removal names the ids" "ids from $oldest_first to $oldest_last" "$removal"
contains "the removal says why" "removed: older than pii_audit.retention (1 day)" "$removal"
check "the removal is in access_log too" 1 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'removal'")"
check "every other event is still there, ids unchanged" "$((total - oldest_events))" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind <> 'removal' AND event_id <= $total")"
check "no event of the removed ids is left" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_id BETWEEN $oldest_first AND $oldest_last")"
check "events_after(0) starts at the oldest event left" \
    "$(q -d postgres -c "SELECT min(event_id) FROM pii_audit.events")" \
    "$(q -d postgres -U auditor -c "SELECT min(event_id) FROM pii_audit.events_after(0, 10)")"

# ---- remove_events: refusals first, each leaving everything in place
now_months=$(months)
contains "remove_events: officers may not" 'permission denied for function remove_events' \
    "$(q -d postgres -U auditor -c "SELECT * FROM pii_audit.remove_events(now(), 'x')" 2>&1 || true)"
contains "remove_events: a reason is required" 'and why (reason)' \
    "$(q -d postgres -c "SELECT * FROM pii_audit.remove_events(now(), '  ')" 2>&1 || true)"
contains "remove_events: not the future" 'is in the future' \
    "$(q -d postgres -c "SELECT * FROM pii_audit.remove_events(now() + interval '1 day', 'x')" 2>&1 || true)"
contains "remove_events: a checkpoint holds undelivered months" 'export checkpoint "siem" has delivered events up to' \
    "$(q -d postgres -c "SELECT * FROM pii_audit.remove_events(now(), 'cleanup')" 2>&1 || true)"
check "refused removals removed nothing" "$now_months" "$(months)"

# ---- the checkpoint dropped: the worker removes every month past retention
contains "only pii_audit_admin may drop a checkpoint" 'permission denied' \
    "$(q -d postgres -U shipper -c "SELECT pii_audit.drop_export_checkpoint('siem')" 2>&1 || true)"
contains "dropping an unknown checkpoint says so" 'there is no export checkpoint "nope"' \
    "$(q -d postgres -c "SELECT pii_audit.drop_export_checkpoint('nope')" 2>&1 || true)"
q -d postgres -c "SELECT pii_audit.drop_export_checkpoint('siem')" -c 'SELECT pg_reload_conf()' >/dev/null
expect_left=$(q -d postgres -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'pii_audit.trail_groups'::regclass
      AND (to_date(substr(c.relname, 15), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC'
          + interval '1 hour' > now() - interval '1 day'")
if wait_until postgres "SELECT count(*) = 4 FROM pii_audit.events WHERE kind = 'removal'" 30; then
    check "the worker removed the other three old months" ok ok
else
    check "the worker removed the other three old months" ok "$(months)"
fi
check "the months left are those not entirely past retention" "$expect_left" "$(months)"
check "no old read is left" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'read' AND event_time < '$span_end'::timestamptz + interval '1 day'")"
check "the removals add up to the old reads" 200000 \
    "$(q -d postgres -c "SELECT sum(row_count) FROM pii_audit.events WHERE kind = 'removal'")"
check "the subject index keeps no slice of removed events" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.trail_subject_slices WHERE last_event_id < (SELECT min(first_event_id) FROM pii_audit.trail_groups)")"
check "subject_access still finds today's read of c3" 1 \
    "$(q -d postgres -U auditor -c "SELECT count(*) FROM pii_audit.subject_access('c3') WHERE event_time > now() - interval '1 hour'")"
check "subject_access finds no removed read" 0 \
    "$(q -d postgres -U auditor -c "SELECT count(*) FROM pii_audit.subject_access('c3') WHERE event_time < now() - interval '1 day'")"

# ---- a superuser's removal on demand, recorded with who and why
q -d postgres -c "ALTER SYSTEM RESET pii_audit.retention" -c 'SELECT pg_reload_conf()' >/dev/null
q -d postgres -c "SELECT bench_load(1000, 0, 1000, 2, 3, 500, '$span_start', '$span_start'::timestamptz + interval '1 day', 2, 'postgres', ARRAY['customers'::regclass, 'accounts'::regclass, 'visits'::regclass]::oid[])" >/dev/null
wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 60 || true
late=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_time < '$span_start'::timestamptz + interval '2 days'")
check "late old events went into a month of their own" 1000 "$late"
late_month=$(q -d postgres -c "SELECT 'pii_audit.trail_groups_p' || to_char('$span_start'::timestamptz AT TIME ZONE 'UTC', 'YYYYMM')")
q -d postgres -c "BEGIN; SELECT count(*) FROM pii_audit.remove_events(now() - interval '1 day', 'trial'); ROLLBACK" >/dev/null
check "a rolled-back removal removed nothing" 1000 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_time < '$span_start'::timestamptz + interval '2 days'")"
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE kind = 'removal' AND detail LIKE '%by postgres: trial'" 30; then
    check "a rolled-back removal is recorded as failed" "failed|1000|$late_month" \
        "$(q -d postgres -c "SELECT status || '|' || row_count || '|' || relation FROM pii_audit.events WHERE kind = 'removal' AND detail LIKE '%trial'")"
else
    check "a rolled-back removal is recorded as failed" recorded "not recorded"
fi
removed=$(q -d postgres -c "SELECT removed_partition || '|' || events FROM pii_audit.remove_events(now() - interval '1 day', 'case 2026-17 closed')")
check "remove_events returns what it removed" "$late_month|1000" "$removed"
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE kind = 'removal' AND status = 'completed' AND detail LIKE '%case 2026-17 closed'" 30; then
    check "remove_events is recorded" ok ok
else
    check "remove_events is recorded" ok "$(q -d postgres -c "SELECT detail FROM pii_audit.events WHERE kind = 'removal'")"
fi
check "the record names who removed and why, in their session" "postgres|postgres|removed: by postgres: case 2026-17 closed" \
    "$(q -d postgres -c "SELECT session_user_name || '|' || current_user_name || '|' || substring(detail from 'removed: .*') FROM pii_audit.events WHERE kind = 'removal' AND detail LIKE '%case 2026-17%'")"
contains "a removal with nothing to remove says so" 'nothing removed' \
    "$(q -d postgres -c "SELECT * FROM pii_audit.remove_events(now() - interval '1 day', 'again')" 2>&1)"
load_late() {  # load_late N SEED: N reads on the first day of the oldest month, stored
    q -d postgres -c "SELECT bench_load($1, 0, $1, 2, 3, 500, '$span_start', '$span_start'::timestamptz + interval '1 day', $2, 'postgres', ARRAY['customers'::regclass, 'accounts'::regclass, 'visits'::regclass]::oid[])" >/dev/null
    wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 60 || true
}

# ---- a long reader holds the trail: the worker's removal gives up after its lock timeout,
# records nothing, and removes the month once the reader is gone
load_late 500 3
removals=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'removal'")
completed=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'removal' AND status = 'completed'")
q -d postgres -c "BEGIN; SELECT count(*) FROM pii_audit.trail_groups; SELECT pg_sleep(4); COMMIT" >/dev/null &
reader=$!
sleep 0.5
q -d postgres -c "ALTER SYSTEM SET pii_audit.retention = '1 day'" -c 'SELECT pg_reload_conf()' >/dev/null
if wait_until postgres "SELECT true" 1 && sleep 2 && pgc_log "$dir" | grep -q 'could not remove events past retention: canceling statement due to lock timeout'; then
    check "a reader holding the trail makes the worker give up after its lock timeout" ok ok
else
    check "a reader holding the trail makes the worker give up after its lock timeout" logged "$(pgc_log "$dir" | grep -i 'retention' | tail -2)"
fi
check "the removal given up is not recorded" "$removals" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'removal'")"
wait "$reader"
q -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
if wait_until postgres "SELECT count(*) = $completed + 1 FROM pii_audit.events WHERE kind = 'removal' AND status = 'completed'" 30; then
    check "once the reader is gone the month is removed" ok ok
else
    check "once the reader is gone the month is removed" ok "$(months)"
fi
check "no failed removal besides the rolled-back one" 1 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'removal' AND status = 'failed'")"

# ---- a superuser's DROP TABLE of a month, bypassing remove_events, is recorded from its rows
q -d postgres -c "ALTER SYSTEM RESET pii_audit.retention" -c 'SELECT pg_reload_conf()' >/dev/null
load_late 700 4
q -d postgres -c "DROP TABLE $late_month" >/dev/null
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE kind = 'removal' AND command = 'DROP TABLE'" 30; then
    check "a direct DROP TABLE of a month is recorded" "completed|700|$late_month|postgres" \
        "$(q -d postgres -c "SELECT status || '|' || row_count || '|' || relation || '|' || session_user_name FROM pii_audit.events WHERE kind = 'removal' AND command = 'DROP TABLE'")"
    contains "and says it bypassed retention" "dropped directly, not by retention or pii_audit.remove_events" \
        "$(q -d postgres -c "SELECT detail FROM pii_audit.events WHERE kind = 'removal' AND command = 'DROP TABLE'")"
else
    check "a direct DROP TABLE of a month is recorded" recorded "not recorded"
fi

check "the ids missing are exactly the events the completed removals name" \
    "$(q -d postgres -c "SELECT sum(row_count) FROM pii_audit.events WHERE kind = 'removal' AND status = 'completed'")" \
    "$(q -d postgres -c "SELECT max(event_id) - count(*) FROM pii_audit.events")"
# ---- tamper evidence: the recorded removals are not tampering, an unrecorded one is
check "the chain verifies across the recorded removals" ok \
    "$(q -d postgres -U auditor -c "SELECT string_agg(problem, ' ') FROM pii_audit.verify_trail(1, 9223372036854775807)")"
hidden=$(q -d postgres -c "SELECT max(first_event_id) FROM pii_audit.trail_groups WHERE kind = 'read'")
q -d postgres -c "ALTER TABLE pii_audit.trail_groups DISABLE TRIGGER trail_append_only" \
    -c "CREATE TABLE hidden AS SELECT * FROM pii_audit.trail_groups WHERE first_event_id = $hidden" \
    -c "DELETE FROM pii_audit.trail_groups WHERE first_event_id = $hidden"
check "a group deleted without a recorded removal is named" "removed|$hidden" \
    "$(q -d postgres -U auditor -c "SELECT problem || '|' || event_id FROM pii_audit.verify_trail(1, 9223372036854775807) ORDER BY event_id LIMIT 1")"
q -d postgres -c "INSERT INTO pii_audit.trail_groups SELECT * FROM hidden" \
    -c "ALTER TABLE pii_audit.trail_groups ENABLE ALWAYS TRIGGER trail_append_only" -c "DROP TABLE hidden"

# ---- DROP EXTENSION takes the trail with it: the new trail starts with what was dropped
kept=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events")
q -d postgres -c 'DROP EXTENSION pii_audit CASCADE' -c 'CREATE EXTENSION pii_audit' 2>/dev/null
if wait_until postgres "SELECT count(*) > 0 FROM pii_audit.events WHERE kind = 'removal'" 30; then
    # At least what the count saw; logins of the connections after it may have joined them.
    check "after DROP EXTENSION the new trail records the events dropped with the old one" t \
        "$(q -d postgres -c "SELECT sum(row_count) BETWEEN $kept AND $kept + 3 FROM pii_audit.events WHERE kind = 'removal' AND command = 'DROP TABLE'")"
else
    check "after DROP EXTENSION the new trail records the events dropped with the old one" recorded "not recorded"
fi

check "no error in the server log" "" \
    "$(pgc_log "$dir" | grep -E 'ERROR|PANIC|TRAP|WARNING' | grep -v 'extension is not installed in audit database\|invalid value for parameter\|cannot be changed now\|permission denied\|must not be negative\|not in the trail yet\|invalid export checkpoint\|no export checkpoint\|is in the future\|and why (reason)\|has delivered events up to\|DELETE on trail_subject_index is not allowed\|STATEMENT' | head -3)"

echo "# retention: $passes passed, $failures failed"
if ((failures > 0)); then
    pgc_log "$dir" | tail -30
    exit 1
fi
