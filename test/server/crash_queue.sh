#!/usr/bin/env bash
# crash_queue.sh: a crashed server process must not erase the reads queued just before it.
# Under 16 pgbench clients of labelled point lookups, each phase ends one process with SIGKILL,
# which makes PostgreSQL restart all of them and re-create its shared memory:
#   1. a client backend;   2. the pii_audit worker;
#   3. a backend in the middle of writing its event into the queue (the superuser-only
#      pii_audit.test_crash_while_queueing makes it kill itself half-way through its record).
# After each, every lookup pgbench saw complete (its per-transaction log) must be in the trail,
# exactly once, or counted in a gap row with a number (never a gap of unknown size); event_id
# stays gapless and unique. Then, without load:
#   4. events queued at an immediate stop (no drain) are stored after the restart;
#   5. ... also when pii_audit.queue_size changed in between;
#   6. a queue file that is not this cluster's (a damaged header) is renamed aside, the server
#      starts, and the trail records a gap of unknown size that says why; likewise a file last
#      used in another boot of the OS without a clean stop (an OS crash, simulated);
#   7. with no disk space for the queue file the server does not start and says why (needs a
#      tmpfs mount; skipped with a note where that is not allowed).
# It prints one line per phase, "figures: phase committed stored counted_lost unknown_gaps",
# the numbers the README and the issue quote.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

CLIENTS=${CLIENTS:-16}
LOAD_SECONDS=${LOAD_SECONDS:-6}
dir=$(mktemp -d /tmp/pii_audit_crashq.XXXXXX)
chmod 755 "$dir"
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    umount "$dir/small" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "max_connections = 40" \
    "restart_after_crash = on" >/dev/null
pgc_start "$dir" >/dev/null
q -d postgres -c 'CREATE EXTENSION pii_audit' \
    -c 'CREATE TABLE customers (id int PRIMARY KEY, name text, phone text)' \
    -c "INSERT INTO customers SELECT g, 'n' || g, '138' || g FROM generate_series(1, 1000) g" \
    -c "SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name'" \
    -c "SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone'"
sock=$(pgc_sockdir "$dir")
port=$(pgc_port "$dir")
bindir=$(pgc__bindir)
cat >"$dir/lookup.sql" <<'EOF'
\set id random(1, 1000)
SELECT name, phone FROM customers WHERE id = :id;
EOF

server_up() {
    local deadline=$((SECONDS + ${1:-60}))
    while ((SECONDS < deadline)); do
        [[ "$(q -d postgres -c "SELECT state = 'running' FROM pii_audit.status" 2>/dev/null)" == t ]] &&
            return 0
        sleep 0.3
    done
    return 1
}

# Runs pgbench as application PHASE in the background, with a log line per completed lookup.
start_load() {
    mkdir -p "$dir/log_$1"
    (cd "$dir/log_$1" && PGAPPNAME=$1 "$bindir/pgbench" -h "$sock" -p "$port" -U postgres \
        -n -M prepared -c "$CLIENTS" -j 2 -T "$((LOAD_SECONDS + 60))" -l -f "$dir/lookup.sql" \
        postgres >"$dir/pgbench_$1.out" 2>&1 || true) &
    load_pid=$!
    sleep "$LOAD_SECONDS"
}

