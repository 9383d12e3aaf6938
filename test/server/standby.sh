#!/usr/bin/env bash
# standby.sh: reads on a hot standby reach the primary's trail. A primary and a streaming
# replica made from it by pg_basebackup, both started here (Unix sockets only):
#   1. a read on the standby is in the primary's trail within 2 s, named with the standby's
#      server_name and the subject it read; the primary's own reads carry its name; the views
#      and the export show the name
#   2. the primary stopped for 10 s while 4 clients (pgbench) read on the standby, then started:
#      every read arrives exactly once, and in order
#   3. bad input: a connection string that reaches nothing, a role that may not log in, a queue
#      (the standby's spool) that fills while the primary is away: the reason is in
#      pii_audit.status on the standby, nothing is lost without a gap row naming the standby,
#      and everything else arrives once the cause is gone
#   3c. the standby's operating system crashes (simulated): its queue file is not trusted, and
#      the primary's trail gets a gap row of that standby of unknown size; a new standby's first
#      start (its queue file a copy of the primary's) adds none
#   4. a standby whose subject key differs is refused, with the reason
#   5. the primary stopped and the standby promoted in the middle of a pgbench run: every read
#      of the run is in the promoted server's trail exactly once
#   6. failover without synchronous replication: a standby keeps a batch's queue space until it
#      has replayed the primary's commit of it (with replay paused it waits); the primary killed
#      after keeping a batch whose commit never reached the standby, the standby promoted: the
#      read is in the promoted server's trail, once; and so is the read of another standby,
#      whose commit the promoted one never received either: that standby still holds it, and
#      hands it in again to the new primary; drops the old primary recorded for the promoted
#      standby are not recorded again
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"
bindir=$(pgc__bindir)

top=$(mktemp -d /tmp/pii_audit_standby.XXXXXX)
chmod 755 "$top"
primary=$top/p
replica=$top/r
other=$top/k
cleanup() {
    for d in "$top/g" "$top/f" "$top/c" "$other" "$replica" "$primary"; do pgc_destroy "$d" >/dev/null 2>&1 || true; done
    rm -rf "$top"
}
trap cleanup EXIT

# q runs against $dir; these name the cluster.
qp() { dir=$primary q "$@"; }
qr() { dir=$replica q "$@"; }
wait_p() { dir=$primary wait_until "$@"; }
wait_r() { dir=$replica wait_until "$@"; }

pgc_init "$primary" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50" \
    "cluster_name = 'primary-1'" "wal_keep_size = '512MB'" >/dev/null
pgc_start "$primary" >/dev/null
qp -d postgres <<'SQL'
CREATE EXTENSION pii_audit;
CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT g, 'name ' || g, '555-' || g FROM generate_series(1, 1000) g;
SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
ALTER ROLE pii_audit_forwarder LOGIN;
SQL
wait_p postgres "SELECT state = 'running' FROM pii_audit.status" 30 ||
    { echo "not ok - the primary's worker did not start"; exit 1; }

# make_standby DIR NAME [conf lines...]: a streaming replica of the primary (of $upstream when
# set), not started.
make_standby() {
    local d=$1 name=$2 port from=${upstream:-$primary}
    shift 2
    mkdir -p "$d/sock"
    port=$(pgc_free_port)
    echo "$port" >"$d/port"
    : >"$d/server.log"
    chown postgres: "$d" "$d/sock" "$d/server.log"
    runuser -u postgres -- "$bindir/pg_basebackup" -h "$from/sock" -p "$(pgc_port "$from")" \
        -U postgres -D "$d/data" -X stream -R -c fast
    {
        echo "port = $port"
        echo "unix_socket_directories = '$d/sock'"
        echo "cluster_name = '$name'"
        for line in "$@"; do echo "$line"; done
    } >"$d/data/pgc_runtime.conf"
}

make_standby "$replica" replica-1 "pii_audit.queue_size = '64MB'"
pgc_start "$replica" >/dev/null
wait_r postgres "SELECT pg_is_in_recovery() AND state = 'running' FROM pii_audit.status" 30 ||
    { echo "not ok - the standby's worker is not forwarding: $(qr -c 'SELECT state FROM pii_audit.status')"; }

