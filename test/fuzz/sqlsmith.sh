#!/usr/bin/env bash
# sqlsmith.sh [BUILD_DIR]: fuzz pii_audit's hooks with sqlsmith's random queries.
#
# pii_audit runs inside the executor and planner of every statement (it finds the labelled
# columns a plan reads, and with a subject key, whose rows it read). Our tests and PostgreSQL's
# core suite (test/pg_regress_diff) run statements people wrote; sqlsmith generates deep, odd
# ones (nested subqueries, LATERAL, window functions, sampling, CTEs, MERGE/INSERT/UPDATE/DELETE
# ... RETURNING, SELECT FOR UPDATE, casts of everything) from the catalogs of the database.
#
# The target is the `regression` database exactly as test/pg_regress_diff builds it in its
# cluster B (test/pg_regress_diff/suite.sh, shared): pii_audit preloaded, the core suite run
# against it, and every column of the ~1,000 tables the suite leaves labelled ('name', one
# integer column per table also 'subject_key'). So almost every generated query reads labelled
# columns, of tables of every kind (partitioned, inherited, RLS, matviews, foreign, ...).
#
# The run FAILS (exit 1) when
#   - a server process crashed: killed by a signal, an assertion (TRAP:), a PANIC, a backend
#     exit that made the postmaster restart, or the postmaster died; sqlsmith itself reports
#     lost connections ("server closed the connection unexpectedly");
#   - pii_audit raised an ERROR/FATAL/PANIC (its messages all start with "pii_audit"), or
#     counted a read it could not record (capture_errors in pii_audit.status: with the default
#     pii_audit.fail_on_error = off that is only a WARNING, but it is an unaudited read);
#   - pii_audit's worker exited;
#   - sqlsmith made no progress for FUZZ_STALL_SECONDS (a statement that ignored cancellation),
#     or failed itself, or ran fewer queries than asked (outside a time budget);
#   - nothing was audited (then the fuzz tested nothing).
# It then prints the statements that crashed servers ("Failed process was running:" lines),
# those that raised pii_audit errors, and the tail of the server log. The cluster is always
# removed; the logs stay in BUILD_DIR/fuzz-sqlsmith (sqlsmith.log: its progress and summaries;
# server.log; report.txt).
#
# Environment:
#   FUZZ_QUERIES        queries to run (default 3000, the short CI run; e.g. 200000 by hand)
#   FUZZ_SEED           sqlsmith's seed (default 1, so a failure reproduces); "random" picks
#                       one and prints it
#   FUZZ_SECONDS        stop after this many seconds of fuzzing even if FUZZ_QUERIES is not
#                       reached (default 0: no limit); a normal end, for time-boxed long runs
#   FUZZ_STALL_SECONDS  fail when sqlsmith prints nothing for this long (default 120)
#   FUZZ_KEEP=1         keep the cluster's work directory under /tmp (stopped) for inspection
#   BUILD_DIR           when no argument (default build): where the suite is cached, logs go
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
queries=${FUZZ_QUERIES:-3000}
seed=${FUZZ_SEED:-1}
seconds=${FUZZ_SECONDS:-0}
stall=${FUZZ_STALL_SECONDS:-120}
[[ "$queries" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz-sqlsmith: FUZZ_QUERIES must be a positive integer" >&2; exit 2; }
[[ "$seconds" =~ ^[0-9]+$ && "$stall" =~ ^[1-9][0-9]*$ ]] ||
    { echo "fuzz-sqlsmith: FUZZ_SECONDS and FUZZ_STALL_SECONDS must be integers" >&2; exit 2; }
if [[ "$seed" == random ]]; then
    seed=$(((RANDOM << 15 | RANDOM) % 2147483647))
fi
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "fuzz-sqlsmith: FUZZ_SEED must be a number or 'random'" >&2; exit 2; }

# The cluster, the suite and the labelling: the same as test/pg_regress_diff's cluster B.
SUITE_TAG=fuzz-sqlsmith
# shellcheck source-path=SCRIPTDIR source=../pg_regress_diff/suite.sh
source "$repo/test/pg_regress_diff/suite.sh"

if ! command -v sqlsmith >/dev/null 2>&1; then
    log "sqlsmith is missing; running scripts/install-deps.sh"
    "$repo/scripts/install-deps.sh"
fi

suite_init "${1:-${BUILD_DIR:-$repo/build}}"
outdir="$build_dir/fuzz-sqlsmith"
suite_fetch
suite_workdir /tmp/pii_fuzz.XXXXXX
cluster="$work/b"

status=1
smith_pid=""
# shellcheck disable=SC2317 # called through the traps
finish() {
    trap '' PIPE
    if [[ -n "$smith_pid" ]]; then
        kill "$smith_pid" 2>/dev/null || true
    fi
    mkdir -p "$outdir"
    # The server log has every failed statement (about 1 MB per 500 queries): a long run's
    # is kept compressed.
    if [[ -f "$cluster/server.log" ]]; then
        if (($(stat -c %s "$cluster/server.log") > 64 * 1024 * 1024)); then
            gzip -c "$cluster/server.log" >"$outdir/server.log.gz" 2>/dev/null || true
        else
            cp "$cluster/server.log" "$outdir/server.log" 2>/dev/null || true
        fi
    fi
    if [[ -f "$work/sqlsmith.log" ]]; then
        cp "$work/sqlsmith.log" "$outdir/sqlsmith.log" 2>/dev/null || true
    fi
    if [[ "${FUZZ_KEEP:-0}" == 1 ]]; then
        pgc_stop "$cluster" >/dev/null 2>&1 || true
        log "kept $work"
    else
        pgc_destroy "$cluster" >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
    if ((status != 0)); then
        log "FAILED (logs in $outdir)"
    fi
}
trap finish EXIT
trap 'exit 1' HUP INT TERM PIPE

rm -rf "$outdir"
mkdir -p "$outdir"
report="$outdir/report.txt"
: >"$report"
say() { printf '%s\n' "$*" | tee -a "$report"; }

# Settings for the fuzz, on top of cluster B's (they do not change what the suite builds):
#  - track_activity_query_size: "Failed process was running:" (the statement of a crashed
#    backend) prints pg_stat_activity's copy of the query, 1kB by default; sqlsmith's
#    statements are often longer, and we want them whole.
#  - log_min_messages / log_min_error_statement: the defaults, stated because the checks rely
#    on them: every ERROR is logged with its STATEMENT, so a pii_audit error comes with the
#    statement that raised it (about half of sqlsmith's queries fail, so the log is large).
#  - restart_after_crash: the default, stated: after a crash the postmaster reinitializes,
#    sqlsmith reconnects and goes on, and all crashes of a run are reported, not just the first.
fuzz_conf=(
    "track_activity_query_size = '32kB'"
    "log_min_messages = warning"
    "log_min_error_statement = error"
    "restart_after_crash = on"
)
start_cluster b "${pii_conf[@]}" "${fuzz_conf[@]}"
setup_labelling b
create_regression_db b
run_suite b
label_stats b
log "regression database: $labelled labelled columns ($keyed subject keys)"
if ! [[ "$labelled" =~ ^[0-9]+$ ]] || ((labelled < 500)); then
    say "TOO FEW LABELS: $labelled labelled columns in regression (the labelling trigger did not work)"
    exit 1
fi

# The fuzzing role. Not a superuser, on purpose:
#  - sqlsmith calls every function in pg_proc with whatever arguments it finds; as superuser
#    that includes pg_terminate_backend (of pii_audit's worker, say), pg_reload_conf,
#    lo_import, pg_read_file ... and pii_audit's own functions and tables, whose refusals
#    (append-only trail, unknown category ...) are pii_audit errors that are not bugs. The role
#    has no USAGE on schema pii_audit, so every pii_audit error in the log comes from the
#    hooks, and is a bug;
#  - as a non-superuser, row-level security policies that the suite leaves apply, and
#    permission checks run, as for the application users pii_audit is there for.
# It may read and write (sqlsmith's DML always runs in a transaction it rolls back) every table,
# view and sequence outside the system schemas and pii_audit. pg_terminate_backend is revoked
# (in this throwaway database only):
# a role may terminate its own sessions, and sqlsmith feeding it its own pid (from a column
# value) would look like a crash. statement_timeout = 1s (sqlsmith sets that itself on its
# query connection; the role setting also covers its schema connection and any reconnect) so
# that no generated query runs for long.
pgc_psql "$cluster" -q -d regression <<'SQL'
CREATE ROLE sqlsmith LOGIN;
ALTER ROLE sqlsmith IN DATABASE regression SET statement_timeout = '1s';
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) FROM PUBLIC;
DO $$
DECLARE
    s name;
