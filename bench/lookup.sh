#!/usr/bin/env bash
# lookup.sh: the speed benchmark. How much does auditing cost a point lookup of personal data?
#
# One throwaway PostgreSQL 15 cluster per configuration, each with a database holding
# customers(id, name, phone, id_number, address), ROWS (1,000,000) rows, and pgbench running
#     \set id random(1, ROWS)
#     SELECT name, phone FROM customers WHERE id = :id;
# with -M prepared, CLIENTS clients and JOBS threads. The configurations:
#   plain      shared_preload_libraries = ''           (PostgreSQL alone)
#   pii_audit  shared_preload_libraries = 'pii_audit'  (name and phone labelled; every lookup
#                                                       becomes an event stored in the trail)
#   subjects   shared_preload_libraries = 'pii_audit'  (as pii_audit, and id is also labelled
#                                                       subject_key: each event records whose
#                                                       row was read, as a keyed hash)
#   unchained  as pii_audit, but the trail's batches are not chained (the digests table
#              dropped, as with 0.2.0's SQL): what tamper evidence costs
#   pgaudit    shared_preload_libraries = 'pgaudit'    (object audit of the same read through
#                                                       pgaudit.role; one log line per lookup)
# All clusters are started once, warmed up (table and index prewarmed, WARMUP seconds of pgbench
# unmeasured) and stay up; the rounds then alternate between them, plain pii_audit subjects
# pgaudit, plain pii_audit ..., for ROUNDS rounds of DURATION seconds, each preceded by 2 s of
# unmeasured pgbench. A long-running server is what is compared: a server restarted before every
# round would charge each round with its new processes' first touches of shared memory (the
# trail's worker faults in every buffer it is given for the first minute or so after a start).
# It prints per-round TPS, the medians, and a parseable summary line
#     ratio pii_audit/plain=0.953 pgaudit/plain=0.861
# (each ratio is the median over rounds of that round's TPS divided by the same round's plain
# TPS). It exits non-zero if pii_audit reports dropped events or pgaudit logged too little.
#
# Environment: ROUNDS (5), DURATION (20), WARMUP (10), CLIENTS (2), JOBS (CLIENTS),
# ROWS (1000000), CONFIGS ("plain pii_audit subjects pgaudit"; pii_audit@2MB sets the queue
# size of that configuration), KEEP=1 keeps the clusters' directory.
# Two builds of pii_audit in one interleaved run: BASELINE_BINDIR names the bin directory of
# a second PostgreSQL 15 installation holding the other build (e.g. a copy of Debian's files
# with `DESTDIR=/opt/base cmake --install build` of the older commit over it; PostgreSQL finds
# its libraries relative to its binaries), and a configuration ending in :baseline runs there:
#     BASELINE_BINDIR=/opt/base/usr/lib/postgresql/15/bin \
#     CONFIGS="plain subjects subjects:baseline" bench/lookup.sh
# Its ratios are to the same round's plain, like the others'.
# The extension must be installed; if it is not, scripts/build.sh is run first.
# After each round's pgbench, COPY customers TO '/dev/null' (the whole table) is timed once, and
# the medians are printed on a line starting "copy seconds (median):". For pii_audit and
# subjects, the worker's CPU (utime + stime) per event it stored during the round's pgbench is
# printed per round and as medians ("worker CPU per stored event"): the storing cost of real
# lookups, whose groups are far larger than bench/trail.sh's loader makes them. For every
# configuration, the whole server's CPU (every process of the cluster, pgbench not included) per
# lookup of the round is printed too ("server CPU per lookup"): throughput on a shared 2-core
# machine moves with its neighbours, while the CPU a lookup costs the server moves much less, so
# the difference to plain is the clearest measure of what auditing costs.
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
BASELINE_BINDIR=${BASELINE_BINDIR:-}
# A configuration may carry a queue size: pii_audit@2MB is pii_audit with pii_audit.queue_size =
# '2MB' (likewise subjects@...), and a build: pii_audit:baseline (see above).
base_of() { local b=${1%%:*}; echo "${b%%@*}"; }
queue_of() { local b=${1%%:*}; if [[ "$b" == *@* ]]; then echo "${b#*@}"; fi; }
build_of() { if [[ "$1" == *:* ]]; then echo "${1#*:}"; fi; }
bindir_of() { if [[ -n "$(build_of "$1")" ]]; then echo "$BASELINE_BINDIR"; else echo "$bindir"; fi; }
pkglibdir_of() { "$(bindir_of "$1")/pg_config" --pkglibdir; }
# on CONFIG COMMAND...: runs a pgcluster command with that configuration's PostgreSQL.
on() { local c=$1; shift; PG_BINDIR=$(bindir_of "$c") "$@"; }
for c in "${configs[@]}"; do
    if [[ -n "$(queue_of "$c")" && ! "$(queue_of "$c")" =~ ^[0-9]+(kB|MB|GB)$ ]]; then
        echo "bench: bad queue size in '$c' (e.g. pii_audit@2MB)" >&2
        exit 2
    fi
    if [[ -n "$(build_of "$c")" ]]; then
        if [[ "$(build_of "$c")" != baseline ]]; then
            echo "bench: unknown build in '$c' (only :baseline)" >&2
            exit 2
        fi
        if [[ -z "$BASELINE_BINDIR" || ! -x "$BASELINE_BINDIR/postgres" ]]; then
            echo "bench: '$c' needs BASELINE_BINDIR, the bin directory of the baseline's PostgreSQL" >&2
            exit 2
        fi
    fi
    pkglibdir=$(pkglibdir_of "$c")
    case "$(base_of "$c")" in
        plain) ;;
        pii_audit | subjects | unchained)
            if [[ -n "$(build_of "$c")" && ! -f "$pkglibdir/pii_audit.so" ]]; then
                echo "bench: the baseline has no pii_audit.so in $pkglibdir" >&2
                exit 2
            elif [[ ! -f "$pkglibdir/pii_audit.so" ]]; then
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
chmod 755 "$dir"  # the clusters below it run as postgres
cluster_of() { local name=${1//@/_}; echo "$dir/${name//:/_}"; }
# shellcheck disable=SC2317 # called through the trap
cleanup() {
    trap '' PIPE
    local c
    for c in "${configs[@]}"; do thaw "$c"; done
    for c in "${configs[@]}"; do
        if ((KEEP)); then
            on "$c" pgc_stop "$(cluster_of "$c")" || true
        else
            on "$c" pgc_destroy "$(cluster_of "$c")" || true
        fi
    done
    if ((KEEP)); then echo "bench: clusters kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE

spl_for() {
    case "$(base_of "$1")" in
        plain) echo "" ;;
        subjects | unchained) echo "pii_audit" ;;
        *) base_of "$1" ;;
    esac
}

