#!/usr/bin/env bash
# shipper.sh: pii-audit-export against real receivers (rsyslog over TCP, TLS, RELP and UDP, and a
# file), started here, with a throwaway cluster under labelled lookups:
#   1. refusals: bad options (exit 2), an unreachable database, a database without the
#      extension, a role without pii_audit_siem, a damaged checkpoint (exit 1), each with a
#      message that says what to do;
#   2. under 8 pgbench clients of labelled lookups, four shippers run at once (file with
#      rotation and alerts; tcp json; tls cef; relp rfc5424) while rsyslog is restarted twice
#      and every shipper is killed with SIGKILL once and started again. Afterwards:
#        - the file holds every event and alert exactly once, in order (its checkpoint and its
#          contents agree);
#        - RELP, TCP and TLS receivers hold every event, in order, with no gap; what is sent
#          twice is a replay of what was not yet confirmed (counted, and for RELP bounded);
#        - every received line is checked field by field: the syslog header rsyslog parsed
#          (PRI, host, APP-NAME, MSGID, structured data) and the payload, byte for byte, against
#          pii_audit.export() of the same event;
#      and pii_audit.export_checkpoint() knows each shipper's position, if it exists;
#   3. the database restarts under a running shipper: it reconnects, and the file still holds
#      every event exactly once;
#   4. UDP, once: every event arrives (nothing is lost on a quiet loopback).
# Needs rsyslog, rsyslog-relp, rsyslog-openssl and openssl (scripts/install-deps.sh).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

bindir=$(pgc__bindir)
shipper="$bindir/pii-audit-export"
rsyslogd=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
for need in "$shipper" "$rsyslogd" "$(command -v openssl || true)"; do
    if [[ ! -x "$need" ]]; then
        echo "shipper.sh: missing ${need:-openssl}; run scripts/install-deps.sh and install the build" >&2
        exit 1
    fi
done

