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
