#!/usr/bin/env bash
# backend_cost.sh: what auditing costs the backend that reads, per event, in instructions.
#
# Timing a backend's share on a 2-core machine shared with the worker, pgbench and other work is
# noise; counting instructions is not. One throwaway cluster gets bench/lookup.sh's customers
# table (ROWS rows; name and phone labelled), then is stopped, and a single-user backend
# (postgres --single: no postmaster, no worker, the same executor, hooks and queue push) runs
# N prepared point lookups, EXECUTE q(id) for N different ids, under valgrind's callgrind, in
# four configurations:
#   plain       shared_preload_libraries = ''           PostgreSQL alone
#   loaded      pii_audit loaded, pii_audit.enabled = off  the hooks' cost when not auditing
#   pii_audit   pii_audit on                             every lookup builds an event and pushes
#                                                        it into the shared-memory queue
#   subjects    pii_audit on, id labelled subject_key    ... and hashes whose row it read
# Each configuration also runs with N/10 lookups; the difference between the two runs, divided
# by the 0.9 N lookups between them, is the cost of one lookup without start-up and shutdown.
# Printed: instructions per lookup per configuration, the difference to plain (the backend-side
# cost of one event), and the top functions of the pii_audit and subjects runs by inclusive
# instructions (callgrind_annotate), for reading where the cost is.
# Environment: N (20000), ROWS (100000), KEEP=1 keeps the directory (its callgrind files).
# Needs valgrind (Debian package valgrind).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
command -v valgrind >/dev/null || { echo "backend_cost: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
N=${N:-20000}
ROWS=${ROWS:-100000}
((N >= 100)) || { echo "backend_cost: N must be at least 100" >&2; exit 1; }
bindir=$(pgc__bindir)
dir=$(mktemp -d /tmp/pii_audit_backend_cost.XXXXXX)
cleanup() {
    [[ "${KEEP:-0}" == 1 ]] && { pgc_stop "$dir" fast >/dev/null 2>&1 || true; echo "# kept $dir"; return; }
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir"

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.queue_size = 262144" \
    "pii_audit.database = 'postgres'" >/dev/null
pgc_start "$dir" >/dev/null
pgc_psql "$dir" -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, phone text NOT NULL);
INSERT INTO customers SELECT i, 'Customer ' || i, '138' || lpad(i::text, 8, '0')
FROM generate_series(1, $ROWS) AS i;
VACUUM ANALYZE customers;
CREATE EXTENSION pii_audit;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
SQL
pgc_stop "$dir" fast >/dev/null

# The statements a run feeds the single-user backend (one per line).
lookups() {  # lookups COUNT
    echo "PREPARE q(bigint) AS SELECT name, phone FROM customers WHERE id = \$1;"
    awk -v n="$1" -v rows="$ROWS" 'BEGIN { for (i = 0; i < n; i++) printf "EXECUTE q(%d);\n", (i * 7919) % rows + 1 }'
}
# run CONFIG COUNT: prints the instructions callgrind counted (Ir).
run() {
    local config=$1 count=$2 preload=pii_audit enabled=on out="$dir/callgrind.$1.$2"
    case "$config" in
        plain) preload='' ;;
        loaded) enabled=off ;;
    esac
    lookups "$count" >"$dir/input.sql"
    chown postgres: "$dir/input.sql" 2>/dev/null || true
    : >"$out" && chown postgres: "$out" 2>/dev/null || true
    (cd / && runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$out" \
        --trace-children=no "$bindir/postgres" --single -D "$dir/data" \
        -c shared_preload_libraries="$preload" -c pii_audit.enabled="$enabled" \
        -c pii_audit.on_queue_full=drop postgres <"$dir/input.sql" >"$dir/output.$config.$count" 2>&1) ||
        { echo "backend_cost: the $config run failed:" >&2; tail -5 "$dir/output.$config.$count" >&2; exit 1; }
    awk '/^summary:/ { print $2 }' "$out"
}
set_subject_key() {
    (cd / && runuser -u postgres -- "$bindir/postgres" --single -D "$dir/data" \
        -c shared_preload_libraries=pii_audit postgres \
        <<<"SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key';" >/dev/null 2>&1)
}

echo "# backend_cost.sh: $N lookups per run, $ROWS rows, $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
declare -A per
for config in plain loaded pii_audit subjects; do
    [[ "$config" == subjects ]] && set_subject_key
    small=$(run "$config" $((N / 10)))
    large=$(run "$config" "$N")
    per[$config]=$(awk -v a="$small" -v b="$large" -v n=$((N - N / 10)) 'BEGIN { printf "%.0f", (b - a) / n }')
    echo "$config: ${per[$config]} instructions per lookup"
done
printf '\n| configuration | instructions per lookup | more than plain | per lookup, share of plain |\n|---|---|---|---|\n'
for config in plain loaded pii_audit subjects; do
    printf '| %s | %s | %s | %s |\n' "$config" "${per[$config]}" "$((per[$config] - per[plain]))" \
        "$(awk -v a="${per[$config]}" -v p="${per[plain]}" 'BEGIN { printf "%.3f", a / p }')"
done
# Whether the events were really built and queued: the runs do not drop (the queue holds them).
for config in pii_audit subjects; do
    if grep -q "dropped" "$dir/output.$config.$N"; then
        echo "backend_cost: the $config run dropped events: the queue was too small" >&2
        exit 1
    fi
done
# Where the difference is: per function (exclusive instructions, so each instruction is counted
# once), the lookups' share (large run minus small run) in this configuration minus in plain.
profile() {  # profile CONFIG: "function<TAB>instructions per lookup"
    local config=$1
    for count in $((N / 10)) "$N"; do
        callgrind_annotate --auto=no --threshold=100 "$dir/callgrind.$config.$count" 2>/dev/null |
            awk -v c="$count" '$1 ~ /^[0-9,]+$/ && NF >= 2 { x = $1; gsub(",", "", x); $1 = ""; sub(/^ *\([^)]*\) */, ""); sub(/ \[[^]]*\]$/, ""); gsub(/\(anonymous namespace\)::/, ""); sub(/\(.*$/, ""); if ($0 !~ /^(PROGRAM TOTALS|events annotated)/) print c "\t" $0 "\t" x }'
    done | awk -F'\t' -v small=$((N / 10)) -v n=$((N - N / 10)) '
        { v[$2] += ($1 == small ? -$3 : $3) }
        END { for (f in v) printf "%s\t%.1f\n", f, v[f] / n }'
}
profile plain >"$dir/profile.plain"
for config in pii_audit subjects; do
    profile "$config" >"$dir/profile.$config"
    echo
    echo "## $config: where the extra instructions per lookup go (exclusive, minus plain; top 25)"
    awk -F'\t' 'NR == FNR { p[$1] = $2; next } { d = $2 - p[$1]; if (d > 20 || d < -20) printf "%8.0f  %s\n", d, $1 }' \
        "$dir/profile.plain" "$dir/profile.$config" | sort -rn | head -25
done
