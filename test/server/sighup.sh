#!/usr/bin/env bash
# sighup.sh: SIGHUP makes pii-audit-export close its destination and open it again, between
# batches, and go on shipping:
#   1. a file moved away as logrotate does (rename, then SIGHUP): the shipper starts a new file
#      at the path and records it in its checkpoint; old and new file together hold every event
#      exactly once, in order; a second SIGHUP with the file in place keeps appending to it; a
#      shipper killed right after the rotation resumes into the new file without a duplicate;
#   2. RELP: the session is closed and a new one opened (scripted receiver), nothing lost.
# (Before SIGHUP was handled, its default action ended the shipper.)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

bindir=$(pgc__bindir)
shipper=${SHIPPER:-$bindir/pii-audit-export}
[[ -x "$shipper" ]] || { echo "sighup.sh: missing $shipper" >&2; exit 1; }

siem_workdir hup
ship=
rcv_pid=
trap 'shipper_cleanup HUP_KEEP' EXIT

siem_cluster
conn="host=$sock port=$port user=siem dbname=postgres"
reads() {
    local i
    for ((i = 1; i <= $1; i++)); do echo "SELECT name FROM customers WHERE id = $i;"; done |
        q -d postgres >/dev/null
    wait_until postgres "SELECT events_enqueued = events_persisted FROM pii_audit.status" 60
}
last_event() { q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events'; }
cp_event() { awk '$1 == "event_id" { print $2 }' "$1" 2>/dev/null || echo 0; }
caught_up() {  # caught_up CHECKPOINT: waits until it reaches the trail's last event
    local target deadline=$((SECONDS + 60))
    target=$(last_event)
    until (($(cp_event "$1") >= target)) || ((SECONDS > deadline)); do sleep 0.2; done
}
start() {  # start NAME ARGS...
    local name=$1
    shift
    # (About 130 events: no multiple of --digest-every's 10,000, so no digest record.)
    "$shipper" -d "$conn" --checkpoint "$work/$name.cp" --format json --poll-interval 0.2 "$@" \
        2>>"$work/$name.err" &
    ship=$!
}

# ---- 1. a file moved away, then SIGHUP ------------------------------------------------------------
reads 50
start file -o "file:$work/trail.log"
caught_up "$work/file.cp"
mv "$work/trail.log" "$work/trail.log-rotated"
kill -HUP "$ship" 2>/dev/null || true  # (a shipper that died of it fails the checks below)
reads 30
caught_up "$work/file.cp"
check "moved away: the shipper is still running" "yes" "$(kill -0 "$ship" 2>/dev/null && echo yes || echo no)"
check "moved away: a new file at the path" "yes" "$([[ -s "$work/trail.log" ]] && echo yes || echo no)"
check "moved away: the checkpoint names the new file" "$(stat -c %i "$work/trail.log")" \
    "$(awk '$1 == "file" { print $3 }' "$work/file.cp")"
contains "moved away: it says so" "SIGHUP: reopened file:$work/trail.log (a new file" "$(cat "$work/file.err")"
# SIGHUP with the file in place: it goes on appending.
kill -HUP "$ship" 2>/dev/null || true  # (a shipper that died of it fails the checks below)
reads 20
caught_up "$work/file.cp"
check "in place: still the same file" "$(stat -c %i "$work/trail.log")" "$(awk '$1 == "file" { print $3 }' "$work/file.cp")"
# Killed right after another rotation: it resumes into the new file, nothing twice.
mv "$work/trail.log" "$work/trail.log-rotated2"
kill -HUP "$ship" 2>/dev/null || true  # (a shipper that died of it fails the checks below)
deadline=$((SECONDS + 30))
until grep -c 'SIGHUP: reopened' "$work/file.err" | grep -qx 3 || ((SECONDS > deadline)); do sleep 0.1; done
kill -9 "$ship"
wait "$ship" 2>/dev/null || true
reads 10
start file -o "file:$work/trail.log"
caught_up "$work/file.cp"
kill -TERM "$ship"
rc=0
wait "$ship" || rc=$?
ship=
check "SIGTERM stops it cleanly" 0 "$rc"
last=$(cp_event "$work/file.cp")
q -d postgres -U siem -c "SELECT line FROM pii_audit.export(0, 1000000, 'json') WHERE event_id <= $last ORDER BY event_id" >"$work/expect"
cat "$work/trail.log-rotated" "$work/trail.log-rotated2" "$work/trail.log" >"$work/got"
check "old and new files: every event exactly once, in order ($last events)" "same" \
    "$(cmp -s "$work/expect" "$work/got" && echo same || echo differs)"

# ---- 2. RELP: a new session ---------------------------------------------------------------------
rm -f "$work/r.port"
python3 "$repo/test/server/relp_receiver.py" "$work/r.port" "$work/r.log" ack ack ack 2>"$work/r.rcv.err" &
rcv_pid=$!
until [[ -s "$work/r.port" ]]; do sleep 0.1; done
first=$(($(last_event) + 1))
reads 20
start relp -o "relp://127.0.0.1:$(cat "$work/r.port")" --start-after $((first - 1))
caught_up "$work/relp.cp"
kill -HUP "$ship" 2>/dev/null || true  # (a shipper that died of it fails the checks below)
reads 20
caught_up "$work/relp.cp"
kill -TERM "$ship"
rc=0
wait "$ship" || rc=$?
ship=
check "relp: SIGTERM stops it cleanly" 0 "$rc"
check "relp: a second session after SIGHUP" "2" "$(grep -c 'connection' "$work/r.rcv.err")"
last=$(cp_event "$work/relp.cp")
check "relp: every event once, in order" "$(seq "$first" "$last" | tr '\n' ' ')" \
    "$(sed -n 's/.*\[pii_audit@32473 event_id="\([0-9]*\)".*/\1/p;s/.*"event" : {"id" : "\([0-9]*\)".*/\1/p;s/.*"event":{"id":"\([0-9]*\)".*/\1/p' "$work/r.log" | tr '\n' ' ')"

echo "# $passes passed, $failures failed"
((failures == 0))
