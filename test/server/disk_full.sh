#!/usr/bin/env bash
# disk_full.sh: the audit database's disk fills up while clients read, then space comes back.
#   - reads keep working, each waiting at most the queue settings' bound;
#   - the worker stays up (no restart loop, also when it is restarted while the disk is full),
#     and pii_audit.status says what is wrong;
#   - when space returns the worker resumes by itself, and every read is either in the trail or
#     counted: read rows + the gap rows' counts = the statements the clients ran.
# The audit database lives in a tablespace on a small tmpfs mounted for the test, so this needs
# root and the right to mount. Where that is missing the test says why and is skipped (77).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: disk_full.sh mounts a small tmpfs and needs root"
    exit 77
fi
dir=$(mktemp -d /tmp/pii_audit_disk.XXXXXX)
small=$dir/small
mkdir -p "$small"
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    umount "$small" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
if ! mount -t tmpfs -o size=48m tmpfs "$small" 2>"$dir/mount.err"; then
    echo "SKIP: cannot mount a tmpfs here ($(cat "$dir/mount.err")); the full-disk case is untested"
    exit 77
fi
chown "$(pgc__server_user):" "$small"
chmod 700 "$small"

status() { q -d audit -c "SELECT $1 FROM pii_audit.status"; }

# A 1 MB queue overflows within seconds of a stopped worker, so the loss path is exercised.
pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.database = 'audit'" \
    "pii_audit.flush_interval = 50" "pii_audit.queue_size = 1024" \
    "pii_audit.queue_wait_timeout = 500" >/dev/null
pgc_start "$dir" >/dev/null
q -d postgres -c "CREATE TABLESPACE small LOCATION '$small'" \
    -c 'CREATE DATABASE audit TABLESPACE small' \
    -c "ALTER DATABASE audit SET temp_tablespaces = 'small'"
q -d audit -c 'CREATE EXTENSION pii_audit'
q -d postgres -c 'CREATE EXTENSION pii_audit' \
    -c 'CREATE TABLE customers (id int PRIMARY KEY, name text, phone text)' \
    -c "INSERT INTO customers SELECT g, 'n' || g, '138' || g FROM generate_series(1, 1000) g" \
    -c "SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone, subject_key'"
wait_until audit "SELECT state = 'running' FROM pii_audit.status" 30 || true
q -d postgres -c 'SELECT phone FROM customers WHERE id = 1' >/dev/null
wait_until audit "SELECT events_persisted = events_enqueued FROM pii_audit.status" 30 || true
worker_before=$(status worker_pid)
starts_before=$(pgc_log "$dir" | grep -c "pii_audit worker started" || true)

# Fill the tmpfs to the last byte.
dd if=/dev/zero of="$small/filler" bs=1M 2>/dev/null || true
dd if=/dev/zero of="$small/filler2" bs=4k 2>/dev/null || true
reads=$(mktemp "$dir/reads.XXXX.sql")
echo "\\set id random(1, 1000)
SELECT phone FROM customers WHERE id = :id;" >"$reads"
chmod 644 "$reads"
pgbench() {
    pgc__as_server "$(pgc__bindir)/pgbench" -h "$(pgc_sockdir "$dir")" -p "$(pgc_port "$dir")" \
        -U postgres -n "$@" postgres
}
# Phase 1: reads against a full disk; halfway, the worker is restarted (its start-up reads and
# relearning must not turn into a restart loop either).
pgbench -c 4 -j 2 -T 12 -f "$reads" >"$dir/bench1.out" 2>&1 &
bench=$!
sleep 5
problem=$(status state)
q -d audit -c 'SELECT pg_terminate_backend(worker_pid) FROM pii_audit.status' >/dev/null
wait "$bench" || { cat "$dir/bench1.out"; check "full disk: clients' reads succeed" 0 1; }
ran1=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/bench1.out")
failed1=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/bench1.out")
latency=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$dir/bench1.out")
echo "# phase 1: ${ran1:-?} reads, average latency ${latency:-?} ms"
check "full disk: clients' reads succeed" "0" "${failed1:-0}"
if ((${ran1:-0} > 1000)); then
    check "full disk: clients keep their pace (more than 1000 reads in 12 s)" ok ok