siem_workdir ship
declare -A ship_pid=()
rs_pid=
bench_pid=
cleanup() {
    local p
    for p in "${ship_pid[@]}" $rs_pid $bench_pid; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((failures > 0)); then
        for p in "$work"/*.err "$work"/rs/rsyslogd.out; do
            [[ -s "$p" ]] && { echo "---- tail of $p"; tail -n 15 "$p"; }
        done
    fi
    siem_remove SHIP_KEEP
}
trap cleanup EXIT

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50" \
    "max_connections = 50" >/dev/null
pgc_start "$dir" >/dev/null
sock=$(pgc_sockdir "$dir")
port=$(pgc_port "$dir")
q -d postgres <<'SQL'
CREATE EXTENSION pii_audit;
CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT g, 'Customer ' || g, '138' || lpad(g::text, 8, '0')
FROM generate_series(1, 10000) g;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone, subject_key';
CREATE ROLE siem LOGIN IN ROLE pii_audit_siem;
CREATE ROLE nobody LOGIN;
CREATE DATABASE elsewhere;
SQL
conn="host=$sock port=$port user=siem dbname=postgres"

# ---- 1. Refusals -------------------------------------------------------------------------
refused() {  # refused NAME EXPECTED-STATUS NEEDLE ARGS...
    local name=$1 status=$2 needle=$3 out rc=0
    shift 3
    out=$(timeout 60 "$shipper" "$@" 2>&1 >/dev/null) || rc=$?
    check "$name: exit status" "$status" "$rc"
    contains "$name: says why" "$needle" "$out"
}
refused "bad format" 2 "is not one of: json, ocsf, cef, leef, rfc5424" -d "$conn" -o stdout --format xml
refused "unknown destination" 2 "tcp://HOST:PORT" -d "$conn" -o kafka://h:1
refused "no checkpoint for a receiver" 2 "--checkpoint FILE is required" -d "$conn" -o relp://127.0.0.1:1
refused "bad batch" 2 "--batch must be an integer from 1 to 1000000" -d "$conn" -o stdout --batch 0
refused "tls without a CA" 2 "needs --tls-ca" -d "$conn" -o tls://127.0.0.1:1 --checkpoint "$work/x"
refused "unreachable database" 1 "cannot connect to the audit database" \
    -d "host=$work/nowhere port=1 user=siem" -o stdout --once
refused "no extension" 1 "has no pii_audit extension" \
    -d "host=$sock port=$port user=siem dbname=elsewhere" -o stdout --once
refused "missing role" 1 "GRANT pii_audit_siem TO \"nobody\"" \
    -d "host=$sock port=$port user=nobody dbname=postgres" -o stdout --once
printf 'pii-audit-export checkpoint 1\nevent_id twelve\n' >"$work/damaged.cp"
refused "damaged checkpoint" 1 "is damaged" -d "$conn" -o "file:$work/x.log" --checkpoint "$work/damaged.cp" --once
check "refusals: nothing written" "no" "$([[ -e "$work/x.log" ]] && echo yes || echo no)"

# ---- 2. Receivers --------------------------------------------------------------------------
mkdir -p "$work/rs/work" "$work/out"
(
    cd "$work/rs"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj "/CN=pii_audit test CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile san.ext 2>/dev/null
)
ports=()
while ((${#ports[@]} < 4)); do
    p=$(pgc_free_port)
    [[ " ${ports[*]} " == *" $p "* || $p == "$port" ]] || ports+=("$p")
done
tcp_port=${ports[0]} tls_port=${ports[1]} relp_port=${ports[2]} udp_port=${ports[3]}
# Fields rsyslog parsed, then the message as received. Control characters are kept as they are
# (LEEF separates with tabs), and the queue is drained, not dropped, when rsyslog stops: what it
# acknowledged must reach the file.
cat >"$work/rs/rsyslog.conf" <<EOF
global(workDirectory="$work/rs/work" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="$work/rs/ca.pem"
       defaultNetstreamDriverCertFile="$work/rs/server.pem"
       defaultNetstreamDriverKeyFile="$work/rs/server.key")
main_queue(queue.timeoutShutdown="30000" queue.timeoutActionCompletion="30000")
module(load="imtcp")
module(load="imudp")
module(load="imrelp")
template(name="fields" type="string"
         string="%pri%\t%hostname%\t%app-name%\t%msgid%\t%structured-data%\t%rawmsg%\n")
ruleset(name="tcp") { action(type="omfile" file="$work/rs/tcp.log" template="fields") }
ruleset(name="tls") { action(type="omfile" file="$work/rs/tls.log" template="fields") }
ruleset(name="relp") { action(type="omfile" file="$work/rs/relp.log" template="fields") }
ruleset(name="udp") { action(type="omfile" file="$work/rs/udp.log" template="fields") }
input(type="imtcp" port="$tcp_port" address="127.0.0.1" ruleset="tcp")
input(type="imtcp" port="$tls_port" address="127.0.0.1" ruleset="tls" streamDriver.name="ossl"
      streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imrelp" port="$relp_port" address="127.0.0.1" ruleset="relp")
input(type="imudp" port="$udp_port" address="127.0.0.1" ruleset="udp" rcvBufSize="4m")
EOF
rs_start() {
    "$rsyslogd" -n -f "$work/rs/rsyslog.conf" -i "$work/rs/rsyslogd.pid" >>"$work/rs/rsyslogd.out" 2>&1 &
    rs_pid=$!
    local deadline=$((SECONDS + 30)) p
    for p in $tcp_port $tls_port $relp_port; do
        until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
            ((SECONDS < deadline)) || { echo "rsyslog did not listen on $p" >&2; return 1; }
            sleep 0.1
        done
    done
}
rs_stop() {
    kill -TERM "$rs_pid"
    wait "$rs_pid" 2>/dev/null || true
    rs_pid=
}
rs_start

ship_start() {  # ship_start NAME ARGS...
    local name=$1
    shift
    "$shipper" -d "$conn" --checkpoint "$work/$name.cp" --name "ship-$name" "$@" >>"$work/$name.out" 2>>"$work/$name.err" &
    ship_pid[$name]=$!
}
declare -A ship_args=(
    [file]="-o file:$work/out/trail.log --file-max-size 256kB --file-keep 1000 --format json --alerts --progress 5"
    [tcp]="-o tcp://127.0.0.1:$tcp_port --format json --progress 5"
    [tls]="-o tls://127.0.0.1:$tls_port --tls-ca $work/rs/ca.pem --format cef --progress 5"
    [relp]="-o relp://127.0.0.1:$relp_port --format rfc5424"
)
names=(file tcp tls relp)
for n in "${names[@]}"; do
    # shellcheck disable=SC2086 # the arguments are split on purpose
    ship_start "$n" ${ship_args[$n]}
done

# 8 clients of labelled lookups, at a steady rate the 2-core CI machine sustains.
cat >"$work/lookup.sql" <<'EOF'
\set id random(1, 10000)
SELECT name, phone FROM customers WHERE id = :id;
EOF
DURATION=${SHIP_TEST_SECONDS:-30}
"$bindir/pgbench" -n -M prepared -c 8 -j 2 -R 1500 -T "$DURATION" -f "$work/lookup.sql" \
    -h "$sock" -p "$port" -U postgres postgres >"$work/pgbench.out" 2>&1 &
bench_pid=$!
alert_sql="INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity, explanation, evidence)
VALUES (now(), 'clerk-' || (SELECT count(*) FROM pii_audit.alerts), 'counter', 'bulk_reading', 75, 'high', 'test: 5,000 rows in one statement', '{1}')"
sleep $((DURATION / 5))
rs_stop
q -d postgres -c "$alert_sql" >/dev/null
sleep 1
rs_start
sleep $((DURATION / 5))
for n in "${names[@]}"; do kill -9 "${ship_pid[$n]}"; done
for n in "${names[@]}"; do wait "${ship_pid[$n]}" 2>/dev/null || true; done
q -d postgres -c "UPDATE pii_audit.alerts SET status = 'acknowledged', note = 'asked the branch' WHERE alert_id = 1" >/dev/null
sleep 1
for n in "${names[@]}"; do
    # shellcheck disable=SC2086
    ship_start "$n" ${ship_args[$n]}
done
sleep $((DURATION / 5))
rs_stop
sleep 2
rs_start
q -d postgres -c "$alert_sql" >/dev/null
wait "$bench_pid" || { cat "$work/pgbench.out"; check "pgbench ran" 0 1; }
bench_pid=
check "pgbench: 8 clients" "8" "$(awk '/^number of clients:/ { print $4 }' "$work/pgbench.out")"

# Every event stored so far must reach every receiver; then the shippers are stopped.
wait_until postgres "SELECT events_enqueued = events_persisted FROM pii_audit.status" 120 || true
target=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events')
target_alerts=$(q -d postgres -c 'SELECT max(alert_event_id) FROM pii_audit.alert_events')
cp_event() { awk '$1 == "event_id" { print $2 }' "$work/$1.cp" 2>/dev/null || echo 0; }
cp_alert() { awk '$1 == "alert_id" { print $2 }' "$work/$1.cp" 2>/dev/null || echo 0; }
deadline=$((SECONDS + 300))
for n in "${names[@]}"; do
    until (($(cp_event "$n") >= target)); do
        if ((SECONDS > deadline)); then
            check "$n: caught up with event $target" "$target" "$(cp_event "$n")"
            break
        fi
        sleep 0.5
    done
done
until (($(cp_alert file) >= target_alerts)) || ((SECONDS > deadline)); do sleep 0.5; done
# The relp shipper runs without --progress: SIGUSR1 alone makes it report.
kill -USR1 "${ship_pid[relp]}"
sleep 1
contains "SIGUSR1: progress with events/s" "/s over the last" "$(grep 'progress:' "$work/relp.err" | tail -n 1)"
contains "SIGUSR1: progress with the lag" "(lag 0 events)" "$(grep 'progress:' "$work/relp.err" | tail -n 1)"
for n in "${names[@]}"; do kill -TERM "${ship_pid[$n]}"; done
for n in "${names[@]}"; do
    rc=0
    wait "${ship_pid[$n]}" || rc=$?
    check "$n: SIGTERM stops it cleanly" 0 "$rc"
done
ship_pid=()
rs_stop
echo "# trail: $target events, $target_alerts alert events"

# What each destination should hold: export() of the same events, in the shipper's format.
expected() {  # expected FORMAT LAST-EVENT-ID
    q -d postgres -U siem -c "SELECT line FROM pii_audit.export(0, 1000000, '$1') WHERE event_id <= $2 ORDER BY event_id"
}
# sequence CHECK-NAME EXPECTED-FILE RECEIVED-PAYLOADS-FILE: prints "events dups replays" after
# checking that the payloads are lines of the expected file, that all of them arrived, and
# that they came in order, where a replay (going back to an earlier event) must continue
# without a gap until it reaches the newest event sent before it.
sequence() {
    awk -v name="$1" '
        NR == FNR { index_of[$0] = FNR; n = FNR; next }
        {
            i = index_of[$0]
            if (i == "") { unknown++; if (unknown <= 3) print "# " name ": unknown line: " substr($0, 1, 200) > "/dev/stderr"; next }
            if (i != prev + 1) {
                if (i <= top) replays++
                else { gaps++; if (gaps <= 3) print "# " name ": gap or disorder: " prev " then " i > "/dev/stderr" }
            }
            if (seen[i]++) dups++
            if (i > top) top = i
            prev = i
        }
        END {
            for (k = 1; k <= n; k++) if (!(k in seen)) { missing++; if (missing <= 3) print "# " name ": missing line " k > "/dev/stderr" }
            printf "%d %d %d %d %d %d\n", n, dups, replays, missing + 0, gaps + 0, unknown + 0
        }' "$2" "$3"
}

# The file: exactly once, events and alerts, rotated pieces in order.
last_file=$(cp_event file)
expected json "$last_file" >"$work/expect.file"
last_alert=$(cp_alert file)
q -d postgres -U siem -c "SELECT line FROM pii_audit.export_alerts(0, 1000000, 'json') WHERE alert_event_id <= $last_alert ORDER BY alert_event_id" >"$work/expect.alerts"
pieces=$(ls "$work/out" | awk -F. '{ print ($NF ~ /^[0-9]+$/ ? $NF : 0), $0 }' | sort -k1,1nr | awk '{ print $2 }')
(cd "$work/out" && cat $pieces) >"$work/got.all"
# Digest records (--digest-every, default 10000): export_digests()' lines, each after the last
# event of its batch; the rest must be the events and alerts.
q -d postgres -U siem -c "SELECT line FROM pii_audit.export_digests(0, 10000, 'json') WHERE event_id <= $last_file ORDER BY event_id" >"$work/expect.digests"
grep -F '"dataset" : "pii_audit.digests"' "$work/got.all" >"$work/got.digests" || true
grep -vF '"dataset" : "pii_audit.digests"' "$work/got.all" >"$work/got.file" || true
check "file: the digest records of export_digests(), each once, in order ($(wc -l <"$work/expect.digests"))" \
    "ok yes" "$(cmp -s "$work/expect.digests" "$work/got.digests" && echo ok || echo differs) $( (($(wc -l <"$work/got.digests") >= 2)) && echo yes || echo no)"
check "file: rotated into several files" "yes" "$( (($(echo "$pieces" | wc -l) > 2)) && echo yes || echo no)"
grep -Fxf "$work/expect.alerts" "$work/got.file" >"$work/got.file.alerts" || true
grep -vFxf "$work/expect.alerts" "$work/got.file" >"$work/got.file.events" || true
check "file: every event exactly once, in order" "ok" \
    "$(cmp -s "$work/expect.file" "$work/got.file.events" && echo ok || echo "differs: $(sequence file "$work/expect.file" "$work/got.file.events")")"
# (Three made by the test: raised, acknowledged, raised; the scorer may add its own.)
check "file: every alert event exactly once, in order" "ok yes" \
    "$(cmp -s "$work/expect.alerts" "$work/got.file.alerts" && echo ok || echo differs) $( (($(wc -l <"$work/got.file.alerts") >= 3)) && echo yes || echo no)"
check "file: the checkpoint names the last alert event" "yes" "$( ((last_alert >= target_alerts && target_alerts >= 3)) && echo yes || echo "no: $last_alert < $target_alerts")"
check "file: the checkpoint's length is the file's" "$(stat -c %s "$work/out/trail.log")" \
    "$(awk '$1 == "file" { print $4 }' "$work/file.cp")"

# Received syslog lines: fields rsyslog parsed, then the payload. For json and cef the shipper
# wraps the line in an RFC 5424 header; an rfc5424 line travels as it is.
host=$(hostname)
receiver_check() {  # receiver_check NAME FORMAT [AFTER-EVENT-ID]
    local name=$1 format=$2 after=${3:-0} last bad
    last=$(cp_event "$name")
    # Digest records (MSGID digest, $4 of the fields) are counted, then left out.
    awk -F'\t' '$4 == "digest"' "$work/rs/$name.log" >"$work/rs/$name.digests"
    awk -F'\t' '$4 != "digest"' "$work/rs/$name.log" >"$work/rs/$name.events"
    if [[ $name != udp ]]; then
        check "$name: digest records in the stream" "yes" "$( (($(wc -l <"$work/rs/$name.digests") >= 2)) && echo yes || echo no)"
    fi
    expected "$format" "$last" | tail -n +$((after + 1)) >"$work/expect.$name"
    if [[ $format == rfc5424 ]]; then
        # PRI 110 (facility 13, severity 6) or as the line says; APP-NAME pii_audit; MSGID the
        # event kind; the structured data carries the event_id, and the raw message is the line.
        bad=$(awk -F'\t' -v host="$host" '
            { raw = $6; for (k = 7; k <= NF; k++) raw = raw "\t" $k
              id = $5; sub(/.*event_id="/, "", id); sub(/".*/, "", id)
              if ($3 != "pii_audit" || $2 != host || $5 !~ /^\[pii_audit@32473 event_id="[0-9]+"/ ||
                  index(raw, "<" $1 ">1 ") != 1 || index(raw, " " $4 " [pii_audit@32473 event_id=\"" id "\"") == 0) { n++; if (n <= 3) print "# bad fields: " substr($0, 1, 300) > "/dev/stderr" }
              print raw > "/dev/stdout" }
            END { print n + 0 > "'"$work/$name.bad"'" }' "$work/rs/$name.events" >"$work/got.$name")
    else
        awk -F'\t' -v host="$host" '
            { raw = $6; for (k = 7; k <= NF; k++) raw = raw "\t" $k
              prefix = "<110>1 "
              ok = $1 == "110" && $2 == host && $3 == "pii_audit" && $4 == "event" && $5 == "-" && index(raw, prefix) == 1
              # <110>1 TIMESTAMP HOST pii_audit - event - LINE
              line = raw; sub(/^<110>1 [0-9T:.-]+Z [^ ]+ pii_audit - event - /, "", line)
              if (!ok || line == raw) { n++; if (n <= 3) print "# bad fields: " substr($0, 1, 300) > "/dev/stderr" }
              print line }
            END { print n + 0 > "'"$work/$name.bad"'" }' "$work/rs/$name.events" >"$work/got.$name"
    fi
    check "$name: syslog fields as sent" 0 "$(cat "$work/$name.bad")"
    read -r n dups replays missing gaps unknown <<<"$(sequence "$name" "$work/expect.$name" "$work/got.$name")"
    check "$name: every event, in order, no gap ($n events, $dups sent twice in $replays replays)" \
        "0 0 0" "$missing $gaps $unknown"
    echo "# $name: $n events, $dups duplicates in $replays replays"
    eval "${name}_dups=$dups ${name}_replays=$replays"
}
receiver_check tcp json
receiver_check tls cef
receiver_check relp rfc5424
# RELP: the receiver answers every frame; only what it took but had not answered when a session
# broke (at most 1,024 frames, the shipper's window, per receiver restart) or what was not yet
# checkpointed when the shipper was killed (at most one batch of 10,000) is sent twice.
check "relp: duplicates only from the two restarts and the kill" "yes" \
    "$( ((relp_dups <= 2 * 1024 + 10000 && relp_replays <= 3)) && echo yes || echo "no: $relp_dups in $relp_replays replays")"

