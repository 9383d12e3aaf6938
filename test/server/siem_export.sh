#!/usr/bin/env bash
# siem_export.sh OCSF_VALIDATOR: the SIEM export's pull side against a real server.
#   1. a login role, application and end user with hostile names: the login and the read arrive
#      whole in json and escaped in cef;
#   2. an alert raised by the worker (a departed account's read) becomes an alert event;
#   3. late commits: a read in a transaction left open is exported before it commits, an
#      officer's status change committed late gets an id after the collector's position;
#   4. 8 clients reading in transactions of random length (some rolled back) and changing alert
#      statuses, while a collector polls export() and export_alerts() by id: it ends with every
#      event and every alert event exactly once, in order, no gap;
#   5. every event and alert event the server exports as ocsf is valid OCSF 1.3.0
#      (OCSF_VALIDATOR, built from test/unit/ocsf_validator.cpp);
#   6. pg_dump and pg_restore keep the alert events as they were.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"
validator=${1:?usage: siem_export.sh OCSF_VALIDATOR}
[[ -x "$validator" ]] || { echo "siem_export: $validator is not executable" >&2; exit 1; }

dir=$(mktemp -d /tmp/pii_audit_siem.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir"

pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50" \
    "cluster_name = 'siem test'" >/dev/null
pgc_start "$dir" >/dev/null
q -d postgres <<'SQL'
CREATE EXTENSION pii_audit;
CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT g, 'n' || g, '138' || g FROM generate_series(1, 1000) g;
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone, subject_key';
CREATE ROLE "r|o=l\e]""x ü" LOGIN;
CREATE ROLE leaver LOGIN;
CREATE ROLE clerk LOGIN;
CREATE ROLE officer LOGIN IN ROLE pii_audit_officer;
CREATE ROLE collector LOGIN IN ROLE pii_audit_siem;
GRANT SELECT ON customers TO "r|o=l\e]""x ü", leaver, clerk;
SQL
flushed() { wait_until postgres "SELECT queue_depth_bytes = 0 AND events_persisted + events_dropped >= events_enqueued FROM pii_audit.status" 60; }
as() { local who=$1; shift; pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 -U "$who" -d postgres "$@"; }

# 1. Hostile names through a real login.
hostile_role='r|o=l\e]"x ü'
PGAPPNAME='app|=\]"x' as "$hostile_role" -c "SET pii_audit.end_user = 'clerk|=\]\"ü 非'" \
    -c 'SELECT phone FROM customers WHERE id = 1' >/dev/null
flushed
check "hostile login: user name whole in json" "$hostile_role" \
    "$(q -d postgres -c "SELECT x.line::jsonb #>> '{user,name}' FROM pii_audit.export(0, 100000, 'json') x
                         WHERE x.line::jsonb #>> '{event,action}' = 'login'
                           AND x.line::jsonb #>> '{pii_audit,application_name}' = 'app|=\]\"x'")"
check "hostile read: end user and application whole in json" 'clerk|=\]"ü 非|app|=\]"x' \
    "$(q -d postgres -c "SELECT (x.line::jsonb #>> '{pii_audit,end_user}') || '|' || (x.line::jsonb #>> '{pii_audit,application_name}')
                         FROM pii_audit.export(0, 100000, 'json') x WHERE x.line::jsonb #>> '{event,action}' = 'read'")"
contains "hostile read: cef escapes = and \\ in the user name" 'suser=r|o\=l\\e]"x ü ' \
    "$(q -d postgres -c "SELECT line FROM pii_audit.export(0, 100000, 'cef') WHERE line LIKE '%|read|%'")"
contains "hostile read: syslog escapes \\ ] and \" in the end user" 'end_user="clerk|=\\\]\"ü 非"' \
    "$(q -d postgres -c "SELECT line FROM pii_audit.export(0, 100000, 'rfc5424') WHERE line LIKE '% read [%'")"
check "server name: cluster_name, a space made _ in the syslog HOSTNAME" "siem_test" \
    "$(q -d postgres -c "SELECT split_part(line, ' ', 3) FROM pii_audit.export(0, 1, 'rfc5424')")"

# 2. An alert raised by the worker: a departed account reads.
q -d postgres -c "SELECT pii_audit.mark_departed('leaver', now() - interval '1 day')" >/dev/null
as leaver -c 'SELECT name FROM customers WHERE id = 2' >/dev/null
if wait_until postgres "SELECT EXISTS (SELECT FROM pii_audit.alert_events ae JOIN pii_audit.alerts a USING (alert_id)
                        WHERE a.actor = 'leaver' AND ae.change = 'raised')" 60; then
    check "worker's alert: exported as an alert event" "departed_or_dormant" \
        "$(q -d postgres -c "SELECT x.line::jsonb #>> '{rule,name}' FROM pii_audit.export_alerts(0, 100) x
                             WHERE x.line::jsonb #>> '{user,name}' = 'leaver' LIMIT 1")"
else
    check "worker's alert: exported as an alert event" "raised" "none after 60 s"
fi

# 3. Late commits. A session that stays open (a FIFO feeds its psql).
mkfifo "$dir/a.in"
chmod 666 "$dir/a.in"
pgc_psql "$dir" -X -A -t -q -d postgres <"$dir/a.in" >"$dir/a.out" 2>&1 &
pids+=($!)
exec 7>"$dir/a.in"
flushed
before=$(q -d postgres -c "SELECT coalesce(max(event_id), 0) FROM pii_audit.export(0, 1000000)")
echo "BEGIN; SELECT phone FROM customers WHERE id = 3;" >&7
wait_until postgres "SELECT EXISTS (SELECT FROM pii_audit.events WHERE event_id > $before AND kind = 'read')" 30 || true
check "open transaction: its read is exported before it commits" "SELECT phone FROM customers WHERE id = \$1" \
    "$(q -d postgres -c "SELECT x.line::jsonb #>> '{db,statement}' FROM pii_audit.export($before, 10) x
                         WHERE x.line::jsonb #>> '{event,action}' = 'read'")"
echo "COMMIT;" >&7
q -d postgres <<'SQL'
INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity, explanation, evidence)
SELECT now() - g * interval '1 minute', 'actor' || g, 'group', 'bulk_reading', 60, 'medium', 'test alert', '{}'
FROM generate_series(1, 20) g;
SQL
a1=$(q -d postgres -c "SELECT alert_id FROM pii_audit.alerts WHERE actor = 'actor1'")
a2=$(q -d postgres -c "SELECT alert_id FROM pii_audit.alerts WHERE actor = 'actor2'")
echo "BEGIN; UPDATE pii_audit.alerts SET status = 'acknowledged' WHERE alert_id = $a1;" >&7
sleep 0.3
as officer -c "UPDATE pii_audit.alerts SET status = 'closed' WHERE alert_id = $a2"
position=$(as collector -c "SELECT max(alert_event_id) FROM pii_audit.export_alerts(0, 1000000)")
check "late alert change: the collector's position is the early one's" "$a2" \
    "$(as collector -c "SELECT x.line::jsonb #>> '{pii_audit,alert_id}' FROM pii_audit.export_alerts($position - 1, 1) x")"
