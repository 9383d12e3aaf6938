#!/usr/bin/env bash
# run-regress.sh BUILD_DIR [TEST...]: run the pg_regress suite of pii_audit against a throwaway
# PostgreSQL 15 cluster that preloads the installed extension.
#
# The cluster gets shared_preload_libraries = 'pii_audit' and pii_audit.database =
# 'contrib_regression', then every line of test/regress/postgresql.conf (if present; later
# lines win). Database contrib_regression is created before the library is preloaded (so the
# background worker finds it), then pg_regress runs with --use-existing the tests listed in
# test/regress/schedule (or every test/regress/sql/*.sql, or the TESTs given). Results go to
# BUILD_DIR/regress, together with a copy of the server log. On failure regression.diffs and
# the tail of the server log are printed. The cluster is always removed at the end.
#
# pg_regress is a client here (it never runs initdb with --use-existing), so it runs as the
# caller, root included; only the server runs as the postgres OS user. That way the source
# and build trees may live where that user cannot read them.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BUILD_DIR [TEST...]" >&2
    exit 2
fi
build_dir=$1
shift
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)

regress_src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$regress_src/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

bindir=$(pgc__bindir)
pkglibdir=$("$bindir/pg_config" --pkglibdir)
pg_regress="$pkglibdir/pgxs/src/test/regress/pg_regress"
[[ -x "$pg_regress" ]] || { echo "run-regress: $pg_regress not found (postgresql-server-dev-15 / postgresql-client-15)" >&2; exit 1; }
[[ -f "$pkglibdir/pii_audit.so" ]] || { echo "run-regress: pii_audit is not installed in $pkglibdir (cmake --install first)" >&2; exit 1; }

dbname=contrib_regression
outdir="$build_dir/regress"
mkdir -p "$outdir"
rm -rf "$outdir/results" "$outdir/regression.diffs" "$outdir/regression.out" "$outdir/server.log"

conf=(
    "shared_preload_libraries = 'pii_audit'"
    "pii_audit.database = '$dbname'"
)
if [[ -f "$regress_src/postgresql.conf" ]]; then
    while IFS= read -r line || [[ -n "$line" ]]; do
        conf+=("$line")
    done <"$regress_src/postgresql.conf"
fi

# Tests to run: the arguments, else the schedule, else every sql/*.sql in name order.
tests=()
schedule_args=()
if [[ $# -gt 0 ]]; then
    tests=("$@")
elif [[ -f "$regress_src/schedule" ]]; then
    schedule_args=("--schedule=$regress_src/schedule")
else
    for f in "$regress_src"/sql/*.sql; do
        [[ -e "$f" ]] || continue
        t=${f##*/}
        tests+=("${t%.sql}")
    done
fi
if ((${#tests[@]} == 0 && ${#schedule_args[@]} == 0)); then
    echo "run-regress: no tests (no $regress_src/schedule and no sql/*.sql)" >&2
    exit 1
fi

# A short path under /tmp: the socket path must fit in 107 bytes and the postgres user must be
# able to reach it.
cluster=$(mktemp -d /tmp/pii_audit_regress.XXXXXX)
status=1
# shellcheck disable=SC2317 # called through the traps
finish() {
    trap '' PIPE # a reader that went away (| head) must not stop the cleanup
    if [[ -f "$cluster/server.log" ]]; then
        cp "$cluster/server.log" "$outdir/server.log" 2>/dev/null || true
    fi
    pgc_destroy "$cluster" || true
    if ((status != 0)); then
        if [[ -s "$outdir/regression.diffs" ]]; then
            echo "==================== $outdir/regression.diffs ===================="
            cat "$outdir/regression.diffs"
        fi
        if [[ -f "$outdir/server.log" ]]; then
            echo "==================== tail of the server log ($outdir/server.log) ===================="
            tail -n 60 "$outdir/server.log"
        fi
    fi
}
trap finish EXIT
trap 'exit 1' HUP INT TERM PIPE

pgc_init "$cluster" auto "${conf[@]}"
port=$(pgc_port "$cluster")

# Create the database with the library not loaded, then start for real.
pgc_start "$cluster" "-c shared_preload_libraries="
pgc_psql "$cluster" -q <<SQL
CREATE DATABASE $dbname TEMPLATE template0;
-- what pg_regress itself sets on a database it creates
ALTER DATABASE $dbname SET lc_messages TO 'C';
ALTER DATABASE $dbname SET lc_monetary TO 'C';
ALTER DATABASE $dbname SET lc_numeric TO 'C';
ALTER DATABASE $dbname SET lc_time TO 'C';
ALTER DATABASE $dbname SET bytea_output TO 'hex';
ALTER DATABASE $dbname SET timezone_abbreviations TO 'Default';
SQL
pgc_stop "$cluster"
pgc_start "$cluster"

echo "run-regress: cluster on socket $cluster/sock port $port; results in $outdir"
set +e
"$pg_regress" \
    --use-existing \
    --bindir="$bindir" \
    --host="$cluster/sock" \
    --port="$port" \
    --user=postgres \
    --dbname="$dbname" \
    --inputdir="$regress_src" \
    --outputdir="$outdir" \
    "${schedule_args[@]}" \
    "${tests[@]}"
status=$?
set -e
exit "$status"
