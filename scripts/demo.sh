#!/usr/bin/env bash
# demo.sh: see pii_audit at work in two minutes.
# Installs the dependencies, builds and installs the extension (scripts/build.sh), starts a
# throwaway PostgreSQL 15 cluster in /tmp/pii_audit_demo that preloads pii_audit, loads a small
# telecom sales office (demo/telecom.sql), plays a few clerks at the counter through the shared
# application role counter_app, and prints the audit trail, the queue's health and the labelled
# columns. The cluster is left running so you can look around; the script says how to connect.
#
#   scripts/demo.sh              build, install, run the demo, leave the cluster running
#   scripts/demo.sh --no-build   the same without building (the extension is installed)
#   scripts/demo.sh --stop       stop and remove the demo cluster
set -Eeuo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source-path=SCRIPTDIR source=pgcluster.sh
source "$repo/scripts/pgcluster.sh"

DEMO_DIR=${DEMO_DIR:-/tmp/pii_audit_demo}
build=1
for arg in "$@"; do
    case "$arg" in
        --stop)
            pgc_destroy "$DEMO_DIR"
            echo "demo: cluster in $DEMO_DIR stopped and removed"
            exit 0
            ;;
        --no-build) build=0 ;;
        -h | --help)
            sed -n '2,11p' "$0"
            exit 0
            ;;
        *)
            echo "demo: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

banner() {
    printf '\n==== %s ====\n' "$*"
}

on_error() {
    local rc=$?
    echo >&2
    echo "demo: FAILED (exit $rc) at line ${BASH_LINENO[0]}: $BASH_COMMAND" >&2
    if [[ -f "$DEMO_DIR/server.log" ]]; then
        echo "---- tail of $DEMO_DIR/server.log ----" >&2
        tail -n 40 "$DEMO_DIR/server.log" >&2
    fi
    exit "$rc"
}
trap on_error ERR

if ((build)); then
    banner "building and installing pii_audit"
    "$repo/scripts/build.sh"
fi

banner "starting a throwaway cluster in $DEMO_DIR"
pgc_init "$DEMO_DIR" auto \
    "shared_preload_libraries = 'pii_audit'" \
    "pii_audit.database = 'postgres'"
pgc_start "$DEMO_DIR"
port=$(pgc_port "$DEMO_DIR")
echo "listening on socket $DEMO_DIR/sock, port $port"

banner "loading demo/telecom.sql (schema, labels, 200 customers, role counter_app)"
pgc_psql "$DEMO_DIR" -q -f "$repo/demo/telecom.sql"

# The counter application: one shared role, one session per clerk at the desk.
# Reads SQL on stdin; results are not shown, errors are (and stop the demo).
as_counter_app() {
    PGAPPNAME=counter-desk pgc_psql "$DEMO_DIR" -q -U counter_app >/dev/null
}

banner "the counter at work"
echo "clerk-0421 serves two customers (name, phone, address)"
as_counter_app <<'SQL'
SET pii_audit.end_user = 'clerk-0421';
SELECT name, phone FROM customers WHERE id = 17;
SELECT id, name, address FROM customers WHERE phone = '13800130042';
SQL

echo "clerk-0107 checks an ID card and an address (with SET LOCAL inside a transaction)"
as_counter_app <<'SQL'
BEGIN;
SET LOCAL pii_audit.end_user = 'clerk-0107';
SELECT name, id_number FROM customers WHERE id = 58;
SELECT name, address FROM customers WHERE id = 123;
COMMIT;
SQL

echo "clerk-0533 runs reports that touch no labelled column (nothing to record)"
as_counter_app <<'SQL'
SET pii_audit.end_user = 'clerk-0533';
SELECT office, count(*) FROM clerks GROUP BY office;
SELECT count(*), max(sent_at) FROM sms_codes;
SELECT id FROM customers WHERE id < 10;
SQL

echo "a morning's ordinary work: three more clerks look up 40 customers each (no codes)"
for clerk in 0201 0202 0203; do
    {
        echo "SET pii_audit.end_user = 'clerk-$clerk';"
        for n in $(seq 1 40); do
            echo "SELECT name, phone FROM customers WHERE id = $(( (10#$clerk * 7 + n * 13) % 200 + 1 ));"
        done
    } | as_counter_app