BEGIN
    FOR s IN
        SELECT nspname FROM pg_namespace
         WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pii_audit', 'pg_toast')
           AND nspname !~ '^pg_(toast_)?temp_'
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO sqlsmith', s);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO sqlsmith', s);
        EXECUTE format('GRANT SELECT, USAGE ON ALL SEQUENCES IN SCHEMA %I TO sqlsmith', s);
    END LOOP;
END
$$;
SQL

# Only what the server logs from here on belongs to the fuzz; check the suite's part first.
crash_re='terminated by signal|was terminated by|TRAP:|PANIC:|server process .* exited with exit code|terminating any other active server processes|all server processes terminated; reinitializing'
worker_re='background worker "pii_audit[^"]*" \(PID [0-9]+\) exited'
pii_err_re='(ERROR|FATAL|PANIC):  +pii_audit'
if grep -Eq "$crash_re|$worker_re|$pii_err_re" "$cluster/server.log"; then
    say "FAILED before fuzzing: a crash or pii_audit error while the core suite ran (see test regress.postgres_core_diff):"
    grep -E -A1 "$crash_re|$worker_re|$pii_err_re|Failed process was running" "$cluster/server.log" | head -n 40 | tee -a "$report"
    exit 1
fi
log_offset=$(stat -c %s "$cluster/server.log")
postmaster_pid=$(head -n 1 "$cluster/data/postmaster.pid")