# ---------------------------------------------------------------- 1. one read, and the names
hash7=$(qp -c "SELECT pii_audit.subject_hash('7')")
start_ns=$(date +%s%N)
qr -c "SET application_name = 'one-read'" -c 'SELECT name FROM customers WHERE id = 7' >/dev/null
if wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'one-read'" 10; then
    elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
    echo "# a read on the standby reached the primary's trail after ${elapsed_ms} ms (2 cores, shared machine)"
    check "1: a read on the standby is in the primary's trail within 2 s" yes \
        "$( ((elapsed_ms <= 2000)) && echo yes || echo "no: $elapsed_ms ms")"
else
    check "1: a read on the standby is in the primary's trail" 1 \
        "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'one-read'")"
fi
check "1: with the standby's name, relation and subject" "replica-1|public.customers|{$hash7}|completed" \
    "$(qp -c "SELECT server_name, relation, subjects, status FROM pii_audit.events WHERE application_name = 'one-read'")"
qp -c "SET application_name = 'own-read'" -c 'SELECT name FROM customers WHERE id = 8' >/dev/null
wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'own-read'" 10 || true
check "1: the primary's own read carries its name" "primary-1" \
    "$(qp -c "SELECT server_name FROM pii_audit.events WHERE application_name = 'own-read'")"
check "1: access_log shows the server" "replica-1" \
    "$(qp -c "SELECT server_name FROM pii_audit.access_log WHERE application_name = 'one-read'")"
check "1: login_log shows the server of each login" "t" \
    "$(qp -c "SELECT bool_and(server_name IN ('primary-1', 'replica-1')) AND count(DISTINCT server_name) = 2 FROM pii_audit.login_log")"
check "1: subject_access finds the standby's read" "t" \
    "$(qp -c "SELECT count(*) >= 1 FROM pii_audit.subject_access('7') WHERE event_id = (SELECT event_id FROM pii_audit.events WHERE application_name = 'one-read')")"
check "1: a new standby's first start (its queue file a copy of the primary's) adds no gap row" "0" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")"
check "1: subject_access names the server of each read (the standby's, the primary's)" "replica-1|primary-1" \
    "$(qp -c "SELECT (SELECT string_agg(server_name, ',') FROM pii_audit.subject_access('7')) || '|' || (SELECT string_agg(server_name, ',') FROM pii_audit.subject_access('8'))")"
check "1: breach_scope names the servers each person's data was read on" "7={replica-1} 8={primary-1}" \
    "$(qp -c "SELECT string_agg(identifier || '=' || server_names::text, ' ' ORDER BY identifier) FROM pii_audit.breach_scope('postgres', now() - interval '1 hour', now() + interval '1 hour') WHERE identifier IN ('7', '8')")"
id1=$(qp -c "SELECT event_id FROM pii_audit.events WHERE application_name = 'one-read'")
check "1: the export names the standby as host and the primary as observer" "replica-1|primary-1" \
    "$(qp -c "SELECT (line::json)->'host'->>'name' || '|' || ((line::json)->'observer'->>'name') FROM pii_audit.export($id1 - 1, 1, 'json')")"
contains "1: cef names the standby as dvchost" "dvchost=replica-1" \
    "$(qp -c "SELECT line FROM pii_audit.export($id1 - 1, 1, 'cef')")"
check "1: the trail verifies (server names are chained)" "ok" \
    "$(qp -c "SELECT string_agg(DISTINCT problem, ',') FROM pii_audit.verify_trail(1, 9223372036854775807)")"

# ---------------------------------------------------------------- 1b. a batch handed in twice
# The standby's batches are captured on their way in (a test trigger); one handed in again, as
# after a lost confirmation, is recognised and not stored twice. Bad batches are refused.
qp -d postgres <<'SQL' >/dev/null
CREATE TABLE public.captured AS SELECT * FROM pii_audit.forwarded_batches WITH NO DATA;
CREATE FUNCTION public.capture() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.captured SELECT NEW.*; RETURN NEW; END $$;
CREATE TRIGGER capture BEFORE INSERT ON pii_audit.forwarded_batches
    FOR EACH ROW EXECUTE FUNCTION public.capture();