else
    check "full disk: clients keep their pace (more than 1000 reads in 12 s)" ">1000" "${ran1:-0}"
fi
# One bounded wait (500 ms) per stall, not one per statement.
if awk -v l="${latency:-9999}" 'BEGIN { exit !(l < 50) }'; then
    check "full disk: a read waits less than 50 ms on average" ok ok
else
    check "full disk: a read waits less than 50 ms on average" "<50 ms" "${latency:-?} ms"
fi
echo "# status while the disk was full: $problem"
case "$problem" in
    *"No space left"*|*"could not extend"*|*"disk"*)
        check "full disk: status says what is wrong" ok ok ;;
    *) check "full disk: status says what is wrong" "a disk-full problem" "$problem" ;;
esac
check "full disk: events are dropped and counted" "t" "$(status 'events_dropped > 0')"
starts=$(pgc_log "$dir" | grep -c "pii_audit worker started" || true)
check "full disk: the worker starts once more (our restart), not in a loop" "1" "$((starts - starts_before))"
# Retries pause 1 s, doubling: a dozen at most in these 12 s, not one per dropped event.
retries=$(pgc_log "$dir" | grep -c 'ERROR:  could not extend file' || true)
if ((retries <= 20)); then
    check "full disk: the worker retries at a bounded pace" ok ok
else
    check "full disk: the worker retries at a bounded pace" "<= 20 failed attempts logged" "$retries"
fi

# Phase 2: space comes back.
rm -f "$small/filler" "$small/filler2"
enqueued=$(status events_enqueued)
if wait_until audit "SELECT state = 'running' AND events_persisted >= $enqueued FROM pii_audit.status" 90; then
    check "space back: the worker resumes by itself" ok ok
else
    check "space back: the worker resumes by itself" "running, queue empty" \
        "$(q -d audit -c 'SELECT state, queue_depth_bytes, events_enqueued, events_persisted, events_dropped FROM pii_audit.status')"
fi
q -d postgres -c 'SELECT phone FROM customers WHERE id = 2' >/dev/null
wait_until audit "SELECT count(*) = 1 FROM pii_audit.access_log WHERE query_text = 'SELECT phone FROM customers WHERE id = \$1' AND event_time > now() - interval '30 seconds' AND application_name = 'psql'" 30 || true
check "space back: new reads are stored" "1" \
    "$(q -d audit -c "SELECT count(*) FROM pii_audit.access_log WHERE application_name = 'psql' AND event_time > now() - interval '30 seconds' AND query_text = 'SELECT phone FROM customers WHERE id = \$1'")"
# Every event taken into the queue is stored or counted in a gap row, and so is every event
# dropped at the door: stored + counted = enqueued + dropped, over the whole trail.
balance="SELECT (SELECT count(*) FROM pii_audit.events WHERE kind <> 'gap')
              + (SELECT coalesce(sum(row_count), 0) FROM pii_audit.events WHERE kind = 'gap')
            = events_enqueued + events_dropped FROM pii_audit.status"
if wait_until audit "$balance" 30; then
    check "space back: every event is stored or counted in a gap row" ok ok
else
    check "space back: every event is stored or counted in a gap row" "stored + counted = enqueued + dropped" \
        "$(q -d audit -c "SELECT (SELECT count(*) FROM pii_audit.events WHERE kind <> 'gap'), (SELECT sum(row_count) FROM pii_audit.events WHERE kind = 'gap'), events_enqueued, events_dropped FROM pii_audit.status")"
fi
check "space back: the loss is in the trail" "t" \
    "$(q -d audit -c "SELECT coalesce(sum(row_count), 0) > 0 FROM pii_audit.events WHERE kind = 'gap'")"
check "space back: no loss of unknown size" "0" \
    "$(q -d audit -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap' AND row_count IS NULL")"
check "space back: the trail's ids stay gapless" "t" \
    "$(q -d audit -c 'SELECT max(event_id) = count(*) FROM pii_audit.events')"
check "the worker runs (the one started after our restart)" "t" \
    "$(status "worker_pid IS NOT NULL AND worker_pid <> $worker_before")"

echo "# disk_full: $passes passed, $failures failed"
if ((failures > 0)); then
    echo "# server log:"
    pgc_log "$dir" | tail -60 || true
    exit 1
fi