# After the crash: pgbench's clients have all lost their connections; the server restarts, the
# worker stores what it recovered. Then compares the trail with pgbench's logs.
settle_and_count() {
    local phase=$1
    wait "$load_pid" || true
    server_up 90 || { echo "not ok - $phase: the server did not come back"; failures=$((failures + 1)); return; }
    # Everything queued before the crash is stored once the queue is empty again.
    wait_until postgres "SELECT queue_depth_bytes = 0 FROM pii_audit.status" 60 || true
    sleep 1
    local committed stored distinct lost unknown
    # A log line per transaction; a failed one has no numeric latency.
    committed=$(cat "$dir/log_$phase"/pgbench_log.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/' | wc -l)
    stored=$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'read' AND application_name = '$phase'")
    distinct=$(q -d postgres -c "SELECT count(DISTINCT (backend_pid, event_time)) FROM pii_audit.access_log WHERE kind = 'read' AND application_name = '$phase'")
    lost=$(q -d postgres -c "SELECT coalesce(sum(row_count), 0) FROM pii_audit.access_log WHERE kind = 'gap' AND event_id > $gap_mark")
    unknown=$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap' AND row_count IS NULL AND event_id > $gap_mark")
    echo "figures: $phase committed=$committed stored=$stored counted_lost=$lost unknown_gaps=$unknown"
    if ((committed > 100)); then
        check "$phase: pgbench completed lookups before the crash" ok ok
    else
        check "$phase: pgbench completed lookups before the crash" ">100" "$committed"
    fi
    if ((stored >= committed)); then
        check "$phase: every completed lookup is in the trail" ok ok
    else
        check "$phase: every completed lookup is in the trail" ">= $committed stored" \
            "$stored stored ($((committed - stored)) missing; counted lost: $lost; gaps of unknown size: $unknown)"
    fi
    # A statement whose client did not see it complete (one per client at most) may be stored too.
    if ((stored <= committed + CLIENTS)); then
        check "$phase: nothing stored that was never read" ok ok
    else
        check "$phase: nothing stored that was never read" "<= $((committed + CLIENTS))" "$stored"
    fi
    check "$phase: each event stored once" "$stored" "$distinct"
    check "$phase: no gap of unknown size" "0" "$unknown"
    check "$phase: event ids gapless and unique" "t" \
        "$(q -d postgres -c 'SELECT count(*) = count(DISTINCT event_id) AND count(*) = max(event_id) FROM pii_audit.events')"
    gap_mark=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.access_log')
}
gap_mark=0

# 1. A client backend.
start_load phase1
victim=$(q -d postgres -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'phase1' ORDER BY backend_start DESC LIMIT 1")
echo "# queue depth at the kill: $(q -d postgres -c 'SELECT queue_depth_bytes FROM pii_audit.status') bytes"
kill -9 "$victim"
settle_and_count phase1

# 2. The worker.
start_load phase2
victim=$(q -d postgres -c 'SELECT worker_pid FROM pii_audit.status')
echo "# queue depth at the kill: $(q -d postgres -c 'SELECT queue_depth_bytes FROM pii_audit.status') bytes"
kill -9 "$victim"
settle_and_count phase2

# 3. A backend half-way through writing its event (it holds the queue's lock then).
start_load phase3
q -d postgres -c 'SET pii_audit.test_crash_while_queueing = on' \
    -c "SET application_name = 'phase3_victim'" \
    -c 'SELECT name FROM customers WHERE id = 1' >/dev/null 2>&1 || true
settle_and_count phase3
check "phase3: the torn event is counted in a gap row" "1" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap' AND row_count >= 1 AND detail LIKE '%cut short%'")"
check "phase3: the torn event itself is not stored" "0" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE application_name = 'phase3_victim'")"
contains "the fault-injection setting is superuser-only" "permission denied" \
    "$(q -d postgres -c 'CREATE ROLE plain LOGIN' >/dev/null; pgc_psql "$dir" -X -A -t -q -U plain -d postgres -c 'SET pii_audit.test_crash_while_queueing = on' 2>&1 || true)"

# Holds the trail so queued events stay queued, queues N reads as application APP, then stops
# the server at once (no drain, as a crash of the postmaster would).
queue_and_stop() {
    (q -d postgres -c 'BEGIN; LOCK TABLE pii_audit.trail_groups IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)' \
        >/dev/null 2>&1 || true) &
    wait_until postgres "SELECT count(*) = 1 FROM pg_locks WHERE relation = 'pii_audit.trail_groups'::regclass AND mode = 'AccessExclusiveLock' AND granted" 30 || true
    for i in $(seq 1 "$1"); do echo "SELECT name FROM customers WHERE id = $i;"; done |
        PGAPPNAME=$2 pgc_psql "$dir" -X -q -d postgres >/dev/null
    wait_until postgres "SELECT queue_depth_bytes > 0 FROM pii_audit.status" 10 || true
    pgc_stop "$dir" immediate >/dev/null
}

# 4. An immediate stop with events queued.
queue_and_stop 50 phase4
pgc_start "$dir" >/dev/null
server_up 60 || true
if wait_until postgres "SELECT count(*) = 50 FROM pii_audit.access_log WHERE application_name = 'phase4' AND kind = 'read'" 30; then
    check "immediate stop: queued events are stored after the restart" ok ok
else
    check "immediate stop: queued events are stored after the restart" 50 \
        "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE application_name = 'phase4'")"
fi
check "immediate stop: no gap" "0" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap' AND event_id > $gap_mark")"

# 5. The queue's size changed while events waited in it.
queue_and_stop 40 phase5
pgc_stop "$dir" >/dev/null 2>&1 || true
pgc_start "$dir" "-c pii_audit.queue_size=256kB" >/dev/null
server_up 60 || true
if wait_until postgres "SELECT count(*) = 40 FROM pii_audit.access_log WHERE application_name = 'phase5' AND kind = 'read'" 30; then
    check "queue size changed: queued events are stored" ok ok
else
    check "queue size changed: queued events are stored" 40 \
        "$(q -d postgres -c "SELECT count(*) FROM pii_audit.access_log WHERE application_name = 'phase5'")"
fi
check "queue size changed: the new size is in use" "262144" \
    "$(q -d postgres -c 'SELECT queue_capacity_bytes FROM pii_audit.status')"
check "queue size changed: the log says so" "1" \
    "$(grep -cE 'moved [0-9]+ queued audit events into the queue of the new size \(262144 bytes\); 0 did not fit' "$dir/server.log")"

# 6. A damaged (foreign) queue file: refused, kept aside, and the loss recorded.
gap_mark=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.access_log')
pgc_stop "$dir" >/dev/null
printf 'not a queue file' | dd of="$dir/data/pii_audit/queue" bs=1 conv=notrunc status=none
pgc_start "$dir" >/dev/null
server_up 60 || true
check "damaged queue file: kept aside" "1" "$(find "$dir/data/pii_audit" -name 'queue.refused.*' | wc -l)"
rm -f "$dir"/data/pii_audit/queue.refused.*
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.access_log WHERE kind = 'gap' AND row_count IS NULL AND detail LIKE '%not a pii_audit queue file%' AND event_id > $gap_mark" 30; then
    check "damaged queue file: the trail records a gap of unknown size" ok ok
else
    check "damaged queue file: the trail records a gap of unknown size" "a gap row" \
        "$(q -d postgres -c "SELECT row_count, detail FROM pii_audit.access_log WHERE kind = 'gap' AND event_id > $gap_mark")"
fi
q -d postgres -c 'SELECT name FROM customers WHERE id = 7' >/dev/null
check "damaged queue file: the new queue works" "t" \
    "$(wait_until postgres "SELECT count(*) >= 1 FROM pii_audit.access_log WHERE kind = 'read' AND event_id > $gap_mark" 30 && echo t || echo f)"

# 6b. An operating system crash, simulated: the postmaster is killed (its children follow), and
#     the file says it was last used in another boot. Its pages may be stale: refused, recorded.
gap_mark=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.access_log')
pm=$(head -n 1 "$dir/data/postmaster.pid")
kill -9 "$pm"
for i in $(seq 1 50); do
    pgrep -f "postgres: .*$(pgc_port "$dir")" >/dev/null 2>&1 || pgrep -P "$pm" >/dev/null 2>&1 || break
    sleep 0.2
done
sleep 2
printf 'X' | dd of="$dir/data/pii_audit/queue" bs=1 seek=56 conv=notrunc status=none  # boot_id
for i in 1 2 3 4 5; do pgc_start "$dir" >/dev/null 2>&1 && break; sleep 2; done
server_up 60 || true
if wait_until postgres "SELECT count(*) = 1 FROM pii_audit.access_log WHERE kind = 'gap' AND row_count IS NULL AND detail LIKE '%operating system restarted%' AND event_id > $gap_mark" 30; then
    check "OS crash: the stale queue file is refused and the gap recorded" ok ok
else
    check "OS crash: the stale queue file is refused and the gap recorded" "a gap row" \
        "$(q -d postgres -c "SELECT row_count, detail FROM pii_audit.access_log WHERE kind = 'gap' AND event_id > $gap_mark" 2>&1)"
fi

# 7. No room for the queue file: the server does not start, and says why.
small=$dir/small
mkdir -p "$small"
if mount -t tmpfs -o size=1m tmpfs "$small" 2>/dev/null; then
    chown "$(pgc__server_user):" "$small"
    pgc_stop "$dir" >/dev/null
    mv "$dir/data/pii_audit" "$dir/pii_audit.saved"
    ln -s "$small" "$dir/data/pii_audit"
    if pgc_start "$dir" >/dev/null 2>&1; then
        check "no room for the queue file: the server refuses to start" "refused" "started"
        pgc_stop "$dir" >/dev/null
    else
        check "no room for the queue file: the server refuses to start" ok ok
    fi
    contains "no room for the queue file: the log says why" \
        "could not allocate 16781312 bytes for the audit queue file \"pii_audit/queue.new\": No space left on device" \
        "$(tail -n 20 "$dir/server.log")"
    check "no room for the queue file: nothing half-made left behind" "" "$(ls "$small")"
    rm "$dir/data/pii_audit"
    mv "$dir/pii_audit.saved" "$dir/data/pii_audit"
    umount "$small"
    pgc_start "$dir" >/dev/null
    server_up 60 || true
    check "no room for the queue file: starts again once there is room" "t" \
        "$(q -d postgres -c "SELECT state = 'running' FROM pii_audit.status")"
else
    echo "# skipped: no room for the queue file (cannot mount a tmpfs here)"
fi

# The server log: no pii_audit error anywhere (the crashes themselves are logged by PostgreSQL).
log=$(cat "$dir/server.log" 2>/dev/null || true)
errors=$(grep -E 'ERROR|PANIC' <<<"$log" | grep -i 'pii_audit' | grep -v 'test_crash_while_queueing' || true)
check "no pii_audit error in the server log" "" "$errors"

echo "# $passes passed, $failures failed"
if ((failures > 0)); then
    echo "# server log (last 60 lines):"
    tail -n 60 "$dir/server.log" 2>/dev/null || true
fi
((failures == 0))