SQL
qr -c "SET application_name = 'replayed'" -c 'SELECT name FROM customers WHERE id = 11' >/dev/null
wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'replayed' AND kind = 'read'" 10 || true
qp -c 'DROP TRIGGER capture ON pii_audit.forwarded_batches' >/dev/null
IFS='|' read -r gen fp drops < <(qp -c "SELECT generation, key_fingerprint, dropped FROM pii_audit.forwarded_origins WHERE server_name = 'replica-1'")
fw() { dir=$primary q -U pii_audit_forwarder -c "$1" 2>&1; }
answers=""
for batch in $(qp -c "SELECT batch_id FROM public.captured ORDER BY batch_id"); do
    hex=$(qp -c "SELECT encode(records, 'hex') FROM public.captured WHERE batch_id = $batch")
    answers+="$(fw "SELECT pii_audit.forward_events('replica-1', $gen, $fp, $drops, decode('$hex', 'hex'))") "
done
echo "# handed in again: $answers"
check "1b: every batch handed in again is recognised" "yes" \
    "$([[ -n "$answers" && "$answers" != *kept* && "$(echo $answers | tr ' ' '\n' | sort -u)" == duplicate ]] && echo yes || echo "no: $answers")"
sleep 0.5
check "1b: ... and its read is stored once" "1" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'replayed' AND kind = 'read'")"
contains "1b: a malformed batch is refused" "refused a malformed forwarded batch" \
    "$(fw "SELECT pii_audit.forward_events('replica-x', 1, $fp, 0, '\\x0500000001'::bytea)")"
contains "1b: a batch under the primary's own name is refused" "under the name of this server" \
    "$(fw "SELECT pii_audit.forward_events('primary-1', 1, $fp, 0, ''::bytea)")"
contains "1b: a batch made with another subject key is refused" "another subject key" \
    "$(fw "SELECT pii_audit.forward_events('replica-x', 1, $fp + 1, 0, decode('$hex', 'hex'))")"
contains "1b: a loss note without its serial is refused" "a loss note needs its serial" \
    "$(fw "SELECT pii_audit.forward_events('replica-x', 1, $fp, 0, ''::bytea, 'lost', 0)")"
contains "1b: the forwarder role cannot read what it handed in" "permission denied" \
    "$(fw 'SELECT count(*) FROM pii_audit.forwarded_batches')"
check "1b: nothing of the refused batches is stored" "0" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE server_name = 'replica-x'")"

# ---------------------------------------------------------------- 2. the primary away for 10 s
cat >"$top/read.sql" <<'SQL'
\set id random(1, 1000)
SELECT name FROM customers WHERE id = :id;
SQL
chmod 644 "$top/read.sql"
# run_pgbench DIR APPNAME SECONDS: 4 clients of reads at 400/s in all; prints how many ran.
run_pgbench() {
    PGAPPNAME=$2 "$bindir/pgbench" -n -h "$1/sock" -p "$(pgc_port "$1")" -U postgres -c 4 -j 2 \
        -T "$3" -R 400 -f "$top/read.sql" postgres 2>"$top/pgbench-$2.err" |
        sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p'
}
run_pgbench "$replica" outage 24 >"$top/outage.count" &
bench=$!
sleep 5
pgc_stop "$primary" fast >/dev/null
echo "# primary stopped"
sleep 10
echo "# the standby's queue held $(qr -c 'SELECT queue_depth_bytes FROM pii_audit.status') bytes when the primary came back"
pgc_start "$primary" >/dev/null
back_ns=$(date +%s%N)
echo "# primary started again"
wait "$bench"
ran=$(cat "$top/outage.count")
echo "# pgbench ran $ran reads on the standby; $(grep -c . "$top/pgbench-outage.err" || true) lines on its stderr"
check "2: pgbench ran reads" yes "$( ((${ran:-0} > 1000)) && echo yes || echo "no: ${ran:-none}")"
wait_p postgres "SELECT count(*) >= $ran FROM pii_audit.events WHERE application_name = 'outage' AND kind = 'read'" 60 || true
echo "# every read of the run was in the primary's trail $((($(date +%s%N) - back_ns) / 1000000)) ms after the primary started again (pgbench ran on for part of it)"
check "2: every read on the standby arrived exactly once" "$ran|$ran" \
    "$(qp -c "SELECT count(*), count(DISTINCT (backend_pid, event_time)) FROM pii_audit.events WHERE application_name = 'outage' AND kind = 'read'")"
