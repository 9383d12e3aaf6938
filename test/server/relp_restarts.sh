#!/usr/bin/env bash
# relp_restarts.sh: RELP to a real rsyslog that is restarted again and again while events flow.
# The restart phase of test/server/shipper.sh, in a loop (RESTARTS, default 12, at random
# moments 0.3-1.5 s apart) under 4 clients of labelled lookups, so that restarts land in the
# middle of batches often: afterwards rsyslog's file must hold every event the shipper's
# checkpoint claims, in order, with no gap (duplicates are replays, and are counted).
# Before the RELP output counted answers frame by frame, this lost events in most runs.
# SHIPPER may name another pii-audit-export binary (to compare builds).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

bindir=$(pgc__bindir)
shipper=${SHIPPER:-$bindir/pii-audit-export}
rsyslogd=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
RESTARTS=${RESTARTS:-12}
for need in "$shipper" "$rsyslogd"; do
    [[ -x "$need" ]] || { echo "relp_restarts.sh: missing $need" >&2; exit 1; }
done

siem_workdir relpr
ship_pid=
rs_pid=
bench_pid=
cleanup() {
    local p
    for p in $ship_pid $rs_pid $bench_pid; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    siem_remove RELP_KEEP
}
trap cleanup EXIT

siem_cluster 50 10000
conn="host=$sock port=$port user=siem dbname=postgres"

relp_port=$(pgc_free_port)
mkdir -p "$work/rs/work"
# The receiver configuration the README recommends for RELP (see "For SIEM teams").
cat >"$work/rs/rsyslog.conf" <<EOF
global(workDirectory="$work/rs/work" maxMessageSize="64k")
main_queue(queue.timeoutShutdown="30000" queue.timeoutActionCompletion="30000")
module(load="imrelp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="relp") { action(type="omfile" file="$work/rs/relp.log" template="raw") }
input(type="imrelp" port="$relp_port" address="127.0.0.1" ruleset="relp")
EOF
rs_start() {
    "$rsyslogd" -n -f "$work/rs/rsyslog.conf" -i "$work/rs/rsyslogd.pid" >>"$work/rs/rsyslogd.out" 2>&1 &
    rs_pid=$!
    local deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$relp_port") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "rsyslog did not listen" >&2; return 1; }
        sleep 0.05
    done
}
rs_stop() { kill -TERM "$rs_pid"; wait "$rs_pid" 2>/dev/null || true; rs_pid=; }
rs_start

"$shipper" -d "$conn" -o "relp://127.0.0.1:$relp_port" --format rfc5424 --checkpoint "$work/relp.cp" \
    --batch "${BATCH:-50}" --poll-interval 0.2 --retry-max 0.5 2>"$work/relp.err" &
ship_pid=$!

cat >"$work/lookup.sql" <<'EOF'
\set id random(1, 10000)
SELECT name FROM customers WHERE id = :id;
EOF
"$bindir/pgbench" -n -M prepared -c 4 -j 2 -R 1500 -T $((RESTARTS * 2 + 5)) -f "$work/lookup.sql" \
    -h "$sock" -p "$port" -U postgres postgres >"$work/pgbench.out" 2>&1 &
bench_pid=$!
sleep 2
for ((i = 1; i <= RESTARTS; i++)); do
    rs_stop
    sleep 0.$((RANDOM % 3 + 1))
    rs_start
    sleep "$((RANDOM % 2)).$((RANDOM % 10))"
done
wait "$bench_pid" || true
bench_pid=

wait_until postgres "SELECT events_enqueued = events_persisted FROM pii_audit.status" 120 || true
target=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events')
cp_event() { awk '$1 == "event_id" { print $2 }' "$work/relp.cp" 2>/dev/null || echo 0; }
deadline=$((SECONDS + 180))
until (($(cp_event) >= target)) || ((SECONDS > deadline)); do sleep 0.5; done
kill -TERM "$ship_pid"
wait "$ship_pid" || true
ship_pid=
rs_stop
last=$(cp_event)
check "the checkpoint reached the trail's end" "yes" "$( ((last >= target)) && echo yes || echo "no: $last < $target")"
read -r missing dups replays <<<"$(sed -n 's/.*\[pii_audit@32473 event_id="\([0-9]*\)".*/\1/p' "$work/rs/relp.log" |
    awk -v last="$last" '{ if (seen[$1]++) dups++; if ($1 <= top) { if ($1 != prev + 1) replays++ } ; if ($1 > top) top = $1; prev = $1 }
        END { for (k = 1; k <= last; k++) if (!(k in seen)) missing++; print missing + 0, dups + 0, replays + 0 }')"
echo "# $RESTARTS restarts, $last events: $dups sent twice in $replays replays; $(grep -c 'will be sent again' "$work/relp.err" || true) breaks reported"
check "rsyslog holds every event up to the checkpoint ($RESTARTS restarts)" "0 missing" "$missing missing"

echo "# $passes passed, $failures failed"
((failures == 0))
