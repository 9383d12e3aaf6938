#!/usr/bin/env bash
# lifecycle.sh: what happens around the server, each against its own throwaway cluster:
#   1. CREATE EXTENSION without shared_preload_libraries fails and says what to add;
#   2. a missing audit database: reads neither fail nor hang, the status says why, and the
#      queued events arrive once the database and extension exist;
#   3. labels survive pg_dump/restore, and pg_dump's own reads are in the trail;
#   4. a fast shutdown flushes the queue: every read issued before it is in the trail;
#   5.-7. the worker's position, crashes, the subject key (see each section);
#   8. insider baselines survive a clean stop and a crash;
#   9. text the audit database's encoding cannot hold is stored as '?', never retried forever;
#  10. a group spanning more than 10 s (reads queued while the trail was missing) is found by
#      every time filter on the views.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

dir=$(mktemp -d /tmp/pii_audit_life.XXXXXX)
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

fresh_cluster() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    pgc_init "$dir" auto "$@" >/dev/null
    pgc_start "$dir" >/dev/null
}
schema='CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT g, $$n$$ || g, $$138$$ || g FROM generate_series(1, 100) g;
SECURITY LABEL FOR pii ON COLUMN customers.name IS $$name$$;
SECURITY LABEL FOR pii ON COLUMN customers.phone IS $$phone, subject_key$$;'

# 1. Not preloaded.
fresh_cluster
out=$(q -d postgres -c 'CREATE EXTENSION pii_audit' 2>&1 || true)
contains "no preload: refused" "pii_audit must be loaded at server start" "$out"
contains "no preload: says what to add" "shared_preload_libraries = 'pii_audit'" "$out"
check "no preload: nothing installed" "0" "$(q -d postgres -c "SELECT count(*) FROM pg_extension WHERE extname = 'pii_audit'")"

# 2. The audit database does not exist yet.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.database = 'trail'" \
    "pii_audit.flush_interval = 50"
q -d postgres -c 'CREATE EXTENSION pii_audit' -c "$schema"
check "missing database: status says so" "audit database missing" \
    "$(q -d postgres -c 'SELECT state FROM pii_audit.status')"
out=$(q -d postgres -c "SET statement_timeout = '20s'" \
    -c 'SELECT count(*) FROM (SELECT name FROM customers WHERE id = 1) s' \
    -c 'SELECT count(*) FROM (SELECT phone FROM customers WHERE id = 2) s' 2>&1 || true)
check "missing database: reads succeed" "$(printf '1\n1')" "$out"
# Two label changes, two reads, and the logins of four psql sessions (this one included).
check "missing database: events wait in the queue" "8" \
    "$(q -d postgres -c 'SELECT events_enqueued - events_persisted FROM pii_audit.status')"
q -d postgres -c 'CREATE DATABASE trail'
q -d trail -c 'CREATE EXTENSION pii_audit'
if wait_until trail "SELECT count(*) = 2 FROM pii_audit.access_log WHERE kind = 'read'" 30; then
    check "missing database: queued events arrive" ok ok
else
    check "missing database: queued events arrive" 2 \
        "$(q -d trail -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'read'")"
fi
check "missing database: events name their database" "postgres|public.customers|{name}" \
    "$(q -d trail -c "SELECT database_name, relation, columns FROM pii_audit.access_log WHERE kind = 'read' ORDER BY event_id LIMIT 1")"

# 3. pg_dump / restore.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50"
q -d postgres -c 'CREATE EXTENSION pii_audit'
q -d postgres -c 'CREATE DATABASE app'
q -d app -c 'CREATE EXTENSION pii_audit' -c "$schema"
sock=$(pgc_sockdir "$dir")
port=$(pgc_port "$dir")
"$(pgc__bindir)/pg_dump" -h "$sock" -p "$port" -U postgres -d app -f "$dir/app.sql"
q -d postgres -c 'CREATE DATABASE restored'
q -d restored -f "$dir/app.sql" >/dev/null
check "pg_dump: labels survive restore" "name:name|phone:phone, subject_key" \
    "$(q -d restored -c "SELECT string_agg(column_name || ':' || label, '|' ORDER BY attnum) FROM pii_audit.labelled_columns")"
if wait_until postgres "SELECT count(*) >= 1 FROM pii_audit.access_log WHERE database_name = 'app' AND command = 'COPY'" 30; then
    check "pg_dump: its read of the table is in the trail" ok ok
else
    check "pg_dump: its read of the table is in the trail" "a COPY event" "none"
fi