# ------------------------------------------------------------------ the fuzz

target="host=$(pgc_sockdir "$cluster") port=$(pgc_port "$cluster") dbname=regression user=sqlsmith"
# --exclude-catalog: no queries on pg_catalog/information_schema relations (they carry no
#   labels; their functions are still used);
# --verbose: one character per query on stderr (. ok, e error, t statement timeout,
#   S syntax error, C connection lost), and every 800 queries, and at the end, a report:
#   "queries: N", the count of each error message (first line), the error rate, and the
#   grammar productions it stopped using because they kept failing ("impedance").
# No --dump-all-queries (the server log has the statements that matter) and no --log-to.
smith_args=(--target="$target" --seed="$seed" --max-queries="$queries" --exclude-catalog --verbose)
log "sqlsmith ${smith_args[*]}$( ((seconds == 0)) || echo " (time budget ${seconds}s)")"
say "seed: $seed (FUZZ_SEED=$seed repeats this run's queries, until a timeout makes them diverge)"

: >"$work/sqlsmith.log"
fuzz_start=$SECONDS
sqlsmith "${smith_args[@]}" >"$work/sqlsmith.out" 2>"$work/sqlsmith.log" &
smith_pid=$!

# Watch it: stop at the time budget, stop when the postmaster is gone (sqlsmith would then
# retry once a second until its count is done), and fail when it stalls. A SIGINT makes
# sqlsmith print its final report and exit 1.
stop_reason=""
last_size=0
last_change=$SECONDS
last_progress=$SECONDS
while kill -0 "$smith_pid" 2>/dev/null; do
    sleep 2
    size=$(stat -c %s "$work/sqlsmith.log")
    if ((size != last_size)); then
        last_size=$size
        last_change=$SECONDS
    elif ((SECONDS - last_change >= stall)); then
        stop_reason=stalled
    fi
    if ((seconds > 0 && SECONDS - fuzz_start >= seconds)); then
        stop_reason="time"
    fi
    if ! pgc_is_running "$cluster"; then
        stop_reason=postmaster
    fi
    if [[ -n "$stop_reason" ]]; then
        if [[ "$stop_reason" == stalled ]]; then
            # What the stuck backend is doing, before we stop it.
            pgc_psql "$cluster" -x -c "SELECT pid, state, wait_event_type, wait_event, now() - query_start AS running, query FROM pg_stat_activity WHERE usename = 'sqlsmith'" >"$work/stalled.txt" 2>&1 || true
        fi
        kill -INT "$smith_pid" 2>/dev/null || true
        # It exits at once (the handler interrupts a wait for the server); make sure.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$smith_pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$smith_pid" 2>/dev/null || true
        break
    fi
    if ((SECONDS - last_progress >= 60)); then
        last_progress=$SECONDS
        # The last of the reports sqlsmith prints every 800 queries (they grow: one line per
        # kind of error seen).
        done_so_far=$(tac "$work/sqlsmith.log" | grep -a -m 1 '^queries: ' || true)
        log "$((SECONDS - fuzz_start)) s: ${done_so_far:-queries: <800}"
    fi
