#!/usr/bin/env bash
# lookup.sh: the speed benchmark. How much does auditing cost a point lookup of personal data?
#
# One throwaway PostgreSQL 15 cluster, one database with customers(id, name, phone, id_number,
# address) holding ROWS (1,000,000) rows, and pgbench running
#     \set id random(1, ROWS)
#     SELECT name, phone FROM customers WHERE id = :id;
# with -M prepared, CLIENTS clients and JOBS threads, for three configurations of the SAME
# cluster, interleaved plain pii_audit pgaudit, plain pii_audit pgaudit, ... for ROUNDS rounds:
#   plain      shared_preload_libraries = ''           (PostgreSQL alone)
#   pii_audit  shared_preload_libraries = 'pii_audit'  (name and phone labelled; every lookup
#                                                       becomes an event stored in the trail)
#   subjects   shared_preload_libraries = 'pii_audit'  (as pii_audit, and id is also labelled
#                                                       subject_key: each event records whose
#                                                       row was read, as a keyed hash)
#   pgaudit    shared_preload_libraries = 'pgaudit'    (object audit of the same read through
#                                                       pgaudit.role; one log line per lookup)
# Every configuration change is a server restart; after each restart the table and its index
# are prewarmed and pgbench runs WARMUP seconds unmeasured before the DURATION-second round.
# It prints per-round TPS, the medians, and a parseable summary line
#     ratio pii_audit/plain=0.953 pgaudit/plain=0.861
# (each ratio is the median over rounds of that round's TPS divided by the same round's plain
# TPS). It exits non-zero if pii_audit reports dropped events or pgaudit logged too little.
#
# Environment: ROUNDS (5), DURATION (20), WARMUP (10), CLIENTS (2), JOBS (CLIENTS),
# ROWS (1000000), CONFIGS ("plain pii_audit subjects pgaudit"; pii_audit@2MB sets the queue
# size of that configuration), KEEP=1 keeps the cluster directory.
# The extension must be installed; if it is not, scripts/build.sh is run first.
# After each round's pgbench, COPY customers TO '/dev/null' (the whole table) is timed once, and
# the medians are printed on a line starting "copy seconds (median):".
# With the defaults the whole run takes about 12 minutes on 2 cores.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-10}
CLIENTS=${CLIENTS:-2}
JOBS=${JOBS:-$CLIENTS}
ROWS=${ROWS:-1000000}
CONFIGS=${CONFIGS:-"plain pii_audit subjects pgaudit"}
KEEP=${KEEP:-0}
read -r -a configs <<<"$CONFIGS"
for v in ROUNDS DURATION WARMUP CLIENTS JOBS ROWS; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "bench: $v must be a positive integer" >&2; exit 2; }
done

bindir=$(pgc__bindir)
pkglibdir=$("$bindir/pg_config" --pkglibdir)
# A configuration may carry a queue size: pii_audit@2MB is pii_audit with pii_audit.queue_size =
# '2MB' (likewise subjects@...).
base_of() { echo "${1%%@*}"; }
queue_of() { if [[ "$1" == *@* ]]; then echo "${1#*@}"; fi; }
for c in "${configs[@]}"; do
    if [[ -n "$(queue_of "$c")" && ! "$(queue_of "$c")" =~ ^[0-9]+(kB|MB|GB)$ ]]; then
        echo "bench: bad queue size in '$c' (e.g. pii_audit@2MB)" >&2
        exit 2
    fi
    case "$(base_of "$c")" in
        plain) ;;
        pii_audit | subjects)
            if [[ ! -f "$pkglibdir/pii_audit.so" ]]; then
                echo "bench: pii_audit is not installed; running scripts/build.sh"
                "$repo/scripts/build.sh"
            fi
            ;;
        pgaudit)
            [[ -f "$pkglibdir/pgaudit.so" ]] || "$repo/scripts/install-deps.sh"
            ;;
        *)
            echo "bench: unknown configuration '$c' (plain, pii_audit, subjects, pgaudit)" >&2
            exit 2
            ;;
    esac
done

