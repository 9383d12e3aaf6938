#!/usr/bin/env bash
# bench/shipper.sh BUILD_DIR [EVENTS]: how fast pii-audit-export ships, and how late lines arrive.
#
# A throwaway cluster gets EVENTS events (default 1,000,000) through the worker's production
# path (the trail loader of bench/trail, as bench/trail.sh does), then the installed
# pii-audit-export ships all of them, from event 0, with --once:
#   - to standard output redirected to /dev/null (what pulling through export() allows),
#   - to a file (json and cef; fsync and checkpoint per batch),
#   - to rsyslog over RELP (json wrapped in an RFC 5424 header, written to a file by rsyslog).
# Each line reports events/s = EVENTS / wall-clock seconds of the shipper's run.
# Then the latency: pgbench runs CLIENTS (2, as bench/lookup.sh) clients of labelled point
# lookups (as bench/lookup.sh, every lookup an event) for DURATION (30) seconds while a second shipper
# follows the trail into rsyslog over RELP; rsyslog stamps each line when it receives it, and
# the delay from the event's time (@timestamp, when the read started) to that stamp is reported
# as p50/p99/max over every event of the run.
# Environment: BATCH (10000, events per export() call), CLIENTS, DURATION, RATE (pgbench -R:
# lookups per second in all; default unthrottled), LATENCY_ONLY=1 skips the throughput runs,
# KEEP=1 keeps the directory. The shipper and the extension must be installed (cmake --install).
# AB_SHIPPER=PATH compares another pii-audit-export build over RELP instead: installed (A) and
# PATH (B), interleaved A B A B (ROUNDS, default 2), nothing else.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

build_dir=$(cd "${1:?usage: bench/shipper.sh BUILD_DIR [EVENTS]}" && pwd)
events=${2:-1000000}
batch=${BATCH:-10000}
clients=${CLIENTS:-2}
duration=${DURATION:-30}
rate=${RATE:-}
latency_only=${LATENCY_ONLY:-0}
loader=$build_dir/bench/trail/pii_audit_trail_loader.so
bindir=$(pgc__bindir)
shipper=$bindir/pii-audit-export
[[ -f "$loader" ]] || { echo "shipper.sh: no $loader (build BUILD_DIR first)" >&2; exit 1; }
[[ -x "$shipper" ]] || { echo "shipper.sh: no $shipper (cmake --install BUILD_DIR)" >&2; exit 1; }
rsyslogd=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)