done
set +e
wait "$smith_pid"
smith_rc=$?
set -e
smith_pid=""
wall=$((SECONDS - fuzz_start))
# Let the worker store the last events before we count them.
sleep 2

# ------------------------------------------------------------------ the verdict

failed=0
fuzz_log="$work/fuzz-server.log"
tail -c +"$((log_offset + 1))" "$cluster/server.log" >"$fuzz_log"

# sqlsmith's final report: from its last "queries:" line to "error rate:".
final=$(awk '/^queries: /{buf=""; keep=1} keep{buf=buf $0 "\n"} /^error rate:/{keep=0; last=buf} END{printf "%s", last}' "$work/sqlsmith.log")
ran=$(printf '%s\n' "$final" | sed -n 's/^queries: //p')
ran=${ran:-0}
rate=$(awk -v q="$ran" -v s="$wall" 'BEGIN { printf "%.1f", (s > 0 ? q / s : 0) }')
say "queries: $ran in ${wall}s ($rate/s), seed $seed"
say "---- sqlsmith's error summary (count, first line of the error; all of it in $report) ----"
printf '%s\n' "$final" | sed -n '/^AST stats/,/^error rate:/p' >"$work/summary.txt"
cat "$work/summary.txt" >>"$report"
if (($(wc -l <"$work/summary.txt") > 42)); then
    head -n 40 "$work/summary.txt"
    echo "... ($(($(wc -l <"$work/summary.txt") - 41)) more kinds of error)"
    tail -n 1 "$work/summary.txt"
else
    cat "$work/summary.txt"
fi

case "$stop_reason" in
    time) say "stopped at the time budget of ${seconds}s" ;;
    stalled)
        failed=1
        say "STALLED: sqlsmith printed nothing for ${stall}s (a statement that ignores statement_timeout?):"
        tee -a "$report" <"$work/stalled.txt"
        ;;
    postmaster)
        failed=1
        say "POSTMASTER GONE: the server stopped running during the fuzz"
        ;;
    "")
        if ((smith_rc != 0)); then
            failed=1
            say "sqlsmith failed (exit $smith_rc):"
            tail -n 20 "$work/sqlsmith.log" | tee -a "$report"
        elif ((ran < queries)); then
            failed=1
            say "sqlsmith ran $ran queries, not $queries"
        fi
        ;;
esac