check "2: ... with the standby's name and one subject each" "replica-1|t" \
    "$(qp -c "SELECT string_agg(DISTINCT server_name, ','), bool_and(cardinality(subjects) = 1) FROM pii_audit.events WHERE application_name = 'outage' AND kind = 'read'")"
check "2: in order (each standby session's reads in event_id order are in time order)" "0" \
    "$(qp -c "SELECT count(*) FROM (SELECT event_time < lag(event_time) OVER (PARTITION BY backend_pid ORDER BY event_id) AS back FROM pii_audit.events WHERE application_name = 'outage' AND kind = 'read') x WHERE back")"
check "2: no gap row" "0" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")"
check "2: event ids stay gap-free" "t" \
    "$(qp -c "SELECT max(event_id) = count(*) FROM pii_audit.events")"

# ---------------------------------------------------------------- 3. bad input
# A connection string that reaches nothing: the reason is shown, the reads wait, and arrive once
# it is fixed.
echo "pii_audit.forward_conninfo = 'host=$top/nowhere port=1 user=pii_audit_forwarder dbname=postgres'" \
    >>"$replica/data/pgc_runtime.conf"
qr -c 'SELECT pg_reload_conf()' >/dev/null
sleep 1
qr -c "SET application_name = 'bad-conninfo'" -c 'SELECT name FROM customers WHERE id = 9' >/dev/null
wait_r postgres "SELECT state LIKE '%forwarding to the primary%nowhere%' FROM pii_audit.status" 20 || true
contains "3: a bad forward_conninfo is shown in the standby's status" "nowhere" \
    "$(qr -c 'SELECT state FROM pii_audit.status')"
contains "3: ... and logged once, with a hint" "cannot forward audit events to the primary" \
    "$(pgc_log "$replica" 2>/dev/null || cat "$replica/server.log")"
check "3: ... the read is not in the trail yet" "0" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'bad-conninfo'")"
# A role that does not exist on the primary.
sed -i '/forward_conninfo/d' "$replica/data/pgc_runtime.conf"
echo "pii_audit.forward_conninfo = 'host=$primary/sock port=$(pgc_port "$primary") user=no_such_forwarder dbname=postgres'" \
    >>"$replica/data/pgc_runtime.conf"
qr -c 'SELECT pg_reload_conf()' >/dev/null
wait_r postgres "SELECT state LIKE '%no_such_forwarder%' FROM pii_audit.status" 30 || true
contains "3: a forwarder role missing on the primary is shown" 'role "no_such_forwarder" does not exist' \
    "$(qr -c 'SELECT state FROM pii_audit.status')"
# A role that may not log in.
sed -i '/forward_conninfo/d' "$replica/data/pgc_runtime.conf"
qp -c 'ALTER ROLE pii_audit_forwarder NOLOGIN' >/dev/null
qr -c 'SELECT pg_reload_conf()' >/dev/null
wait_r postgres "SELECT state LIKE '%not permitted to log in%' FROM pii_audit.status" 30 || true
contains "3: a forwarder role that may not log in is shown" "not permitted to log in" \
    "$(qr -c 'SELECT state FROM pii_audit.status')"
qp -c 'ALTER ROLE pii_audit_forwarder LOGIN' >/dev/null
wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'bad-conninfo'" 30 || true
check "3: once the cause is gone the waiting read arrives, once" "1|replica-1" \
    "$(qp -c "SELECT count(*), string_agg(server_name, ',') FROM pii_audit.events WHERE application_name = 'bad-conninfo'")"
check "3: the standby's status is clear again" "running" "$(qr -c 'SELECT state FROM pii_audit.status')"

# ---------------------------------------------------------------- 4. another subject key
make_standby "$other" replica-k "pii_audit.flush_interval = 50"
head -c 32 /dev/urandom >"$other/data/pii_audit_subject.key"
pgc_start "$other" >/dev/null
dir=$other q -c "SET application_name = 'other-key'" -c 'SELECT name FROM customers WHERE id = 3' >/dev/null
dir=$other wait_until postgres "SELECT state LIKE '%another subject key%' FROM pii_audit.status" 30 || true
contains "4: a standby with another subject key is refused, and says why" "refused events forwarded with another subject key" \
    "$(dir=$other q -c 'SELECT state FROM pii_audit.status')"
