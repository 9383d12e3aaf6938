#!/usr/bin/env bash
# bench/trail.sh BUILD_DIR [EVENTS]: builds a trail of EVENTS events (default 1,000,000; issue
# 12's targets are for 100,000,000) through the worker's production path, then reports what
# storing cost and what officers' queries cost on it.
#
# A throwaway cluster gets pii_audit (scoring off unless SCORING=on: this measures storing) and,
# in the audit database, three keyed tables (customers with SUBJECTS rows, accounts, visits).
# The loader module (bench/trail/loader.cpp, built in BUILD_DIR, never installed) puts synthetic
# reads into the shared-memory queue as the executor hooks do: SESSIONS connections of ACTORS
# clerks, one customer per event, event times spread over SPAN_DAYS days ending now. The worker
# stores them as it stores any event.
#
# Reported: worker CPU per stored event (utime + stime of the worker process over the load),
# bytes per event of everything in schema pii_audit (tables, side tables, TOAST, every index),
# and each query's time cold (server restarted, OS page cache dropped, if root), warm (median
# of 3, each in a new session: its first query builds the session's catalog caches, about 8 ms
# of planning for a range of fixed times, more where every month is planned) and warm again in
# its session (the second run in one session: an
# officer's open session or a pooled connection), SIEM export pulls (export() per format, the
# export view) included.
# Environment: SESSIONS (64), ACTORS (1000), SUBJECTS (1000000), SPAN_DAYS (365),
# CHUNK (events per loader call, 2000000), SCORING (off), COLD=0 skips the cold runs, KEEP=1
# keeps the cluster in /tmp/pii_audit_trail_bench (TRAIL_DIR) for more queries (stop it with
# scripts/pgcluster.sh's pgc_destroy). SETTINGS adds server settings, separated by ';' (e.g.
# SETTINGS='pii_audit.subject_index_slice = 100000'). QUERIES=0 skips the officers' queries
# (worker CPU, disk and the storing floor only). DENSE sets the events of the dense tail (see
# below). Two floors show what PostgreSQL alone costs for the same work (FLOOR=0 skips them): the
# CPU of loading the trail's own rows (FLOOR_EVENTS of them, 4,000,000 by default) with COPY, per
# event, beside the worker's; and the five-minute access_log rows read back from a plain table,
# beside the view. Exits non-zero if a query fails or events are dropped.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

build_dir=$(cd "${1:?usage: bench/trail.sh BUILD_DIR [EVENTS]}" && pwd)
events=${2:-1000000}
sessions=${SESSIONS:-64}
actors=${ACTORS:-1000}
subjects=${SUBJECTS:-1000000}
span_days=${SPAN_DAYS:-365}
chunk=${CHUNK:-2000000}
scoring=${SCORING:-off}
loader=$build_dir/bench/trail/pii_audit_trail_loader.so
[[ -f "$loader" ]] || { echo "trail.sh: no $loader (build BUILD_DIR first)" >&2; exit 1; }
[[ "$events" =~ ^[0-9]+$ && "$events" -gt 0 ]] || { echo "trail.sh: EVENTS must be a positive number" >&2; exit 1; }