# The database knows each shipper's position, for retention.
if [[ $(q -d postgres -c "SELECT to_regprocedure('pii_audit.export_checkpoint(text,bigint)') IS NOT NULL") == t ]]; then
    for n in "${names[@]}"; do
        check "export_checkpoint: $n's position is registered" "$(cp_event "$n")" \
            "$(q -d postgres -c "SELECT delivered_event_id FROM pii_audit.export_checkpoints WHERE name = 'ship-$n'")"
    done
else
    echo "# pii_audit.export_checkpoint() does not exist in this build: not checked"
fi

# ---- 3. The database restarts under a running shipper ---------------------------------------
ship_start dbr -o "file:$work/dbr.log" --format json --poll-interval 1
q -d postgres -c 'SELECT count(*) FROM (SELECT name FROM customers WHERE id < 10) s' >/dev/null
# Connected first (it has delivered something): a shipper that cannot connect at its start exits,
# by design, and a restart right then made this phase fail now and then.
deadline=$((SECONDS + 60))
until (($(c=$(cp_event dbr); echo "${c:-0}") > 0)) || ((SECONDS > deadline)); do sleep 0.2; done
pgc_restart "$dir" >/dev/null
for i in 1 2 3; do q -d postgres -c "SELECT name FROM customers WHERE id = $i" >/dev/null; done
wait_until postgres "SELECT events_enqueued = events_persisted FROM pii_audit.status" 60 || true
target=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events')
deadline=$((SECONDS + 120))
until (($(cp_event dbr) >= target)) || ((SECONDS > deadline)); do sleep 0.5; done
check "database restart: the shipper is still running" "yes" "$(kill -0 "${ship_pid[dbr]}" 2>/dev/null && echo yes || echo no)"
contains "database restart: it said so and reconnected" "reconnecting" "$(cat "$work/dbr.err")"
kill -TERM "${ship_pid[dbr]}"
wait "${ship_pid[dbr]}" || true
ship_pid=()
expected json "$(cp_event dbr)" >"$work/expect.dbr"
grep -vF '"dataset" : "pii_audit.digests"' "$work/dbr.log" >"$work/dbr.events" || true
check "database restart: every event exactly once, in order ($(wc -l <"$work/expect.dbr") events)" "ok" \
    "$(cmp -s "$work/expect.dbr" "$work/dbr.events" && echo ok || echo "differs: $(sequence dbr "$work/expect.dbr" "$work/dbr.events")")"

# ---- 4. UDP --------------------------------------------------------------------------------
# The last 500 events, once: datagrams are not confirmed, so a burst of all of them could
# overflow the receiver's socket buffer (it gets 4 MB here); on a quiet loopback none is lost.
rs_start
rc=0
udp_after=$((target - 500))
timeout 120 "$shipper" -d "$conn" -o "udp://127.0.0.1:$udp_port" --checkpoint "$work/udp.cp" --format json --once \
    --start-after "$udp_after" 2>>"$work/udp.err" || rc=$?
check "udp: --once exits 0" 0 "$rc"
sleep 1
rs_stop
receiver_check udp json "$udp_after"

echo "# $passes passed, $failures failed"
((failures == 0))