# Defaults plus shared_buffers big enough to hold the table. fsync stays on (pgcluster turns it
# off for tests): the pii_audit worker writes the trail, and that cost must be real. No
# per-statement logging (log_statement and log_min_duration_statement keep their defaults);
# only pgaudit, by design, writes one log line per audited lookup.
psql_c() { local c=$1; shift; on "$c" pgc_psql "$(cluster_of "$c")" -d bench "$@"; }

echo "bench: clusters in $dir; $ROWS rows; rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s clients=$CLIENTS jobs=$JOBS"
echo "bench: configurations: ${configs[*]}"

for c in "${configs[@]}"; do
    cdir=$(cluster_of "$c")
    on "$c" pgc_init "$cdir" auto \
        "fsync = on" \
        "shared_buffers = 512MB" \
        "min_wal_size = 1GB" \
        "pii_audit.database = 'bench'" \
        "pgaudit.role = 'auditor'"
    queue=$(queue_of "$c")
    on "$c" pgc_runtime_conf "$cdir" "shared_preload_libraries = '$(spl_for "$c")'" \
        ${queue:+"pii_audit.queue_size = '$queue'"}
    on "$c" pgc_start "$cdir"
    # The library this configuration's server really loaded (two builds may be compared).
    if [[ -n "$(spl_for "$c")" ]]; then
        lib="$(pkglibdir_of "$c")/$(spl_for "$c").so"
        if ! grep -qF "$(realpath "$lib")" "/proc/$(head -1 "$cdir/data/postmaster.pid")/maps"; then
            echo "bench: $c: the server did not load $lib" >&2
            exit 1
        fi
        echo "bench: $c: $lib ($(md5sum <"$lib" | cut -c1-12))"
    fi
    on "$c" pgc_psql "$cdir" -q -c 'CREATE DATABASE bench'
    t0=$SECONDS
    psql_c "$c" -q <<SQL
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
    case "$(base_of "$c")" in
        pii_audit | subjects | unchained)
            psql_c "$c" -q <<'SQL'