extra_settings=()
[[ -z "${SETTINGS:-}" ]] || IFS=';' read -ra extra_settings <<<"$SETTINGS"
dir=${TRAIL_DIR:-/tmp/pii_audit_trail_bench}
pgc_destroy "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir"
cleanup() { [[ "${KEEP:-0}" == 1 ]] || pgc_destroy "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cp "$loader" "$dir/loader.so"
chmod 755 "$dir" && chmod 644 "$dir/loader.so"

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.database = 'audit'" \
    "pii_audit.queue_size = 65536" "pii_audit.on_queue_full = wait" \
    "pii_audit.queue_wait_timeout = 60000" "pii_audit.scoring = $scoring" \
    "shared_buffers = 1GB" "max_wal_size = 16GB" "checkpoint_timeout = 30min" \
    "work_mem = 64MB" "maintenance_work_mem = 512MB" "pii_audit.max_query_length = 1024" \
    "${extra_settings[@]}" >/dev/null
pgc_start "$dir" >/dev/null
q() { pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 -d audit "$@"; }
pgc_psql "$dir" -X -q -d postgres -c 'CREATE DATABASE audit' >/dev/null
q -c 'CREATE EXTENSION pii_audit'
q -v subjects="$subjects" -v actors="$actors" -v loader="$dir/loader.so" \
    -f "$repo/bench/trail/schema.sql" >/dev/null
relations="ARRAY['customers'::regclass, 'accounts'::regclass, 'visits'::regclass]::oid[]"
span_end=$(q -c "SELECT date_trunc('second', now())")
span_start=$(q -c "SELECT '$span_end'::timestamptz - interval '$span_days days'")
for _ in $(seq 1 100); do
    [[ "$(q -c "SELECT state FROM pii_audit.status")" == running ]] && break
    sleep 0.2
done
status() { q -c "SELECT $1 FROM pii_audit.status"; }
worker_cpu() {  # clock ticks of user + system time of the worker process
    awk '{ print $14 + $15 }' "/proc/$(status worker_pid)/stat"
}
tck=$(getconf CLK_TCK)
persisted0=$(status events_persisted)
dropped_before=$(status events_dropped)

echo "# trail.sh: $events events, $sessions sessions, $actors actors, $subjects subjects, $span_days days, scoring $scoring"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
cpu0=$(worker_cpu)
t0=$(date +%s.%N)
done_events=0
while ((done_events < events)); do
    n=$((events - done_events < chunk ? events - done_events : chunk))
    taken=$(q -c "SELECT bench_load($n, $done_events, $events, $sessions, $actors, $subjects, '$span_start', '$span_end', 1, 'audit', $relations)")
    ((taken == n)) || echo "# warning: the queue took $taken of $n events"
    done_events=$((done_events + n))
    echo "# loaded $done_events events ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }') s)"
done
# wait_stored N WHAT: every one of N more events the queue took (after persisted0, dropped_before)
# is stored or counted as dropped; at most 10 minutes.
wait_stored() {
    local deadline=$((SECONDS + 600))
    while (($(status events_persisted) + $(status events_dropped) - dropped_before < persisted0 + $1)); do
        ((SECONDS < deadline)) || { echo "trail.sh: the worker did not store $2 within 10 min: $(q -c 'SELECT row(s.*) FROM pii_audit.status s')" >&2; exit 1; }
        sleep 0.5
    done
}
wait_stored "$events" "the events"
t1=$(date +%s.%N)
cpu1=$(worker_cpu)
dropped=$(($(status events_dropped) - dropped_before))
stored=$(q -c "SELECT last_event_id FROM pii_audit.worker_state")
load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
cpu_us=$(awk -v c=$((cpu1 - cpu0)) -v t="$tck" -v n="$events" 'BEGIN { printf "%.2f", c / t * 1e6 / n }')
echo "load: $events events in $load_s s ($(awk -v n="$events" -v s="$load_s" 'BEGIN { printf "%.0f", n / s }') events/s), dropped $dropped"
echo "worker CPU per stored event: $cpu_us us"

# ---- the dense tail: DENSE more events (EVENTS / 20 by default, 0 for none) right after the
# span, 50,000 a second, as a busy server writes them. The span holds its events far more thinly
# (100,000,000 over a year are 3 a second), and a time filter that reads an hour of groups to
# answer for seconds looks fast there; the query over 100 ms of this tail shows it does not.
dense=${DENSE:-$((events / 20))}
if ((dense > 0)); then
    dense_start=$(q -c "SELECT '$span_end'::timestamptz + interval '1 minute'")
    dense_end=$(q -c "SELECT '$dense_start'::timestamptz + interval '20 us' * $dense")
    taken=$(q -c "SELECT bench_load($dense, 0, $dense, $sessions, $actors, $subjects, '$dense_start', '$dense_end', 2, 'audit', $relations)")
    ((taken == dense)) || echo "# warning: the queue took $taken of $dense events of the dense tail"
    wait_stored $((events + dense)) "the dense tail"
    dropped=$(($(status events_dropped) - dropped_before))
    stored=$(q -c "SELECT last_event_id FROM pii_audit.worker_state")
    echo "dense tail: $dense events from $dense_start, 50,000 a second"
fi

q -c 'CHECKPOINT' >/dev/null
bytes=$(q -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pii_audit' AND c.relkind IN ('r', 'm')")
echo "disk: $(awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }') in schema pii_audit, $(awk -v b="$bytes" -v n="$stored" 'BEGIN { printf "%.1f", b / n }') bytes per event ($stored events stored)"
q -c "SELECT name || ' ' || pg_size_pretty(sum(size)::bigint) || coalesce(' in ' || nullif(count(*), 1) || ' partitions', '') FROM (SELECT regexp_replace(c.relname, '_p[0-9]{6}$', '') AS name, pg_total_relation_size(c.oid) AS size FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pii_audit' AND c.relkind IN ('r', 'm')) t GROUP BY name HAVING sum(size) > 1000000 ORDER BY 1" | sed 's/^/  /'
echo "table statistics before ANALYZE: trail rows known to the planner's statistics = $(q -c "SELECT coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'pii_audit' AND relname LIKE 'trail%'")"
ta=$(date +%s.%N)
q -c 'ANALYZE' >/dev/null
echo "ANALYZE of the audit database: $(awk -v a="$ta" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

# ---- officers' queries
if [[ "${QUERIES:-1}" != 0 ]]; then
    middle=$(q -c "SELECT '$span_start'::timestamptz + interval '$span_days days' / 2")
    subject="c$((subjects / 3 + 7))"
    near_start=$((stored / 100))
    near_end=$((stored - 20000))
    if [[ "$(q -c "SELECT count(*) FROM pg_proc WHERE proname = 'events_after' AND pronamespace = 'pii_audit'::regnamespace")" != 0 ]]; then
        pull="SELECT * FROM pii_audit.events_after(%s, 10000)"
    else
        pull="SELECT * FROM pii_audit.access_log WHERE event_id > %s ORDER BY event_id LIMIT 10000"
    fi
    declare -a names sqls
    add() { names+=("$1"); sqls+=("$2"); }
    add "subject_access, one person" "SELECT * FROM pii_audit.subject_access('$subject')"
    # A clerk who worked around the middle of the span.
    clerk=$(q -c "SELECT s.session_user_name FROM pii_audit.trail_groups g JOIN pii_audit.trail_sessions s USING (session_id) WHERE g.min_time >= '$middle' AND g.kind = 'read' ORDER BY g.min_time LIMIT 1")
    add "breach_scope, one clerk, a day" "SELECT * FROM pii_audit.breach_scope('$clerk', '$middle', '$middle'::timestamptz + interval '1 day')"
    add "breach_scope, one clerk, a month" "SELECT * FROM pii_audit.breach_scope('$clerk', '$middle', '$middle'::timestamptz + interval '30 days')"
    # shellcheck disable=SC2059
    add "10,000 events after an id near the start" "$(printf "$pull" "$near_start")"
    # shellcheck disable=SC2059
    add "10,000 events after an id near the end" "$(printf "$pull" "$near_end")"
    # SIEM export (0.3.0 on): the same pulls, formatted; and a rising-column collector's poll of the
    # export view.
    if [[ "$(q -c "SELECT count(*) FROM pg_proc WHERE proname = 'export' AND pronamespace = 'pii_audit'::regnamespace")" != 0 ]]; then
        add "export(), 10,000 after an id near the start, json" "SELECT * FROM pii_audit.export($near_start, 10000, 'json')"
        for format in json ocsf cef leef rfc5424; do
            add "export(), 10,000 after an id near the end, $format" "SELECT * FROM pii_audit.export($near_end, 10000, '$format')"
        done
        add "export_events view, poll after an id near the end, cef" "SELECT event_id, line FROM pii_audit.export_events WHERE format = 'cef' AND event_id > $near_end ORDER BY event_id LIMIT 10000"
    fi
    add "access_log, 5 minutes" "SELECT * FROM pii_audit.access_log WHERE event_time >= '$middle' AND event_time < '$middle'::timestamptz + interval '5 minutes'"
    add "access_log, 1 hour, one clerk" "SELECT * FROM pii_audit.access_log WHERE event_time >= '$middle' AND event_time < '$middle'::timestamptz + interval '1 hour' AND session_user_name = '$clerk'"
    add "access_log, 1 hour, one relation" "SELECT * FROM pii_audit.access_log WHERE event_time >= '$middle' AND event_time < '$middle'::timestamptz + interval '1 hour' AND relation = 'public.visits'"
    if ((dense > 0)); then
        dense_middle=$(q -c "SELECT '$dense_start'::timestamptz + ('$dense_end'::timestamptz - '$dense_start'::timestamptz) / 2")
        add "access_log, 100 ms of the dense tail" "SELECT * FROM pii_audit.access_log WHERE event_time >= '$dense_middle' AND event_time < '$dense_middle'::timestamptz + interval '100 ms'"
    fi

    timed() {  # timed SQL [RUNS]: RUNS runs (1) in one new session; the last one's milliseconds
        local args=() _
        for _ in $(seq 1 "${2:-1}"); do args+=(-c "$1"); done
        pgc_psql "$dir" -X -q -d audit -v ON_ERROR_STOP=1 -c '\timing on' -c '\o /dev/null' "${args[@]}" |
            awk '/^Time:/ { t = $2 } END { print t }'
    }
    warm_median() {  # warm_median SQL [RUNS]: the median of timed SQL RUNS in three sessions
        local runs=() _
        for _ in 1 2 3; do runs+=("$(timed "$1" "${2:-1}")"); done
        printf '%s\n' "${runs[@]}" | sort -g | sed -n 2p
    }
    cold_ok=0
    if [[ "${COLD:-1}" == 1 && $(id -u) == 0 && -w /proc/sys/vm/drop_caches ]]; then cold_ok=1; fi
    printf '\n| query | rows | cold ms | warm ms (median of 3) | warm, again in its session |\n|---|---|---|---|---|\n'
    for i in "${!names[@]}"; do
        cold="-"
        if ((cold_ok)); then
            pgc_stop "$dir" fast >/dev/null
            sync
            echo 3 >/proc/sys/vm/drop_caches
            pgc_start "$dir" >/dev/null
            cold=$(timed "${sqls[$i]}")
        fi
        median=$(warm_median "${sqls[$i]}")
        rows=$(q -c "SELECT count(*) FROM (${sqls[$i]}) x")
        again=$(warm_median "${sqls[$i]}" 2)
        printf '| %s | %s | %s | %s | %s |\n' "${names[$i]}" "$rows" "$cold" "$median" "$again"
    done
fi
# ---- floors: what PostgreSQL alone costs for the same work, to read the figures above against.
# Storing: the trail's own rows (groups with their payloads, and the subject index rows of the
# same events) written to a file with COPY ... TO (binary), then loaded by COPY ... FROM into
# tables made LIKE the trail's, with their indexes: COPY inserts in batches (heap_multi_insert), as
# the worker does. The backend's CPU (utime + stime, from /proc) over the two loads, per event,
# parsing the file included: first into the new tables, then again after a TRUNCATE. The second
# load writes into memory the first one touched and freed (buffers, page cache): on this
# project's VMs the first touch of memory is dear (writing 1 GB into a new file took 2.5-3.1 s
# of system time, 0.5 s into pages just freed), and the worker writing a growing trail touches
# new memory as the first load does. Output:
# the five-minute access_log range copied into a plain table, then read back through psql as the
# view is (warm, median of 3).
if [[ "${FLOOR:-1}" == 1 ]]; then
    sample=$((stored < ${FLOOR_EVENTS:-4000000} ? stored : ${FLOOR_EVENTS:-4000000}))
    floor_out=$(pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 -d audit -v sample="$sample" <<'SQL'
SELECT pg_backend_pid() AS pid \gset
\setenv FLOOR_PID :pid
SELECT min(first_event_id) + :sample AS bound FROM pii_audit.trail_groups \gset
SELECT current_setting('data_directory') || '/pii_audit_floor_groups.bin' AS groups_file,
       current_setting('data_directory') || '/pii_audit_floor_index.bin' AS index_file \gset
COPY (SELECT * FROM pii_audit.trail_groups WHERE first_event_id < :bound) TO :'groups_file' (FORMAT binary);
COPY (SELECT i.* FROM pii_audit.trail_subject_index i
      JOIN pii_audit.trail_subject_slices s ON s.first_event_id = i.slice
      WHERE s.last_event_id < :bound) TO :'index_file' (FORMAT binary);
SELECT coalesce(sum(event_count), 0) AS events FROM pii_audit.trail_groups WHERE first_event_id < :bound \gset
CREATE TABLE public.floor_groups (LIKE pii_audit.trail_groups INCLUDING ALL);
CREATE TABLE public.floor_index (LIKE pii_audit.trail_subject_index INCLUDING ALL);
CHECKPOINT;
\! awk '{ print "before_new", $14 + $15 }' /proc/$FLOOR_PID/stat
COPY public.floor_groups FROM :'groups_file' (FORMAT binary);
COPY public.floor_index FROM :'index_file' (FORMAT binary);
\! awk '{ print "after_new", $14 + $15 }' /proc/$FLOOR_PID/stat
TRUNCATE public.floor_groups, public.floor_index;
CHECKPOINT;
\! awk '{ print "before", $14 + $15 }' /proc/$FLOOR_PID/stat
COPY public.floor_groups FROM :'groups_file' (FORMAT binary);
COPY public.floor_index FROM :'index_file' (FORMAT binary);
\! awk '{ print "after", $14 + $15 }' /proc/$FLOOR_PID/stat
SELECT 'events', :events;
DROP TABLE public.floor_groups, public.floor_index;
SELECT 'files', :'groups_file', :'index_file';
SQL
    ) || { echo "trail.sh: the storing floor failed" >&2; exit 1; }
    # shellcheck disable=SC2046 # the two file names, one word each
    rm -f $(awk -F'|' '$1 == "files" { print $2, $3 }' <<<"$floor_out") 2>/dev/null || true
    floor_us() {  # floor_us SUFFIX: CPU per event between before$1 and after$1
        awk -F'|' -v t="$tck" -v x="$1" '{ split($1, w, " "); if (w[1] ~ /^(before|after)/) v[w[1]] = w[2]; else v[$1] = $2 }
            END { if (v["events"] > 0) printf "%.3f", (v["after" x] - v["before" x]) / t * 1e6 / v["events"]; else print "-" }' <<<"$floor_out"
    }
    echo
    echo "floor, storing: PostgreSQL loading the trail's own rows (groups and subject index of $sample events) with COPY ... FROM: $(floor_us _new) us per event into new tables, $(floor_us '') us loading them again after a TRUNCATE (the worker: $cpu_us)"
    if [[ "${QUERIES:-1}" != 0 ]]; then
        range="event_time >= '$middle' AND event_time < '$middle'::timestamptz + interval '5 minutes'"
        q -c "CREATE TABLE public.floor_access_log AS SELECT * FROM pii_audit.access_log WHERE $range" >/dev/null
        q -c "VACUUM ANALYZE public.floor_access_log" >/dev/null
        plain=$(warm_median "SELECT * FROM public.floor_access_log")
        view=$(warm_median "SELECT * FROM pii_audit.access_log WHERE $range")
        echo "floor, output: access_log 5 minutes ($(q -c 'SELECT count(*) FROM public.floor_access_log') rows), the same rows read from a plain table: $plain ms (the view, same moment: $view ms)"
        q -c "DROP TABLE public.floor_access_log" >/dev/null
    fi
fi
if ((dropped > 0)); then
    echo "trail.sh: $dropped events were dropped: the figures above do not describe a complete trail" >&2
    exit 1
fi