# 4. A fast shutdown flushes everything queued.
q -d app -c 'SELECT name FROM customers' \
    -c 'SELECT phone FROM customers WHERE id < 10' >/dev/null
for i in $(seq 1 200); do echo "SELECT name FROM customers WHERE id = $((i % 100 + 1));"; done |
    q -d app >/dev/null
before=$(q -d postgres -c 'SELECT events_enqueued FROM pii_audit.status')
pgc_stop "$dir" fast >/dev/null
pgc_start "$dir" >/dev/null
# (Events of the restarted server, such as this check's own login, do not count.)
check "fast shutdown: every queued event persisted" "$before" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind <> 'gap' AND event_time < pg_postmaster_start_time()")"
check "fast shutdown: no gap recorded" "0" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")"

# 5. A trail restored from a dump comes without the worker's position: the worker must continue
#    after the highest event_id it finds, never reuse one.
q -d postgres -c 'UPDATE pii_audit.worker_state SET last_event_id = 0' \
    -c 'SELECT pg_terminate_backend(worker_pid) FROM pii_audit.status' >/dev/null
wait_until postgres "SELECT state = 'running' AND worker_pid IS NOT NULL FROM pii_audit.status" 30 || true
q -d app -c 'SELECT name FROM customers WHERE id = 2' >/dev/null
if wait_until postgres "SELECT count(*) = count(DISTINCT event_id) AND max(event_id) = count(*) FROM pii_audit.events" 30 &&
    wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE database_name = 'app' AND query_text LIKE 'SELECT name FROM customers WHERE id = \$1' AND event_time > now() - interval '1 minute' AND row_count = 1 AND event_id = (SELECT max(event_id) FROM pii_audit.events WHERE kind = 'read')" 30; then
    check "lost worker position: ids continue, gapless and unique" ok ok
else
    check "lost worker position: ids continue, gapless and unique" "gapless unique ids" \
        "$(q -d postgres -c 'SELECT count(*), count(DISTINCT event_id), max(event_id) FROM pii_audit.events')"
fi

# 6. A crash after the worker had been restarted by SIGTERM: the event queued at the crash is
#    kept in the queue file and stored after the restart, and no gap is recorded.
old_worker=$(q -d postgres -c 'SELECT worker_pid FROM pii_audit.status')
q -d postgres -c 'SELECT pg_terminate_backend(worker_pid) FROM pii_audit.status' >/dev/null
# The new worker must have taken over (marked its run unclean) before the table is locked,
# or it would still be waiting for the lock when the server crashes.
wait_until postgres "SELECT s.state = 'running' AND s.worker_pid <> $old_worker AND NOT w.clean_shutdown FROM pii_audit.status s, pii_audit.worker_state w" 30 || true
gaps_before=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")
# Hold the trail's table so the queued read cannot be stored, then crash the server.
(q -d postgres -c 'BEGIN; LOCK TABLE pii_audit.trail_groups IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)' \
    >/dev/null 2>&1 || true) &
locker=$!
wait_until postgres "SELECT count(*) = 1 FROM pg_locks WHERE relation = 'pii_audit.trail_groups'::regclass AND mode = 'AccessExclusiveLock' AND granted" 30 || true
q -d app -c 'SELECT name, phone FROM customers WHERE id = 97' >/dev/null
wait_until postgres "SELECT queue_depth_bytes > 0 FROM pii_audit.status" 10 || true
locker_pid=$(q -d postgres -c "SELECT pid FROM pg_locks WHERE relation = 'pii_audit.trail_groups'::regclass AND mode = 'AccessExclusiveLock' AND granted")
kill -9 "$locker_pid" 2>/dev/null || runuser -u postgres -- kill -9 "$locker_pid"
wait "$locker" 2>/dev/null || true
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE kind = 'read' AND database_name = 'app' AND query_text = 'SELECT name, phone FROM customers WHERE id = \$1'" 60; then
    check "crash after a worker restart: the queued read is stored after the restart" ok ok
else
    check "crash after a worker restart: the queued read is stored after the restart" "the read" \
        "$(q -d postgres -c "SELECT event_id, kind, query_text FROM pii_audit.events ORDER BY event_id DESC LIMIT 5" 2>&1)"
fi
check "crash after a worker restart: no gap recorded" "$gaps_before" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")"

# 7. The subject key: created at first start, private to the server's OS user, stable across
#    restarts; never in the log or the trail; a damaged key loses hashes, not events.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50"
q -d postgres -c 'CREATE EXTENSION pii_audit' -c "$schema"
key="$dir/data/pii_audit_subject.key"
check "subject key: created, 32 bytes, owner-only" "32 600 postgres" \
    "$(stat -c '%s %a %U' "$key" 2>&1)"
