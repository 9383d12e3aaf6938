# checks.sh: what the server tests share (sourced after scripts/pgcluster.sh, with $dir set to
# the test's cluster directory). Counts passes and failures in $passes and $failures.
passes=0
failures=0

check() {  # check NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then
        echo "ok - $1"
        passes=$((passes + 1))
    else
        echo "not ok - $1: expected [$2], got [$3]"
        failures=$((failures + 1))
    fi
}

contains() {  # contains NAME NEEDLE HAYSTACK
    if [[ "$3" == *"$2"* ]]; then
        echo "ok - $1"
        passes=$((passes + 1))
    else
        echo "not ok - $1: [$2] not in [$3]"
        failures=$((failures + 1))
    fi
}

q() { pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }

wait_until() {  # wait_until DB SQL-returning-t [seconds]
    local deadline=$((SECONDS + ${3:-30}))
    while ((SECONDS < deadline)); do
        [[ "$(q -d "$1" -c "$2" 2>/dev/null)" == t ]] && return 0
        sleep 0.2
    done
    return 1
}

# siem_workdir NAME: a private work directory, $work (/tmp/pii_audit_NAME.XXXXXX, readable by the
# cluster's user), and the cluster directory in it, $dir.
siem_workdir() {
    work=$(mktemp -d "/tmp/pii_audit_$1.XXXXXX")
    chmod 755 "$work"
    dir=$work/pg
}

# siem_remove KEEP_VARIABLE: destroys the cluster, then removes $work unless the variable named
# is set (then says where it was kept).
siem_remove() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    if [[ -n "${!1:-}" ]]; then echo "# kept $work"; else rm -rf "$work"; fi
}

# shipper_cleanup KEEP_VARIABLE: the end of a test that runs a shipper ($ship) against a receiver
# ($rcv_pid): both killed, the tails of their *.err files in $work shown if a check failed, then
# siem_remove.
shipper_cleanup() {
    if [[ -n "$ship" ]]; then kill -9 "$ship" 2>/dev/null || true; fi
    if [[ -n "$rcv_pid" ]]; then kill "$rcv_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if ((failures > 0)); then
        local p
        for p in "$work"/*.err; do [[ -s "$p" ]] && { echo "---- tail of $p"; tail -n 15 "$p"; }; done
    fi
    siem_remove "$1"
}

# siem_cluster [FLUSH_MS] [ROWS]: initialises and starts the cluster in $dir for the SIEM tests:
# pii_audit storing every FLUSH_MS (50), customers(id, name) with ROWS rows (1,000) and name
# labelled, and a login role siem in pii_audit_siem. Sets sock and port.
siem_cluster() {
    pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" \
        "pii_audit.flush_interval = ${1:-50}" >/dev/null
    pgc_start "$dir" >/dev/null
    sock=$(pgc_sockdir "$dir")
    port=$(pgc_port "$dir")
    q -d postgres -v rows="${2:-1000}" <<'SQL'
CREATE EXTENSION pii_audit;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers SELECT g, 'Customer ' || g FROM generate_series(1, :rows) g;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
CREATE ROLE siem LOGIN IN ROLE pii_audit_siem;
SQL
}