done

echo "clerk-0999 reads the latest SMS verification code of 30 customers, one after the other"
{
    echo "SET pii_audit.end_user = 'clerk-0999';"
    for n in $(seq 101 130); do
        printf "SELECT phone, code, sent_at FROM sms_codes WHERE phone = '1380013%04d' ORDER BY sent_at DESC LIMIT 1;\n" "$n"
    done
} | as_counter_app

banner "waiting for the background worker to store the events"
count=-1
stable=0
for _ in $(seq 1 20); do
    sleep 0.5
    now=$(pgc_psql "$DEMO_DIR" -Atc 'SELECT count(*) FROM pii_audit.access_log')
    if [[ "$now" == "$count" && "$now" -gt 0 ]]; then
        stable=$((stable + 1))
        ((stable >= 2)) && break
    else
        stable=0
    fi
    count=$now
done
echo "pii_audit.access_log has $now rows"

banner "who read what: pii_audit.access_log"
pgc_psql "$DEMO_DIR" <<'SQL'
\pset footer on
SELECT event_id, end_user, current_user_name, command, relation, columns, categories,
       row_count, subject_count AS subjects, status, query_text
FROM pii_audit.access_log
ORDER BY event_id;
SQL

banner "reads per end user (the clerk behind the shared role)"
pgc_psql "$DEMO_DIR" <<'SQL'
WITH reads AS (SELECT * FROM pii_audit.access_log WHERE command = 'SELECT')
SELECT r.end_user, count(*) AS statements, sum(r.row_count) AS rows_read,
       (SELECT array_agg(DISTINCT c ORDER BY c)
        FROM reads r2, unnest(r2.categories) AS c
        WHERE r2.end_user IS NOT DISTINCT FROM r.end_user) AS categories_read
FROM reads r
GROUP BY r.end_user
ORDER BY statements DESC;
SQL

banner "one customer asks who read her data: pii_audit.subject_access"
pgc_psql "$DEMO_DIR" <<'SQL'
SELECT event_time::time(0) AS at, end_user, application_name, relation, categories, query_text
FROM pii_audit.subject_access('13800130042')
ORDER BY event_id;
SQL

banner "whose codes did clerk-0999 see? pii_audit.breach_scope (a notification list)"
pgc_psql "$DEMO_DIR" <<'SQL'
\pset footer on
SELECT identifier, relations, reads, categories
FROM pii_audit.breach_scope('clerk-0999', now() - interval '1 hour', now() + interval '1 minute')
ORDER BY identifier LIMIT 5;
SQL

banner "insider alerts raised by the worker: pii_audit.alerts"
pgc_psql "$DEMO_DIR" <<'SQL'
\pset footer on
SELECT alert_id, actor, peer_group, detector, score, severity, explanation
FROM pii_audit.alerts ORDER BY alert_id;
SQL
echo "(each alert also went out as NOTIFY pii_audit_alerts and as a WARNING line in $DEMO_DIR/server.log)"

banner "queue health: pii_audit.status"
pgc_psql "$DEMO_DIR" -x -c 'SELECT * FROM pii_audit.status'

banner "what is labelled: pii_audit.labelled_columns"
pgc_psql "$DEMO_DIR" -c 'SELECT * FROM pii_audit.labelled_columns'

if [[ "$now" -eq 0 ]]; then
    echo "demo: FAILED: the access log is empty after the scenario" >&2
    exit 1
fi

banner "the cluster is still running"
cat <<EOF
Connect as the superuser:     psql -h $DEMO_DIR/sock -p $port -U postgres postgres
Connect as the counter app:   psql -h $DEMO_DIR/sock -p $port -U counter_app postgres
  then e.g.                   SET pii_audit.end_user = 'clerk-0421';
                              SELECT name FROM customers WHERE id = 1;
Or set the environment:       $(pgc_env_print "$DEMO_DIR")
Server log:                   $DEMO_DIR/server.log
Stop and remove it:           scripts/demo.sh --stop
EOF