dir=$(mktemp -d /tmp/pii_audit_bench.XXXXXX)
# shellcheck disable=SC2317 # called through the trap
cleanup() {
    trap '' PIPE
    if ((KEEP)); then
        pgc_stop "$dir" || true
        echo "bench: cluster kept in $dir"
    else
        pgc_destroy "$dir" || true
    fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE

spl_for() {
    case "$(base_of "$1")" in
        plain) echo "" ;;
        subjects) echo "pii_audit" ;;
        *) base_of "$1" ;;
    esac
}

# Defaults plus shared_buffers big enough to hold the table. fsync stays on (pgcluster turns it
# off for tests): the pii_audit worker writes the trail, and that cost must be real. No
# per-statement logging (log_statement and log_min_duration_statement keep their defaults);
# only pgaudit, by design, writes one log line per audited lookup.
pgc_init "$dir" auto \
    "fsync = on" \
    "shared_buffers = 512MB" \
    "pii_audit.database = 'bench'" \
    "pgaudit.role = 'auditor'"
psql_b() { pgc_psql "$dir" -d bench "$@"; }

restart_with() {
    pgc_stop "$dir"
    local queue
    queue=$(queue_of "$1")
    pgc_runtime_conf "$dir" "shared_preload_libraries = '$(spl_for "$1")'" \
        ${queue:+"pii_audit.queue_size = '$queue'"}
    pgc_start "$dir"
}

echo "bench: cluster in $dir; $ROWS rows; rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s clients=$CLIENTS jobs=$JOBS"
echo "bench: configurations: ${configs[*]}"

restart_with plain
pgc_psql "$dir" -q -c 'CREATE DATABASE bench'
t0=$SECONDS
psql_b -q <<SQL
CREATE TABLE customers (
    id        integer NOT NULL,
    name      text NOT NULL,
    phone     text NOT NULL,
    id_number text NOT NULL,
    address   text NOT NULL
);
INSERT INTO customers
SELECT i,
       'Customer ' || i,
       '138' || lpad(i::text, 8, '0'),
       '450102' || lpad((i % 100000000)::text, 8, '0') || lpad((i % 10000)::text, 4, '0'),
       (i % 997) || ' Minzu Avenue, Nanning'
FROM generate_series(1, $ROWS) AS i;
ALTER TABLE customers ADD PRIMARY KEY (id);
VACUUM ANALYZE customers;
CREATE EXTENSION pg_prewarm;
-- pgaudit object auditing: reads of what role auditor may read are logged.
CREATE ROLE auditor NOLOGIN;
GRANT SELECT (name, phone) ON customers TO auditor;
SQL
echo "bench: loaded $ROWS rows in $((SECONDS - t0)) s"

if [[ " ${configs[*]} " == *" pii_audit "* || " ${configs[*]} " == *" subjects "* ]]; then
    # The labels need the provider, so the extension is created while it is preloaded. In the
    # other configurations the labels just sit in the catalog.
    restart_with pii_audit
    psql_b -q <<'SQL'
CREATE EXTENSION pii_audit;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
SQL
fi

script="$dir/lookup.sql"
cat >"$script" <<EOF
\\set id random(1, $ROWS)
SELECT name, phone FROM customers WHERE id = :id;
EOF

# run_pgbench SECONDS: prints "TPS TRANSACTIONS"
run_pgbench() {
    local out
    out=$("$bindir/pgbench" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$1" -f "$script" \
        -h "$dir/sock" -p "$(pgc_port "$dir")" -U postgres bench 2>&1) || {
        echo "$out" >&2
        echo "bench: pgbench failed" >&2
        return 1
    }
    awk '/^tps = / { tps = $3 } /^number of transactions actually processed:/ { n = $6 }
         END { if (tps == "" || n == "") exit 1; print tps, n }' <<<"$out" || {
        echo "$out" >&2
        echo "bench: cannot read pgbench's output" >&2
        return 1
    }
}