first=$(q -d postgres -c "SELECT pii_audit.subject_hash('13842')")
q -d postgres -c 'SELECT name FROM customers WHERE id = 42' >/dev/null
wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE subject_count = 1" 30 || true
pgc_restart "$dir" >/dev/null
check "subject key: the same hashes after a restart" "$first" \
    "$(q -d postgres -c "SELECT pii_audit.subject_hash('13842')")"
check "subject key: events recorded before the restart still match" "1" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.subject_access('13842') WHERE match = 'recorded'")"
leaks=$(grep -c -e '13842' -e "$(od -An -tx1 "$key" | tr -d ' \n' | cut -c1-16)" "$dir/server.log" || true)
check "subject key: no identifier or key bytes in the server log" "0" "$leaks"
pgc_stop "$dir" >/dev/null
printf 'short' >"$key"
pgc_start "$dir" >/dev/null
contains "damaged key: the log says so" "is not exactly 32 bytes" "$(cat "$dir/server.log")"
out=$(q -d postgres -c "SELECT pii_audit.subject_hash('13842')" 2>&1 || true)
contains "damaged key: hashing refuses with a reason" "has no subject key" "$out"
q -d postgres -c 'SELECT name FROM customers WHERE id = 43' >/dev/null
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE subject_count = 1 AND subjects = '{}' AND subjects_truncated" 30; then
    check "damaged key: the read is recorded with its count, without hashes" ok ok
else
    check "damaged key: the read is recorded with its count, without hashes" "1 row" \
        "$(q -d postgres -c 'SELECT subject_count, subjects, subjects_truncated FROM pii_audit.events ORDER BY event_id DESC LIMIT 1' 2>&1)"
fi
check "damaged key: the file is left for the DBA to restore" "5" "$(stat -c '%s' "$key")"

# 8. Insider baselines: saved at a clean stop and restored at start; after a crash the events
#    stored since the last save are learned again from the trail, without duplicate alerts.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50"
q -d postgres -c 'CREATE EXTENSION pii_audit' -c "$schema"
for i in $(seq 1 50); do echo "SELECT name FROM customers WHERE id = $i;"; done | q -d postgres >/dev/null
wait_until postgres "SELECT queue_depth_bytes = 0 FROM pii_audit.status" 30 || true
last=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events')
pgc_stop "$dir" fast >/dev/null
pgc_start "$dir" >/dev/null
check "baselines: saved at a clean stop, up to the last event" "t|t" \
    "$(q -d postgres -c "SELECT length(state) > 1000, scored_upto >= $last FROM pii_audit.scorer_state")"
for i in $(seq 1 20); do echo "SELECT phone FROM customers WHERE id = $i;"; done | q -d postgres >/dev/null
wait_until postgres "SELECT queue_depth_bytes = 0 FROM pii_audit.status" 30 || true
worker=$(q -d postgres -c 'SELECT worker_pid FROM pii_audit.status')
kill -9 "$worker" 2>/dev/null || runuser -u postgres -- kill -9 "$worker"
if wait_until postgres "SELECT state = 'running' FROM pii_audit.status" 60; then
    sleep 1
    contains "baselines: after a crash, stored events are learned again" \
        "learned again from" "$(cat "$dir/server.log")"
else
    check "baselines: the worker is back after a crash" running \
        "$(q -d postgres -c 'SELECT state FROM pii_audit.status' 2>&1)"
fi
check "baselines: restored without complaint" "0" \
    "$(grep -c 'were not restored\|insider scoring stopped' "$dir/server.log" || true)"

# 9. Text the audit database cannot store (a UTF-8 table name, a LATIN1 trail) becomes '?'
#    instead of failing the batch, which the worker would retry forever while the queue filled.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.database = 'trail'" \
    "pii_audit.flush_interval = 50"
q -d postgres -c "CREATE DATABASE trail ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
q -d trail -c 'CREATE EXTENSION pii_audit'
q -d postgres -c 'CREATE EXTENSION pii_audit' -c "$schema" \
    -c 'CREATE TABLE "客户" (id int, phone text)' -c "INSERT INTO \"客户\" VALUES (1, '138')" \
    -c "SECURITY LABEL FOR pii ON COLUMN \"客户\".phone IS 'phone'"