check "4: ... none of its events is in the trail" "0" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE server_name = 'replica-k'")"
pgc_destroy "$other" >/dev/null

# ---------------------------------------------------------------- 3b. the spool (queue) fills
# The primary away, a small queue on the standby that drops when full: the drops become a gap
# row of the standby, the rest arrives.
cat >>"$replica/data/pgc_runtime.conf" <<'CONF'
pii_audit.queue_size = '256kB'
pii_audit.on_queue_full = 'drop'
CONF
pgc_stop "$replica" fast >/dev/null
pgc_start "$replica" >/dev/null
wait_r postgres "SELECT state = 'running' FROM pii_audit.status" 30 || true
gaps_before=$(qp -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap'")
pgc_stop "$primary" fast >/dev/null
qr -c "SET application_name = 'spool'" \
    -c 'DO $$ BEGIN FOR i IN 1..4000 LOOP PERFORM name FROM customers WHERE id = 1 + i % 1000; END LOOP; END $$' >/dev/null
dropped=$(qr -c 'SELECT events_dropped FROM pii_audit.status')
echo "# the standby dropped $dropped of 4000 reads while the primary was away (256 kB queue)"
check "3: the standby's queue filled and dropped reads" yes "$( ((dropped > 0)) && echo yes || echo no)"
pgc_start "$primary" >/dev/null
wait_p postgres "SELECT count(*) + coalesce((SELECT sum(row_count) FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-1'), 0) >= 4000 FROM pii_audit.events WHERE application_name = 'spool'" 60 || true
reads=$(qp -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'spool' AND kind = 'read' AND nesting_level > 0")
lost=$(qp -c "SELECT coalesce(sum(row_count), 0) FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-1'")
echo "# $reads of the 4000 reads arrived; the standby's gap rows count $lost lost events (its logins included)"
check "3: every read is in the trail or counted in a gap row of the standby" "yes|1" \
    "$( ((reads > 0 && reads <= 4000 && reads + lost >= 4000)) && echo yes || echo "no: $reads + $lost")|$(qp -c "SELECT count(*) - $gaps_before FROM pii_audit.events WHERE kind = 'gap'")"
contains "3: the gap row says where and why" "lost on standby \"replica-1\"" \
    "$(qp -c "SELECT detail FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-1'")"
sed -i '/queue_size\|on_queue_full/d' "$replica/data/pgc_runtime.conf"
echo "pii_audit.queue_size = '64MB'" >>"$replica/data/pgc_runtime.conf"
pgc_stop "$replica" fast >/dev/null
pgc_start "$replica" >/dev/null
wait_r postgres "SELECT state = 'running' FROM pii_audit.status" 30 || true

# ---------------------------------------------------------------- 3c. the standby's OS crash
# As crash_queue.sh does it: the postmaster killed (its children follow), and the queue file
# says it was last used in another boot. Its pages may be stale: refused, and the loss, of
# unknown size, goes to the primary.
gap_mark=$(qp -c "SELECT max(event_id) FROM pii_audit.events")
pm=$(head -n 1 "$replica/data/postmaster.pid")
kill -9 "$pm"
sleep 3
printf 'X' | dd of="$replica/data/pii_audit/queue" bs=1 seek=56 conv=notrunc status=none  # boot_id
for i in 1 2 3 4 5; do pgc_start "$replica" >/dev/null 2>&1 && break; sleep 2; done
wait_r postgres "SELECT state = 'running' FROM pii_audit.status" 30 || true
wait_p postgres "SELECT count(*) >= 1 FROM pii_audit.events WHERE kind = 'gap' AND event_id > $gap_mark" 30 || true
check "3c: the standby's OS crash is a gap row of that standby, of unknown size, saying why" "1|replica-1|t|t" \
    "$(qp -c "SELECT count(*), string_agg(server_name, ','), bool_and(row_count IS NULL), bool_and(detail LIKE 'audit events were lost on standby \"replica-1\"%operating system restarted%') FROM pii_audit.events WHERE kind = 'gap' AND event_id > $gap_mark")"
rm -f "$replica"/data/pii_audit/queue.refused.*
qr -c "SET application_name = 'after-os-crash'" -c 'SELECT name FROM customers WHERE id = 4' >/dev/null
wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'after-os-crash' AND kind = 'read'" 30 || true
check "3c: ... and the standby's reads arrive again" "1" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'after-os-crash' AND kind = 'read'")"
check "3c: ... and the gap row is recorded once" "1" \
    "$(qp -c "SELECT count(*) FROM pii_audit.events WHERE kind = 'gap' AND event_id > $gap_mark")"

# ---------------------------------------------------------------- 4b. a cascaded standby
# Its upstream is a standby, which cannot store events: by default it is refused (the reason is
# shown); pointed at the primary, its reads arrive with its own name.
cascade=$top/c
upstream=$replica make_standby "$cascade" replica-c
pgc_start "$cascade" >/dev/null
dir=$cascade q -c "SET application_name = 'cascaded'" -c 'SELECT phone FROM customers WHERE id = 5' >/dev/null
dir=$cascade wait_until postgres "SELECT state LIKE 'forwarding to the primary:%' FROM pii_audit.status" 30 || true
contains "4b: a cascaded standby does not forward to its upstream standby, and says so" "forwarding to the primary:" \
    "$(dir=$cascade q -c 'SELECT state FROM pii_audit.status')"
echo "pii_audit.forward_conninfo = 'host=$primary/sock port=$(pgc_port "$primary") user=pii_audit_forwarder dbname=postgres'" \
    >>"$cascade/data/pgc_runtime.conf"
dir=$cascade q -c 'SELECT pg_reload_conf()' >/dev/null
wait_p postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'cascaded' AND kind = 'read'" 30 || true
check "4b: pointed at the primary, the cascaded standby's read arrives with its name" "replica-c" \
    "$(qp -c "SELECT string_agg(server_name, ',') FROM pii_audit.events WHERE application_name = 'cascaded' AND kind = 'read'")"
pgc_destroy "$cascade" >/dev/null

# ---------------------------------------------------------------- 5. promotion mid-run
run_pgbench "$replica" promote 16 >"$top/promote.count" &
bench=$!
sleep 4
pgc_stop "$primary" fast >/dev/null
sleep 2
runuser -u postgres -- "$bindir/pg_ctl" -D "$replica/data" -w promote >/dev/null
echo "# standby promoted"
wait "$bench"
ran=$(cat "$top/promote.count")
echo "# pgbench ran $ran reads across the promotion"
wait_r postgres "SELECT count(*) >= $ran FROM pii_audit.events WHERE application_name = 'promote' AND kind = 'read'" 60 || true
check "5: after promotion every read of the run is in the new primary's trail exactly once" "$ran|$ran" \
    "$(qr -c "SELECT count(*), count(DISTINCT (backend_pid, event_time)) FROM pii_audit.events WHERE application_name = 'promote' AND kind = 'read'")"
check "5: ... named with the promoted server's name" "replica-1" \
    "$(qr -c "SELECT string_agg(DISTINCT server_name, ',') FROM pii_audit.events WHERE application_name = 'promote' AND kind = 'read'")"
check "5: the promoted server's trail verifies" "ok" \
    "$(qr -c "SELECT string_agg(DISTINCT problem, ',') FROM pii_audit.verify_trail(1, 9223372036854775807)")"
check "5: no error in either server log" "" \
    "$(cat "$primary/server.log" "$replica/server.log" | grep -E 'ERROR|PANIC|TRAP' | grep -v 'pii_audit_forwarder\|forward_events\|STATEMENT\|not permitted to log in\|another subject key\|malformed forwarded batch\|under the name of this server\|permission denied for table forwarded_batches\|terminating connection due to administrator command\|connection to server' | head -5)"

# ---------------------------------------------------------------- 6. failover, asynchronous
# The promoted server (replica-1) is now the primary of two new standbys, replica-f and
# replica-g. They forward to replica-1 through pii_audit.forward_conninfo, so that their WAL
# streams can be cut on their own.
failover=$top/f
other2=$top/g
qf() { dir=$failover q "$@"; }
qg() { dir=$other2 q "$@"; }
# failover_read_kept APP ID PRIMARY_CHECK KEPT_CHECK: replica-f reads customer ID as application
# APP; the primary must have the read, and replica-f must release no queue space for it
# (events_persisted stays at $released, which the following checks use too).
failover_read_kept() {
    released=$(qf -c 'SELECT events_persisted FROM pii_audit.status')
    qf -c "SET application_name = '$1'" -c "SELECT name FROM customers WHERE id = $2" >/dev/null
    wait_r postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = '$1' AND kind = 'read'" 10 || true
    check "$3" "1" \
        "$(qr -c "SELECT count(*) FROM pii_audit.events WHERE application_name = '$1' AND kind = 'read'")"
    sleep 1
    check "$4" "$released" "$(qf -c 'SELECT events_persisted FROM pii_audit.status')"
}
to_replica="pii_audit.forward_conninfo = 'host=$replica/sock port=$(pgc_port "$replica") user=pii_audit_forwarder dbname=postgres'"
upstream=$replica make_standby "$failover" replica-f "pii_audit.flush_interval = 50" "$to_replica" \
    "pii_audit.queue_size = '256kB'" "pii_audit.on_queue_full = 'drop'"
upstream=$replica make_standby "$other2" replica-g "pii_audit.flush_interval = 50" "$to_replica"
pgc_start "$failover" >/dev/null
pgc_start "$other2" >/dev/null
dir=$failover wait_until postgres "SELECT pg_is_in_recovery() AND state = 'running' FROM pii_audit.status" 30 || true
dir=$other2 wait_until postgres "SELECT pg_is_in_recovery() AND state = 'running' FROM pii_audit.status" 30 || true
# replica-f drops reads while it cannot forward; the primary records them as a gap of replica-f.
sed -i '/forward_conninfo/d' "$failover/data/pgc_runtime.conf"
echo "pii_audit.forward_conninfo = 'host=$top/nowhere port=1'" >>"$failover/data/pgc_runtime.conf"
qf -c 'SELECT pg_reload_conf()' >/dev/null
sleep 1
qf -c "SET application_name = 'f-spool'" \
    -c 'DO $$ BEGIN FOR i IN 1..4000 LOOP PERFORM name FROM customers WHERE id = 1 + i % 1000; END LOOP; END $$' >/dev/null
f_dropped=$(qf -c 'SELECT events_dropped FROM pii_audit.status')
echo "$to_replica" >>"$failover/data/pgc_runtime.conf"
sed -i '/nowhere/d' "$failover/data/pgc_runtime.conf"
qf -c 'SELECT pg_reload_conf()' >/dev/null
wait_r postgres "SELECT coalesce(sum(row_count), 0) >= $f_dropped FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-f'" 30 || true
sleep 1
f_lost=$(qr -c "SELECT coalesce(sum(row_count), 0) FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-f'")
echo "# replica-f dropped $f_dropped reads while it could not forward (256 kB queue); its gap rows on the primary count $f_lost"
check "6: replica-f's drops are gap rows of replica-f on the primary" "yes" \
    "$( ((f_dropped > 0 && f_lost >= f_dropped)) && echo yes || echo "no: $f_dropped, $f_lost")"
qf -c "SET application_name = 'before-pause'" -c 'SELECT name FROM customers WHERE id = 21' >/dev/null
wait_r postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'before-pause' AND kind = 'read'" 10 || true
dir=$failover wait_until postgres "SELECT queue_depth_bytes = 0 FROM pii_audit.status" 10 || true
# Replay paused: the primary keeps the batch, the standby has not replayed that commit yet. On
# a standby, status.events_persisted counts the events whose queue space it released (every
# query here is a new session, whose login is an event too: queue_depth_bytes is never 0).
qf -c 'SELECT pg_wal_replay_pause()' >/dev/null
sleep 0.5
failover_read_kept replay-paused 22 "6: with replay paused, the primary has the standby's read" \
    "6: ... and the standby releases no queue space until it has replayed the commit"
qf -c 'SELECT pg_wal_replay_resume()' >/dev/null
check "6: once replay goes on, the space is released" "t" \
    "$(dir=$failover wait_until postgres "SELECT events_persisted > $released FROM pii_audit.status" 10 && echo t || echo f)"
# The WAL streams cut (forwarding goes on): the primary keeps batches whose commits never reach
# the standbys, and dies; replica-f is promoted. replica-g's stream is cut first, so that it has
# no WAL replica-f lacks and can follow it.
qg -c "ALTER SYSTEM SET primary_conninfo = 'host=$top/nowhere port=1'" -c 'SELECT pg_reload_conf()' >/dev/null
dir=$other2 wait_until postgres "SELECT count(*) = 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'" 20 || true
qf -c "ALTER SYSTEM SET primary_conninfo = 'host=$top/nowhere port=1'" -c 'SELECT pg_reload_conf()' >/dev/null
dir=$failover wait_until postgres "SELECT count(*) = 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'" 20 || true
sleep 0.5
failover_read_kept failover 23 "6: the primary kept the read of the standby that no longer receives its WAL" \
    "6: ... which keeps the read in its queue (releases nothing)"
released_g=$(qg -c 'SELECT events_persisted FROM pii_audit.status')
qg -c "SET application_name = 'other-standby'" -c 'SELECT name FROM customers WHERE id = 24' >/dev/null
wait_r postgres "SELECT count(*) = 1 FROM pii_audit.events WHERE application_name = 'other-standby' AND kind = 'read'" 10 || true
sleep 1
check "6: the primary kept the other standby's read too, which that standby keeps in its queue" "1|$released_g" \
    "$(qr -c "SELECT count(*) FROM pii_audit.events WHERE application_name = 'other-standby' AND kind = 'read'")|$(qg -c 'SELECT events_persisted FROM pii_audit.status')"
pgc_stop "$replica" immediate >/dev/null
runuser -u postgres -- "$bindir/pg_ctl" -D "$failover/data" -w promote >/dev/null
echo "# replica-1 killed, replica-f promoted"
dir=$failover wait_until postgres "SELECT count(*) >= 1 FROM pii_audit.events WHERE application_name = 'failover' AND kind = 'read'" 30 || true
check "6: after the promotion the read is in the new primary's trail, once" "1|replica-f" \
    "$(qf -c "SELECT count(*), string_agg(server_name, ',') FROM pii_audit.events WHERE application_name = 'failover' AND kind = 'read'")"
check "6: ... and so are the reads before it, once each" "1|1" \
    "$(qf -c "SELECT count(*) FILTER (WHERE application_name = 'before-pause'), count(*) FILTER (WHERE application_name = 'replay-paused') FROM pii_audit.events WHERE kind = 'read'")"
check "6: one gap row of unknown size on the new primary: the old primary's own queued events, lost with it" "1|t" \
    "$(qf -c "SELECT count(*), bool_and(detail LIKE '%promoted from a hot standby%') FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-f' AND row_count IS NULL")"
check "6: the drops the old primary recorded for replica-f are not recorded again" "$f_lost" \
    "$(qf -c "SELECT sum(row_count) FROM pii_audit.events WHERE kind = 'gap' AND server_name = 'replica-f' AND row_count IS NOT NULL")"
# replica-g follows the new primary (its WAL and its forwarding).
sed -i '/forward_conninfo/d' "$other2/data/pgc_runtime.conf"
echo "pii_audit.forward_conninfo = 'host=$failover/sock port=$(pgc_port "$failover") user=pii_audit_forwarder dbname=postgres'" \
    >>"$other2/data/pgc_runtime.conf"
qg -c "ALTER SYSTEM SET primary_conninfo = 'host=$failover/sock port=$(pgc_port "$failover") user=postgres'" \
    -c 'SELECT pg_reload_conf()' >/dev/null
dir=$failover wait_until postgres "SELECT count(*) >= 1 FROM pii_audit.events WHERE application_name = 'other-standby' AND kind = 'read'" 60 || true
check "6: the other standby, following the new primary, hands its read in again: stored once" "1|replica-g" \
    "$(qf -c "SELECT count(*), string_agg(server_name, ',') FROM pii_audit.events WHERE application_name = 'other-standby' AND kind = 'read'")"
check "6: the new primary's trail verifies" "ok" \
    "$(qf -c "SELECT string_agg(DISTINCT problem, ',') FROM pii_audit.verify_trail(1, 9223372036854775807)")"

echo "# standby: $passes passed, $failures failed"
if ((failures > 0)); then
    echo "---- primary log ----"; tail -40 "$primary/server.log"
    echo "---- standby log ----"; tail -60 "$replica/server.log"
    exit 1
fi
