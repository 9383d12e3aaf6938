#!/usr/bin/env bash
# run-integration.sh TEST_BINARY [ARGS...]: run the libpq integration tests of pii_audit against
# throwaway PostgreSQL 15 clusters that preload the installed extension.
#
# Two clusters are created with scripts/pgcluster.sh, each with a private port and socket
# directory under /tmp, and removed again whatever happens:
#
#   main   shared_preload_libraries = 'pii_audit', every pii_audit setting at its default
#          (the trail goes to database postgres). Exported as PGHOST, PGPORT, PGUSER and
#          PGDATABASE, so a plain PQconnectdb("") reaches it.
#   drop   a 256 kB queue that drops on overflow (pii_audit.queue_size = 256,
#          pii_audit.on_queue_full = drop) and pii_audit.database = pii_audit_it_audit, a
#          database that exists but where the extension is NOT installed, so the worker cannot
#          drain until a test installs it. Database pii_audit_it_app exists too. Exported as
#          PII_AUDIT_IT_DROP_HOST, PII_AUDIT_IT_DROP_PORT, PII_AUDIT_IT_DROP_AUDIT_DB and
#          PII_AUDIT_IT_DROP_APP_DB.
#   stall  a 256 kB queue that waits when full (the default on_queue_full = wait) for up to
#          pii_audit.queue_wait_timeout = 3s; the trail goes to database postgres. For tests that
#          stop the worker (SIGSTOP). Exported as PII_AUDIT_IT_STALL_HOST, PII_AUDIT_IT_STALL_PORT.
#
# TEST_BINARY runs with the remaining ARGS (e.g. --gtest_filter=...). When it fails, the tail of
# both server logs is printed. The exit status is the test binary's.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 TEST_BINARY [ARGS...]" >&2
    exit 2
fi
test_binary=$1
shift
[[ -x "$test_binary" ]] || { echo "run-integration: $test_binary is not an executable" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

bindir=$(pgc__bindir)
pkglibdir=$("$bindir/pg_config" --pkglibdir)
if [[ ! -f "$pkglibdir/pii_audit.so" ]]; then
    echo "run-integration: pii_audit is not installed in $pkglibdir (run cmake --install first)" >&2
    exit 1
fi

audit_db=pii_audit_it_audit
app_db=pii_audit_it_app

# Short paths under /tmp: socket paths must fit in 107 bytes and user postgres must reach them.
main_cluster=$(mktemp -d /tmp/pii_audit_it.XXXXXX)
drop_cluster=$(mktemp -d /tmp/pii_audit_itd.XXXXXX)
stall_cluster=$(mktemp -d /tmp/pii_audit_its.XXXXXX)
status=1

# shellcheck disable=SC2317 # called through the trap
finish() {
    local dir
    if ((status != 0)); then
        for dir in "$main_cluster" "$drop_cluster" "$stall_cluster"; do
            if [[ -f "$dir/server.log" ]]; then
                echo "==================== tail of the server log of $dir ===================="
                tail -n 80 "$dir/server.log"
            fi
        done
    fi
    pgc_destroy "$main_cluster" || true
    pgc_destroy "$drop_cluster" || true
    pgc_destroy "$stall_cluster" || true
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pgc_init "$main_cluster" auto "shared_preload_libraries = 'pii_audit'"
# Members of pii_it_password_users must give a password (failed-login tests); everyone else
# keeps trust. The group is created by the tests; hba resolves it at each connection.
hba="$main_cluster/data/pg_hba.conf"
{ echo "local all +pii_it_password_users scram-sha-256"; cat "$hba"; } > "$hba.new"
cat "$hba.new" > "$hba" && rm -f "$hba.new"
pgc_start "$main_cluster"

pgc_init "$drop_cluster" auto \
    "shared_preload_libraries = 'pii_audit'" \
    "pii_audit.database = '$audit_db'" \
    "pii_audit.queue_size = 256" \
    "pii_audit.on_queue_full = drop"
# Create the databases before the worker first looks for its audit database, so the log shows
# no FATAL from a worker that started too early.
pgc_start "$drop_cluster" "-c shared_preload_libraries="
pgc_psql "$drop_cluster" -q -c "CREATE DATABASE $audit_db" -c "CREATE DATABASE $app_db"
pgc_stop "$drop_cluster"
pgc_start "$drop_cluster"

pgc_init "$stall_cluster" auto \
    "shared_preload_libraries = 'pii_audit'" \
    "pii_audit.queue_size = 256" \
    "pii_audit.queue_wait_timeout = '3s'"
pgc_start "$stall_cluster"

pgc_env "$main_cluster"
export PGDATABASE=postgres
PII_AUDIT_IT_DROP_HOST=$(pgc_sockdir "$drop_cluster")
PII_AUDIT_IT_DROP_PORT=$(pgc_port "$drop_cluster")
export PII_AUDIT_IT_DROP_HOST PII_AUDIT_IT_DROP_PORT
PII_AUDIT_IT_STALL_HOST=$(pgc_sockdir "$stall_cluster")
PII_AUDIT_IT_STALL_PORT=$(pgc_port "$stall_cluster")
export PII_AUDIT_IT_STALL_HOST PII_AUDIT_IT_STALL_PORT
export PII_AUDIT_IT_DROP_AUDIT_DB=$audit_db PII_AUDIT_IT_DROP_APP_DB=$app_db

echo "run-integration: main cluster $PGHOST port $PGPORT; drop cluster $PII_AUDIT_IT_DROP_HOST port $PII_AUDIT_IT_DROP_PORT"
set +e
"$test_binary" "$@"
status=$?
set -e
exit "$status"