work=$(mktemp -d /tmp/pii_audit_ship_bench.XXXXXX)
chmod 755 "$work"
dir=$work/pg
rs_pid=
cleanup() {
    [[ -n "$rs_pid" ]] && kill "$rs_pid" 2>/dev/null
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    if [[ "${KEEP:-0}" == 1 ]]; then echo "# kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cp "$loader" "$work/loader.so"
chmod 644 "$work/loader.so"

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.queue_size = 65536" \
    "pii_audit.on_queue_full = wait" "pii_audit.queue_wait_timeout = 60000" \
    "shared_buffers = 512MB" "max_wal_size = 8GB" "pii_audit.max_query_length = 1024" >/dev/null
pgc_start "$dir" >/dev/null
q() { pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
q <<SQL
CREATE EXTENSION pii_audit;
CREATE ROLE siem LOGIN IN ROLE pii_audit_siem;
SQL
q -v subjects=100000 -v actors=100 -v loader="$work/loader.so" -f "$repo/bench/trail/schema.sql" \
    >/dev/null
until [[ "$(q -c 'SELECT state FROM pii_audit.status')" == running ]]; do sleep 0.2; done
echo "# shipper.sh: $events events, batch $batch"
echo "# machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
q -c "SELECT bench_load($events, 0, $events, 16, 100, 100000, now() - interval '1 day', now(), 1, 'postgres',
      ARRAY['customers'::regclass, 'accounts'::regclass, 'visits'::regclass]::oid[])" >/dev/null
until [[ "$(q -c 'SELECT events_enqueued = events_persisted + events_dropped FROM pii_audit.status')" == t ]]; do sleep 0.5; done
last=$(q -c 'SELECT max(event_id) FROM pii_audit.events')
echo "# trail: $last events"
conn="host=$(pgc_sockdir "$dir") port=$(pgc_port "$dir") user=siem dbname=postgres"

ports=()
while ((${#ports[@]} < 2)); do
    p=$(pgc_free_port)
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
mkdir -p "$work/rs/work"
cat >"$work/rs/rsyslog.conf" <<EOF
global(workDirectory="$work/rs/work" maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off")
main_queue(queue.size="200000" queue.dequeueBatchSize="1024" queue.timeoutShutdown="60000"
           queue.timeoutActionCompletion="60000")
module(load="imrelp")
template(name="stamped" type="string" string="%timegenerated:::date-rfc3339,date-utc%\t%msg%\n")
template(name="plain" type="string" string="%msg%\n")
ruleset(name="bulk") { action(type="omfile" file="$work/rs/bulk.log" template="plain" ioBufferSize="256k") }
ruleset(name="live") { action(type="omfile" file="$work/rs/live.log" template="stamped") }
input(type="imrelp" port="${ports[0]}" address="127.0.0.1" ruleset="bulk")
input(type="imrelp" port="${ports[1]}" address="127.0.0.1" ruleset="live")
EOF
"$rsyslogd" -n -f "$work/rs/rsyslog.conf" -i "$work/rs/pid" >"$work/rs/out" 2>&1 &
rs_pid=$!
for p in "${ports[@]}"; do
    until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do sleep 0.1; done
done

children_cpu() {  # user + system seconds of the children, from `times >"$work/times"` just before
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$work/times"
}
rsyslog_cpu() { awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$rs_pid/stat"; }
run() {  # run LABEL ARGS...: ships everything once, prints events/s and the shipper's CPU time
    local label=$1 t0 t1 c0 c1 r0 r1 n
    shift
    n=$(q -c 'SELECT max(event_id) FROM pii_audit.events')
    times >"$work/times"
    c0=$(children_cpu)
    r0=$(rsyslog_cpu)
    t0=$(date +%s.%N)
    "$shipper" -d "$conn" --once --batch "$batch" "$@" >/dev/null 2>>"$work/shipper.err"
    t1=$(date +%s.%N)
    times >"$work/times"
    c1=$(children_cpu)
    r1=$(rsyslog_cpu)
    awk -v l="$label" -v n="$n" -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v r="$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')" \
        'BEGIN { printf "%-28s %8d events in %6.2f s = %7.0f events/s (CPU s: shipper %.2f, rsyslogd %.2f)\n", l, n, b - a, n / (b - a), d - c, r }'
}
if [[ -n "${AB_SHIPPER:-}" ]]; then
    installed=$shipper
    for ((round = 1; round <= ${ROUNDS:-2}; round++)); do
        for side in A B; do
            [[ $side == A ]] && shipper=$installed || shipper=$AB_SHIPPER
            rm -f "$work/relp.cp"
            run "$side: RELP json, round $round" -o "relp://127.0.0.1:${ports[0]}" --checkpoint "$work/relp.cp" --format json
            # rsyslog answered every frame; let it finish writing before the next run.
            size=-1
            until [[ $(stat -c %s "$work/rs/bulk.log") == "$size" ]]; do
                size=$(stat -c %s "$work/rs/bulk.log")
                sleep 1
            done
        done
    done
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi
if ((latency_only == 0)); then
    run "stdout > /dev/null (json)" -o stdout --format json
    run "stdout > /dev/null (cef)" -o stdout --format cef
    run "file (json)" -o "file:$work/out.json" --checkpoint "$work/file-json.cp" --format json
    run "file (cef)" -o "file:$work/out.cef" --checkpoint "$work/file-cef.cp" --format cef
    run "rsyslog over RELP (json)" -o "relp://127.0.0.1:${ports[0]}" --checkpoint "$work/relp.cp" --format json
    last=$(awk '$1 == "event_id" { print $2 }' "$work/relp.cp")
    # rsyslog acknowledged every frame; give it the time to write them all before counting.
    for _ in $(seq 1 120); do
        (($(wc -l <"$work/rs/bulk.log") >= last)) && break
        sleep 0.5
    done
    echo "# rsyslog wrote $(wc -l <"$work/rs/bulk.log") lines (of $last)"
    rm -f "$work/out.json" "$work/out.cef" "$work/rs/bulk.log"
fi

# Latency under lookups: a shipper follows the trail while pgbench reads.
cat >"$work/lookup.sql" <<'EOF'
\set id random(1, 100000)
SELECT name, phone FROM customers WHERE id = 'c' || :id;
EOF
"$shipper" -d "$conn" -o "relp://127.0.0.1:${ports[1]}" --checkpoint "$work/live.cp" --format json \
    --start-after "$(q -c 'SELECT max(event_id) FROM pii_audit.events')" --progress 10 2>>"$work/live.err" &
live_pid=$!
sleep 2
before=$(q -c 'SELECT max(event_id) FROM pii_audit.events')
"$bindir/pgbench" -n -M prepared -c "$clients" -j 2 -T "$duration" ${rate:+-R "$rate"} -f "$work/lookup.sql" \
    -h "$(pgc_sockdir "$dir")" -p "$(pgc_port "$dir")" -U postgres postgres >"$work/pgbench.out" 2>&1
until [[ "$(q -c 'SELECT events_enqueued = events_persisted + events_dropped FROM pii_audit.status')" == t ]]; do sleep 0.2; done
after=$(q -c 'SELECT max(event_id) FROM pii_audit.events')
until (($(awk '$1 == "event_id" { print $2 }' "$work/live.cp") >= after)); do sleep 0.5; done
kill -TERM "$live_pid"
wait "$live_pid" || true
sleep 1
tps=$(awk '/^tps = / { print $3 }' "$work/pgbench.out")
# Seconds of the day of both stamps (a run that crosses midnight UTC adds a day).
awk -F'\t' '
    function secs(t) { return substr(t, 12, 2) * 3600 + substr(t, 15, 2) * 60 + substr(t, 18, 9) }
    $2 ~ /"action":"read"/ {
        ts = $2; sub(/^[^{]*\{"@timestamp":"/, "", ts); ts = substr(ts, 1, 26)
        d = secs($1) - secs(ts); if (d < -43200) d += 86400
        v[++n] = d
    }
    END {
        if (n == 0) { print "latency: no read events received"; exit 1 }
        # insertion into a sorted array would be slow; sort with the shell instead
        for (i = 1; i <= n; i++) print v[i] > "/dev/stdout"
    }' "$work/rs/live.log" | sort -g >"$work/latency"
n=$(wc -l <"$work/latency")
pct() { awk -v n="$n" -v p="$1" 'NR == int((n - 1) * p) + 1 { printf "%.3f", $1; exit }' "$work/latency"; }
echo "latency read -> rsyslog (RELP), $clients pgbench clients at $tps lookups/s, $((after - before)) events: p50 $(pct 0.5) s, p99 $(pct 0.99) s, max $(tail -1 "$work/latency") s ($n reads measured)"
grep -hs "warning\|error" "$work/shipper.err" "$work/live.err" | head -5 || true