CREATE EXTENSION pii_audit;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
SQL
            ;;
    esac
    if [[ "$(base_of "$c")" == subjects ]]; then
        psql_c "$c" -q -c "SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key'"
    fi
    if [[ "$(base_of "$c")" == unchained ]]; then
        # As 0.2.0's SQL did: without the digests table the worker stores batches unchained.
        psql_c "$c" -q -c 'ALTER EXTENSION pii_audit DROP TABLE pii_audit.trail_digests' \
            -c 'DROP TABLE pii_audit.trail_digests'
    fi
    echo "bench: $c: loaded $ROWS rows in $((SECONDS - t0)) s"
done

script="$dir/lookup.sql"
cat >"$script" <<EOF
\\set id random(1, $ROWS)
SELECT name, phone FROM customers WHERE id = :id;
EOF

# run_pgbench CONFIG SECONDS: prints "TPS TRANSACTIONS"
run_pgbench() {
    local out cdir
    cdir=$(cluster_of "$1")
    out=$("$bindir/pgbench" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$2" -f "$script" \
        -h "$cdir/sock" -p "$(pgc_port "$cdir")" -U postgres bench 2>&1) || {
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

# While one configuration runs, the other clusters are frozen (SIGSTOP to the postmaster and its
# children; they keep their memory): their background work (autovacuum of a growing trail, a
# worker catching up, checkpoints) then runs in their own time slices and cannot slow another
# configuration's round, and nobody is restarted.
cluster_pids() {
    local pm
    pm=$(head -1 "$(cluster_of "$1")/data/postmaster.pid" 2>/dev/null) || return 0
    [[ -n "$pm" ]] || return 0
    echo "$pm" $(pgrep -P "$pm" || true)
}
freeze() { local p; for p in $(cluster_pids "$1"); do kill -STOP "$p" 2>/dev/null || true; done; }
thaw() { local p; for p in $(cluster_pids "$1"); do kill -CONT "$p" 2>/dev/null || true; done; }
run_alone() {
    local o
    for o in "${configs[@]}"; do [[ "$o" == "$1" ]] || freeze "$o"; done
    thaw "$1"
}
thaw_all() { local o; for o in "${configs[@]}"; do thaw "$o"; done; }

# Warm every cluster once: buffers, catalog caches, the trail's first pages, and WAL files. A
# server that has been running writes its WAL into segment files that checkpoints recycled; a
# fresh cluster creates each 16 MB file and fills it with zeros first, a cost a long-running
# server does not pay (measured: 14% of the trail worker's CPU in a fresh cluster). So 64
# segments are created and checkpointed away here, and min_wal_size = 1GB keeps them for reuse.
for c in "${configs[@]}"; do
    run_alone "$c"
    psql_c "$c" -q -At -c "SELECT pg_prewarm('customers'), pg_prewarm('customers_pkey')" >/dev/null
    psql_c "$c" -q -At >/dev/null <<'SQL'
DO $$
BEGIN
    FOR i IN 1..64 LOOP
        PERFORM pg_logical_emit_message(false, 'bench', 'next WAL segment');
        PERFORM pg_switch_wal();
    END LOOP;
END
$$;
CHECKPOINT;
SQL
    run_pgbench "$c" "$WARMUP" >/dev/null
done

failures=0
declare -A tps copy_s worker_us server_us
worker_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # clock ticks, user + system
# The whole server's CPU so far, in clock ticks: the postmaster's own and that of its children
# that have exited (backends of finished connections), plus its live children's.
server_cpu() {
    local pm pids
    pm=$(head -1 "$(cluster_of "$1")/data/postmaster.pid")
    pids=$(pgrep -P "$pm" | tr '\n' ' ')
    { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
      for p in $pids; do awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true; done
    } | awk '{ s += $1 } END { print s }'
}
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${configs[@]}"; do
        cdir=$(cluster_of "$c")
        run_alone "$c"
        run_pgbench "$c" 2 >/dev/null  # the clients' own warm-up after the other clusters ran
        log_start=$(stat -c %s "$cdir/server.log")
        sleep 0.5  # the warm-up's backends exit and are counted in the postmaster's children
        server0=$(server_cpu "$c")
        is_audited=0
        case "$(base_of "$c")" in pii_audit | subjects | unchained) is_audited=1 ;; esac
        if ((is_audited)); then
            worker_pid=$(psql_c "$c" -At -c 'SELECT worker_pid FROM pii_audit.status')
            cpu0=$(worker_cpu "$worker_pid")
            stored0=$(psql_c "$c" -At -c 'SELECT events_persisted FROM pii_audit.status')
        fi
        result=$(run_pgbench "$c" "$DURATION")
        read -r t n <<<"$result"
        tps[$c,$r]=$t
        if ((is_audited)); then
            # The worker's CPU per event stored in the round: once the queue is empty (at most 10 s).
            stored1=$(psql_c "$c" -At -c 'SELECT events_persisted FROM pii_audit.status')
            for _ in $(seq 1 50); do
                sleep 0.2
                now=$(psql_c "$c" -At -c 'SELECT events_persisted FROM pii_audit.status')
                [[ "$now" == "$stored1" ]] && break
                stored1=$now
            done
            cpu1=$(worker_cpu "$worker_pid")
            worker_us[$c,$r]=$(awk -v c=$((cpu1 - cpu0)) -v t="$(getconf CLK_TCK)" -v n=$((stored1 - stored0)) \
                'BEGIN { if (n > 0) printf "%.3f", c / t * 1e6 / n; else print "nan" }')
        else
            sleep 0.5
        fi
        # The server's CPU per lookup over the round: backends, and for pii_audit the worker
        # storing the round's events and what upkeep ran meanwhile (not pgbench's own).
        server1=$(server_cpu "$c")
        server_us[$c,$r]=$(awk -v c=$((server1 - server0)) -v t="$(getconf CLK_TCK)" -v n="$n" \
            'BEGIN { printf "%.2f", c / t * 1e6 / n }')
        # One bulk export per round: COPY of the whole table, as pg_dump or a thief would.
        copy_start=$(date +%s.%N)
        psql_c "$c" -q -c "COPY customers TO '/dev/null'"
        copy_s[$c,$r]=$(awk -v a="$copy_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        printf 'round %d  %-10s tps=%10.1f  transactions=%s  server=%sus/lookup  copy=%ss%s\n' "$r" "$c" "$t" "$n" \
            "${server_us[$c,$r]}" "${copy_s[$c,$r]}" \
            "$( ((is_audited)) && echo "  worker=${worker_us[$c,$r]}us/event")"
        case "$(base_of "$c")" in
            pii_audit | subjects | unchained)
                psql_c "$c" -x -c 'SELECT * FROM pii_audit.status' | sed 's/^/    /'
                sleep 1  # the worker stores the COPY's event within flush_interval
                last=$(psql_c "$c" -At -c "SELECT row_count || ' rows, ' || coalesce(subject_count::text, 'no') || ' subjects'
                    FROM pii_audit.events WHERE command = 'COPY' ORDER BY event_id DESC LIMIT 1")
                echo "    trail: the round's COPY read $last"
                dropped=$(psql_c "$c" -At -c "SELECT coalesce(sum(value::numeric), 0)
                    FROM pii_audit.status s, jsonb_each_text(to_jsonb(s))
                    WHERE key LIKE '%dropped%' AND value ~ '^[0-9]+$'")
                if [[ "$dropped" != 0 ]]; then
                    echo "    ERROR: pii_audit dropped $dropped events" >&2
                    failures=$((failures + 1))
                fi
                ;;
            pgaudit)
                audited=$(tail -c +"$((log_start + 1))" "$cdir/server.log" | grep -c 'AUDIT: OBJECT,' || true)
                echo "    pgaudit logged $audited object-audit lines during the round"
                if ((audited < n)); then
                    echo "    ERROR: pgaudit logged fewer lines than the round's $n transactions" >&2
                    failures=$((failures + 1))
                fi
                # Keep the disk from filling: set aside everything but the audit lines, then
                # empty the log (the server appends to it, so truncating it is safe).
                grep -v 'AUDIT: ' "$cdir/server.log" >>"$cdir/server.kept.log" || true
                : >"$cdir/server.log"
                ;;
        esac
    done
done
thaw_all
for c in "${configs[@]}"; do on "$c" pgc_stop "$(cluster_of "$c")"; done

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

# medians LABEL ARRAY [audited]: each configuration's median over the rounds of ARRAY (indexed
# "configuration,round") on one line; with audited, the pii_audit configurations only.
medians() {
    local -n per_round=$2
    local line="$1 (median):" c r vals
    for c in "${configs[@]}"; do
        if [[ "${3:-}" == audited ]]; then
            case "$(base_of "$c")" in pii_audit | subjects | unchained) ;; *) continue ;; esac
        fi
        vals=""
        for ((r = 1; r <= ROUNDS; r++)); do vals+="${per_round[$c,$r]} "; done
        line+=" $c=$(median <<<"$vals")"
    done
    echo "$line"
}
medians "copy seconds" copy_s
medians "server CPU per lookup, us" server_us
medians "worker CPU per stored event, us" worker_us audited

if ((failures)); then
    echo "bench: $failures check(s) failed, see above" >&2
    exit 1
fi
