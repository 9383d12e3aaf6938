#!/usr/bin/env bash
# run.sh [BUILD_DIR]: PostgreSQL 15's own regression suite, run twice and compared.
#
# pii_audit hooks the executor, the planner, utility commands, object drops and security labels
# of every statement in every database. Our own tests only cover statements we thought of; the
# core suite (src/test/regress, ~200 files, every SQL feature) covers the rest. We run it:
#   A: on a plain cluster,
#   B: on an identical cluster that preloads pii_audit, has the extension in `postgres` (the
#      audit database) and in template1, and an event trigger in template1 that labels every
#      column of every table the suite creates (label_columns.sql), so that its reads are
#      captured, with subject tracking, while the suite checks that results do not change.
# and compare A's and B's results/*.out file by file. The test passes only when
#   - no server process of B (or A) crashed or hit an assertion,
#   - no ERROR/FATAL/PANIC in B's results or server log came from pii_audit,
#   - at least MIN_LABELLED columns were labelled (else the comparison proves nothing), and
#   - every line that differs is matched by an entry of allowed-diffs.txt, which lists each
#     known, acceptable difference with the reason it is acceptable.
# Comparing A with B (not B with the suite's expected files) makes the test independent of
# what the installed PostgreSQL minor version prints and of the environment; only pii_audit
# can make them differ.
#
# The suite comes from the Debian source package of the installed postgresql-15 version (see
# fetch_suite), cached under BUILD_DIR/pg-regress-src, so only the first run downloads.
# Results, diffs and server logs are left in BUILD_DIR/pg_regress_diff.
#
# Environment: BUILD_DIR (when no argument; default build), MIN_LABELLED (default 500),
# PG_REGRESS_DIFF_EXACT=1 (fail instead of falling back to another 15.x source, see below),
# PG_REGRESS_DIFF_KEEP=1 (keep the clusters' work directory under /tmp for inspection).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
min_labelled=${MIN_LABELLED:-500}

# The suite's download, the clusters and their settings: shared with test/fuzz/sqlsmith.sh.
# shellcheck source-path=SCRIPTDIR source=suite.sh
source "$here/suite.sh"

suite_init "${1:-${BUILD_DIR:-$repo/build}}"
outdir="$build_dir/pg_regress_diff"
suite_fetch
suite_workdir /tmp/pii_regdiff.XXXXXX

status=1
# shellcheck disable=SC2317 # called through the traps
finish() {
    trap '' PIPE
    local c
    for c in a b; do
        if [[ -f "$work/$c/server.log" ]]; then
            mkdir -p "$outdir/$c"
            cp "$work/$c/server.log" "$outdir/$c/server.log" 2>/dev/null || true
        fi
        pgc_destroy "$work/$c" >/dev/null 2>&1 || true
    done
    if [[ "${PG_REGRESS_DIFF_KEEP:-0}" == 1 ]]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
    if ((status != 0)); then
        log "FAILED (results, diffs and server logs in $outdir)"
    fi
}
trap finish EXIT
trap 'exit 1' HUP INT TERM PIPE

# A: plain.
start_cluster a
create_regression_db a
run_suite a
pgc_stop "$work/a"

# B: pii_audit preloaded; the extension in the audit database and in template1, then the
# labelling event trigger in template1.
start_cluster b "${pii_conf[@]}"
setup_labelling b
create_regression_db b
run_suite b
label_stats b
log "cluster b: $labelled labelled columns in regression ($keyed subject keys), $changes label changes and $reads audited reads in the trail"
pgc_stop "$work/b"

# ------------------------------------------------------------------ the comparison

rm -rf "$outdir"
mkdir -p "$outdir"
cp -r "$work/out-a" "$outdir/a"
cp -r "$work/out-b" "$outdir/b"
cp "$work/a/server.log" "$outdir/a/server.log"
cp "$work/b/server.log" "$outdir/b/server.log"

failed=0
report="$outdir/report.txt"
: >"$report"
say() { printf '%s\n' "$*" | tee -a "$report"; }

# 1. Crashes: a backend killed by a signal (segfault, abort), a failed assertion, a PANIC.
crash_re='terminated by signal|was terminated by|TRAP:|PANIC:'
for c in a b; do
    if grep -Eq "$crash_re" "$outdir/$c/server.log"; then
        failed=1
        say "CRASH in cluster $c (server log $outdir/$c/server.log):"
        grep -E -A1 "$crash_re|Failed process was running" "$outdir/$c/server.log" | head -n 60 | tee -a "$report"
    fi
done

# 2. Errors raised by pii_audit: every message of the extension starts with "pii_audit".
pii_err_re='(ERROR|FATAL|PANIC):  +pii_audit'
if grep -Eq "$pii_err_re" "$outdir/b/server.log" || grep -Eq "^(ERROR|FATAL|PANIC):  +pii_audit" "$outdir"/b/results/*.out; then
    failed=1
    say "ERRORS raised by pii_audit:"
    { grep -E "$pii_err_re" "$outdir/b/server.log"; grep -EH "^(ERROR|FATAL|PANIC):  +pii_audit" "$outdir"/b/results/*.out; } | head -n 40 | tee -a "$report" || true
fi

# 3. The labelling must have happened, or B tested nothing.
if ! [[ "$labelled" =~ ^[0-9]+$ ]] || ((labelled < min_labelled)); then
    failed=1
    say "TOO FEW LABELS: $labelled labelled columns in regression (at least $min_labelled expected): the event trigger of label_columns.sql did not work"
    grep -E 'pii_audit_regress' "$outdir/b/server.log" | head -n 20 | tee -a "$report" || true
fi

# 4. Every difference must be allow-listed.
if ! "$here/compare.sh" "$outdir/a/results" "$outdir/b/results" "$here/allowed-diffs.txt" "$outdir/unexpected.diff" "$outdir/allowed.diff" | tee -a "$report"; then
    failed=1
    say "UNEXPECTED DIFFERENCES between A (plain) and B (pii_audit) (all of them in $outdir/unexpected.diff):"
    head -n 3000 "$outdir/unexpected.diff"
fi

if ((failed)); then
    echo "==================== tail of B's server log ($outdir/b/server.log) ===================="
    tail -n 40 "$outdir/b/server.log"
    exit 1
fi
status=0
log "PASSED: A and B differ only where allowed-diffs.txt says why"