q -d postgres -c 'SELECT phone FROM "客户"' -c 'SELECT name FROM customers WHERE id = 5' >/dev/null
if wait_until trail "SELECT count(*) = 2 FROM pii_audit.access_log WHERE kind = 'read'" 30; then
    check "unconvertible text: stored with '?'" 'public."??"|{phone}' \
        "$(q -d trail -c "SELECT relation, columns FROM pii_audit.access_log WHERE kind = 'read' ORDER BY event_id LIMIT 1")"
    check "unconvertible text: the next event is stored too" "public.customers" \
        "$(q -d trail -c "SELECT relation FROM pii_audit.access_log WHERE kind = 'read' ORDER BY event_id DESC LIMIT 1")"
else
    check "unconvertible text: events still arrive" "2 reads" \
        "$(q -d trail -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'read'" 2>&1)"
fi
check "unconvertible text: no conversion error" "0" \
    "$(grep -c 'has no equivalent in encoding\|invalid byte sequence' "$dir/server.log" || true)"

# 10. Reads of one statement queued 11 s apart, stored in one batch: one group spanning 11 s.
#     Time filters on the views go back 10 s through the groups' min_time index and find longer
#     groups through trail_groups_long_span (trail_planner.cpp); a filter must give the same
#     count as the same filter on an expression of event_time (which implies nothing), at every
#     boundary, the instants inside the span included.
fresh_cluster "shared_preload_libraries = 'pii_audit'" "pii_audit.database = 'trail'" \
    "pii_audit.flush_interval = 50"
q -d postgres -c 'CREATE EXTENSION pii_audit' -c "$schema"
q -d postgres -c 'PREPARE r(int) AS SELECT name FROM customers WHERE id = $1' -c 'EXECUTE r(1)' \
    -c 'SELECT pg_sleep(11)' -c 'EXECUTE r(2)' >/dev/null
q -d postgres -c 'CREATE DATABASE trail'
q -d trail -c 'CREATE EXTENSION pii_audit'
if wait_until trail "SELECT count(*) = 2 FROM pii_audit.access_log WHERE kind = 'read'" 30; then
    check "long group: the two reads are one group spanning over 10 s" "1|2" \
        "$(q -d trail -c "SELECT count(*), min(event_count) FROM pii_audit.trail_groups WHERE kind = 'read' AND max_time - min_time > interval '10 seconds'")"
    mismatches=$(q -d trail -c "
        CREATE FUNCTION pg_temp.n(query text) RETURNS bigint LANGUAGE plpgsql AS \$\$
        DECLARE c bigint; BEGIN EXECUTE query INTO c; RETURN c; END \$\$;
        CREATE TEMP TABLE instants AS
        SELECT event_time AS t FROM pii_audit.access_log
        UNION SELECT event_time + d FROM pii_audit.access_log,
              unnest(ARRAY[interval '-1 ms', interval '1 ms', interval '5 s', interval '10.5 s']) d;
        SELECT count(*) FILTER (WHERE direct IS DISTINCT FROM opaque OR worked_out IS DISTINCT FROM opaque) || '/' ||
               (count(*) >= 50)::text
        FROM instants, unnest(ARRAY['<', '<=', '=', '>=', '>']) op,
             LATERAL (SELECT pg_temp.n(format('SELECT count(*) FROM pii_audit.access_log WHERE event_time %s %L', op, t)) AS direct,
                             pg_temp.n(format('SELECT count(*) FROM pii_audit.access_log WHERE event_time %s %L::timestamptz - interval ''2 hours'' + interval ''7200 s''', op, t)) AS worked_out,
                             pg_temp.n(format('SELECT count(*) FROM pii_audit.access_log WHERE event_time + interval ''0'' %s %L', op, t)) AS opaque) c" |
        tail -1)
    # Every instant (each event's, and four around it: at least ten) with each of five operators,
    # as a constant and as one the planner works out: no count differs, and there were at least
    # 50 checks.
    check "long group: time filters give the counts of unfiltered groups" "0/true" "$mismatches"
    check "long group: a window inside its span finds its later read" "1" \
        "$(q -d trail -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'read' AND event_time >= '$(q -d trail -c "SELECT min(min_time) + interval '10.5 s' FROM pii_audit.trail_groups WHERE kind = 'read'")'")"
else
    check "long group: queued reads arrive" "2 reads" \
        "$(q -d trail -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'read'" 2>&1)"
fi

if ((failures > 0)); then
    echo "--- server log"
    tail -40 "$dir/server.log" || true
fi
echo "$passes passed, $failures failed"
((failures == 0))