failures=0
declare -A tps copy_s
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${configs[@]}"; do
        restart_with "$c"
        case "$(base_of "$c")" in
            pii_audit) psql_b -q -c "SECURITY LABEL FOR pii ON COLUMN customers.id IS NULL" ;;
            subjects) psql_b -q -c "SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key'" ;;
        esac
        psql_b -q -At -c "SELECT pg_prewarm('customers'), pg_prewarm('customers_pkey')" >/dev/null
        log_start=$(stat -c %s "$dir/server.log")
        run_pgbench "$WARMUP" >/dev/null
        result=$(run_pgbench "$DURATION")
        read -r t n <<<"$result"
        tps[$c,$r]=$t
        # One bulk export per round: COPY of the whole table, as pg_dump or a thief would.
        copy_start=$(date +%s.%N)
        psql_b -q -c "COPY customers TO '/dev/null'"
        copy_s[$c,$r]=$(awk -v a="$copy_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        printf 'round %d  %-10s tps=%10.1f  transactions=%s  copy=%ss\n' "$r" "$c" "$t" "$n" "${copy_s[$c,$r]}"
        case "$(base_of "$c")" in
            pii_audit | subjects)
                psql_b -x -c 'SELECT * FROM pii_audit.status' | sed 's/^/    /'
                sleep 1  # the worker stores the COPY's event within flush_interval
                last=$(psql_b -At -c "SELECT row_count || ' rows, ' || coalesce(subject_count::text, 'no') || ' subjects'
                    FROM pii_audit.events WHERE command = 'COPY' ORDER BY event_id DESC LIMIT 1")
                echo "    trail: the round's COPY read $last"
                dropped=$(psql_b -At -c "SELECT coalesce(sum(value::numeric), 0)
                    FROM pii_audit.status s, jsonb_each_text(to_jsonb(s))
                    WHERE key LIKE '%dropped%' AND value ~ '^[0-9]+$'")
                if [[ "$dropped" != 0 ]]; then
                    echo "    ERROR: pii_audit dropped $dropped events" >&2
                    failures=$((failures + 1))
                fi
                ;;
            pgaudit)
                pgc_stop "$dir"
                audited=$(tail -c +"$((log_start + 1))" "$dir/server.log" | grep -c 'AUDIT: OBJECT,' || true)
                echo "    pgaudit logged $audited object-audit lines (warm-up and round)"
                if ((audited < n)); then
                    echo "    ERROR: pgaudit logged fewer lines than the round's $n transactions" >&2
                    failures=$((failures + 1))
                fi
                # Keep the log small: drop the audit lines, keep everything else.
                grep -v 'AUDIT: ' "$dir/server.log" >"$dir/server.log.tmp" || true
                cat "$dir/server.log.tmp" >"$dir/server.log"
                rm -f "$dir/server.log.tmp"
                ;;
        esac
    done
done
pgc_stop "$dir"

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
printf '%-8s' round
for c in "${configs[@]}"; do printf ' %12s' "$c"; done
echo
for ((r = 1; r <= ROUNDS; r++)); do
    printf '%-8s' "$r"
    for c in "${configs[@]}"; do printf ' %12.1f' "${tps[$c,$r]}"; done
    echo
done
printf '%-8s' median
for c in "${configs[@]}"; do
    vals=""
    for ((r = 1; r <= ROUNDS; r++)); do vals+="${tps[$c,$r]} "; done
    printf ' %12.1f' "$(median <<<"$vals")"
done
echo

summary="ratio"
if [[ " ${configs[*]} " == *" plain "* ]]; then
    for c in "${configs[@]}"; do
        [[ "$c" == plain ]] && continue
        ratios=""
        for ((r = 1; r <= ROUNDS; r++)); do
            ratios+="$(awk -v a="${tps[$c,$r]}" -v b="${tps[plain,$r]}" 'BEGIN { printf "%.6f", a / b }') "
        done
        summary+=" $c/plain=$(median <<<"$ratios" | awk '{ printf "%.3f", $1 }')"
    done
fi
echo
echo "$summary"

copy_summary="copy seconds (median):"
for c in "${configs[@]}"; do
    vals=""
    for ((r = 1; r <= ROUNDS; r++)); do vals+="${copy_s[$c,$r]} "; done
    copy_summary+=" $c=$(median <<<"$vals")"
done
echo "$copy_summary"

if ((failures)); then
    echo "bench: $failures check(s) failed, see above" >&2
    exit 1
fi