echo "COMMIT;" >&7
wait_until postgres "SELECT EXISTS (SELECT FROM pii_audit.alert_events WHERE alert_id = $a1 AND change = 'status')" 30 || true
check "late alert change: the next pull after that position brings it" "$((position + 1)):$a1:acknowledged" \
    "$(as collector -c "SELECT string_agg(x.alert_event_id || ':' || (x.line::jsonb #>> '{pii_audit,alert_id}') || ':' ||
                                   (x.line::jsonb #>> '{pii_audit,status}'), ',')
                        FROM pii_audit.export_alerts($position, 100) x")"
exec 7>&-

# 4. Concurrent clients and a polling collector.
clients() {
    local c i
    for c in $(seq 1 8); do
        (
            for i in $(seq 1 15); do
                if ((i % 5 == 0)); then
                    as officer -c "BEGIN; UPDATE pii_audit.alerts SET status = (ARRAY['open','acknowledged','closed'])[1 + ($c + $i) % 3], note = 'c$c i$i' WHERE alert_id = (SELECT min(alert_id) + ($c * 7 + $i) % 20 FROM pii_audit.alerts WHERE actor LIKE 'actor%'); SELECT pg_sleep(random() * 0.2); COMMIT;" >/dev/null
                elif ((i % 7 == 0)); then
                    as clerk -c "BEGIN; SELECT phone FROM customers WHERE id = $((c * 100 + i)); SELECT pg_sleep(random() * 0.2); ROLLBACK;" >/dev/null
                else
                    as clerk -c "BEGIN; SELECT name, phone FROM customers WHERE id = $((c * 100 + i)); SELECT pg_sleep(random() * 0.1); COMMIT;" >/dev/null
                fi
            done
        ) &
        pids+=($!)
        client_pids+=($!)
    done
}
client_pids=()
last_event=0
last_alert=0
: >"$dir/events.got"
: >"$dir/alerts.got"
pull() {  # appends what a collector pulls after its positions
    local got
    got=$(as collector -c "SELECT event_id FROM pii_audit.export($last_event, 50, 'cef')")
    if [[ -n "$got" ]]; then
        printf '%s\n' "$got" >>"$dir/events.got"
        last_event=$(tail -n 1 <<<"$got")
    fi
    got=$(as collector -c "SELECT alert_event_id FROM pii_audit.export_alerts($last_alert, 7, 'leef')")
    if [[ -n "$got" ]]; then
        printf '%s\n' "$got" >>"$dir/alerts.got"
        last_alert=$(tail -n 1 <<<"$got")
    fi
}
first_event=$(q -d postgres -c "SELECT min(event_id) FROM pii_audit.events")
clients
running=1
while ((running)); do
    pull
    running=0
    for p in "${client_pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
done
for p in "${client_pids[@]}"; do wait "$p" || true; done
flushed
# Everything stored by now must reach the collector (its own logins keep adding events: it
# drains up to this mark, not to an end).
mark_event=$(q -d postgres -c "SELECT max(event_id) FROM pii_audit.events")
mark_alert=$(q -d postgres -c "SELECT max(alert_event_id) FROM pii_audit.alert_events")
for _ in $(seq 1 200); do
    ((last_event >= mark_event && last_alert >= mark_alert)) && break
    pull
done
check "collector: every event once, in order, no gap (ids $first_event..$last_event)" "same" \
    "$(seq "$first_event" "$last_event" | cmp -s - "$dir/events.got" && echo same || echo different)"
check "collector: as many events as the trail holds up to there" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_id <= $last_event")" \
    "$(wc -l <"$dir/events.got" | tr -d ' ')"
check "collector: reached what was stored" "yes" "$( ((last_event >= mark_event)) && echo yes || echo no)"
check "collector: every alert event once, in order, from 1, no gap (to $last_alert)" "same" \
    "$(seq 1 "$last_alert" | cmp -s - "$dir/alerts.got" && echo same || echo different)"
check "collector: as many alert events as stored" "$(q -d postgres -c "SELECT count(*) FROM pii_audit.alert_events")" \
    "$(wc -l <"$dir/alerts.got" | tr -d ' ')"
check "officers' changes: one alert event per committed change (3 per client)" "24" \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.alert_events WHERE note LIKE 'c%i%'")"

# 5. Every ocsf line the server exports is valid OCSF.
q -d postgres -c "SELECT line FROM pii_audit.export(0, 1000000, 'ocsf')" >"$dir/events.ocsf"
out=$("$validator" <"$dir/events.ocsf" 2>&1 || true)
check "ocsf: every event valid" "$(wc -l <"$dir/events.ocsf" | tr -d ' ') events valid, 0 not" "$(tail -n 1 <<<"$out")"
[[ "$out" == *" 0 not" ]] || head -n 20 <<<"$out"
q -d postgres -c "SELECT line FROM pii_audit.export_alerts(0, 1000000, 'ocsf')" >"$dir/alerts.ocsf"
out=$("$validator" <"$dir/alerts.ocsf" 2>&1 || true)
check "ocsf: every alert event valid" "$(wc -l <"$dir/alerts.ocsf" | tr -d ' ') events valid, 0 not" "$(tail -n 1 <<<"$out")"
[[ "$out" == *" 0 not" ]] || head -n 20 <<<"$out"
check "ocsf: lines for the events and the 20+ alert events" "yes" \
    "$( (($(wc -l <"$dir/events.ocsf") > 200 && $(wc -l <"$dir/alerts.ocsf") > 40)) && echo yes || echo no)"
# 6. pg_dump and pg_restore keep the alert events as they were (restoring the alerts is not a
# new raising).
bindir=$(pgc__bindir)
port=$(pgc_port "$dir")
"$bindir/pg_dump" -h "$dir/sock" -p "$port" -U postgres -Fc -f "$dir/dump" postgres
q -d postgres -c 'CREATE DATABASE restored'
"$bindir/pg_restore" -h "$dir/sock" -p "$port" -U postgres -d restored "$dir/dump" 2>"$dir/restore.err" || true
alert_events_of() { q -d "$1" -c "SELECT string_agg(alert_event_id || ':' || alert_id || ':' || change || ':' || status, ',' ORDER BY alert_event_id) FROM pii_audit.alert_events"; }
check "pg_dump/pg_restore: the same alert events" "$(alert_events_of postgres)" "$(alert_events_of restored)"
check "pg_dump/pg_restore: exports the same alert lines" \
    "$(q -d postgres -c "SELECT md5(string_agg(line, E'\n' ORDER BY alert_event_id)) FROM pii_audit.export_alerts(0, 1000000, 'cef')")" \
    "$(q -d restored -c "SELECT md5(string_agg(line, E'\n' ORDER BY alert_event_id)) FROM pii_audit.export_alerts(0, 1000000, 'cef')")"
check "no pii_audit error in the server log" "0" \
    "$(grep -c 'ERROR:.*pii_audit\|PANIC\|server process .* was terminated' "$dir/server.log" || true)"

echo "siem_export: $passes passed, $failures failed"
((failures == 0))