# 1. Crashes, from the server's side and from sqlsmith's.
if grep -Eq "$crash_re" "$fuzz_log" || [[ "$(head -n 1 "$cluster/data/postmaster.pid" 2>/dev/null)" != "$postmaster_pid" ]]; then
    failed=1
    say "CRASH: $(grep -Ec 'terminated by signal|was terminated by|TRAP:|PANIC:' "$fuzz_log" || true) crashed processes; the statements (\"Failed process was running\"):"
    grep -E "$crash_re|Failed process was running" "$fuzz_log" | cut -c1-20000 | head -n 60 | tee -a "$report"
fi
lost_re='server closed the connection unexpectedly|terminating connection because of crash'
if grep -Eaq "$lost_re" "$work/sqlsmith.log"; then
    failed=1
    say "CRASH seen by sqlsmith (lost connections):"
    grep -Ea "$lost_re" "$work/sqlsmith.log" | sort | uniq -c | head -n 10 | tee -a "$report"
fi
if grep -Eq "$worker_re" "$fuzz_log"; then
    failed=1
    say "PII_AUDIT WORKER EXITED:"
    grep -E -B2 "$worker_re" "$fuzz_log" | head -n 30 | tee -a "$report"
fi

# 2. Errors raised by pii_audit, with the statements that raised them.
if grep -Eq "$pii_err_re" "$fuzz_log" || grep -Eaq "^[0-9]+	(ERROR|FATAL|PANIC):  +pii_audit" "$work/sqlsmith.log"; then
    failed=1
    say "ERRORS raised by pii_audit ($(grep -Ec "$pii_err_re" "$fuzz_log" || true)), with their statements:"
    grep -E -A3 "$pii_err_re" "$fuzz_log" | grep -E "$pii_err_re|DETAIL|STATEMENT" | cut -c1-20000 | head -n 60 | tee -a "$report"
fi

# 3. pii_audit's own counters: reads it could not record, events it dropped; and the proof
#    that the fuzz was audited at all.
pgc_psql "$cluster" -Atq -F ' ' -c 'SELECT events_enqueued, events_persisted, events_dropped, capture_errors, state FROM pii_audit.status' >"$work/status.txt" || echo "? ? ? ? unknown" >"$work/status.txt"
read -r enqueued persisted dropped capture_errors wstate <"$work/status.txt"
audited=$(pgc_psql "$cluster" -Atq -c "SELECT count(*) FROM pii_audit.access_log WHERE database_name = 'regression' AND session_user_name = 'sqlsmith'" || echo '?')
say "pii_audit: $audited audited reads by sqlsmith; status: $enqueued events enqueued, $persisted persisted, $dropped dropped, $capture_errors capture errors, worker $wstate"
if [[ "$capture_errors" != 0 ]]; then
    failed=1
    say "CAPTURE ERRORS: pii_audit could not record $capture_errors reads:"
    grep -E -A2 'WARNING:  +pii_audit could not record' "$fuzz_log" | cut -c1-20000 | head -n 30 | tee -a "$report"
fi
if ! [[ "$audited" =~ ^[0-9]+$ ]] || ((audited == 0)); then
    failed=1
    say "NOTHING AUDITED: no read by sqlsmith reached the trail, so the fuzz did not exercise pii_audit"
fi
# pii_audit's WARNINGs (insider alerts, which bulk random reads raise, and anything else): not
# failures by themselves, but listed so that someone reads them.
if grep -Eq 'WARNING:  +pii_audit' "$fuzz_log"; then
    say "---- pii_audit warnings (count, message up to the first digit) ----"
    grep -Eo 'WARNING:  +pii_audit[^0-9]*' "$fuzz_log" | sort | uniq -c | sort -rn | head -n 20 | tee -a "$report"
fi

if ((failed)); then
    echo "==================== tail of the server log ($outdir/server.log) ===================="
    tail -n 40 "$fuzz_log" | cut -c1-2000
    exit 1
fi
status=0
log "PASSED: $ran queries, no crash, no pii_audit error"
