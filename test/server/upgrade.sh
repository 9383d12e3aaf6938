#!/usr/bin/env bash
# upgrade.sh BUILD_DIR: a trail recorded by a released version survives
# ALTER EXTENSION pii_audit UPDATE to this one.
#
# Each released version is built from its commit in this repository's history (cached in
# BUILD_DIR/released-VERSION) and installed; a throwaway cluster records reads, logins, label
# changes and a failed read with it; then this build is installed again, the cluster restarted
# and the extension updated. Checked: every old event is in every view with the same content,
# new events follow with higher ids, subject_access finds old and new reads, and the update
# left the extension at this version. On any exit this build is installed back.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"
build_dir=$(cd "${1:?usage: upgrade.sh BUILD_DIR}" && pwd)

# version -> the commit that released it
declare -A released=([0.1.0]=19bddd3c40752b0b22afb9d8cf35755273c41331
                      [0.2.0]=198697adcaf451c8ccc4de587b2dd213c54b8a02)
current=$(sed -n 's/^default_version = .\([0-9.]*\).$/\1/p' "$build_dir/pii_audit.control")

dir=$(mktemp -d /tmp/pii_audit_upgrade.XXXXXX)
# cmake --install skips files whose timestamp looks unchanged, and a release installed within
# the second after this build looks so: remove them first.
reinstall_current() {
    rm -f "$(pg_config --pkglibdir)/pii_audit.so" "$(pg_config --sharedir)"/extension/pii_audit[.-]*
    cmake --install "$build_dir" >/dev/null
}
cleanup() {
    pgc_destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    reinstall_current
}
trap cleanup EXIT
# Every column of every view, in id order: what must not change. server_name (0.3.0) is new in
# every view and in subject_access, and NULL for old events; it is left out of the comparison
# and checked on its own.
snapshot() {  # snapshot UPTO_ID
    q -d postgres -c "SELECT (to_jsonb(e) - 'server_name')::text FROM pii_audit.events e WHERE event_id <= $1 ORDER BY event_id" \
        -c "SELECT (to_jsonb(a) - 'server_name')::text FROM pii_audit.access_log a WHERE event_id <= $1 ORDER BY event_id" \
        -c "SELECT (to_jsonb(l) - 'server_name')::text FROM pii_audit.login_log l WHERE event_id <= $1 ORDER BY event_id" \
        -c "SELECT (to_jsonb(c) - 'server_name')::text FROM pii_audit.label_changes c WHERE event_id <= $1 ORDER BY event_id" \
        -c "SELECT (to_jsonb(s) - 'server_name')::text FROM pii_audit.subject_access('7') s WHERE event_id <= $1"
}

for version in "${!released[@]}"; do
    commit=${released[$version]}
    if ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
        echo "not ok - released $version: commit $commit is not in this repository's history (a shallow clone?)"
        exit 1
    fi
    old_build=$build_dir/released-$version
    if [[ ! -f "$old_build/pii_audit.so" ]]; then
        echo "# building the released $version from $commit"
        rm -rf "$old_build"
        mkdir -p "$old_build/src"
        git -C "$repo" archive "$commit" | tar -x -C "$old_build/src"
        cmake -S "$old_build/src" -B "$old_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DPII_AUDIT_BUILD_ANALYSIS=OFF >"$old_build/configure.log" 2>&1 ||
            { cat "$old_build/configure.log"; exit 1; }
        cmake --build "$old_build" --target pii_audit -j2 >"$old_build/build.log" 2>&1 ||
            { tail -50 "$old_build/build.log"; exit 1; }
    fi
    # The library, control file and scripts of the release, where PostgreSQL looks for them.
    rm -f "$(pg_config --sharedir)"/extension/pii_audit[.-]*
    install -m 755 "$old_build/pii_audit.so" "$(pg_config --pkglibdir)/"
    install -m 644 "$old_build/pii_audit.control" "$old_build"/src/sql/*.sql \
        "$(pg_config --sharedir)/extension/"

    pgc_destroy "$dir" >/dev/null 2>&1 || true
    pgc_init "$dir" auto "shared_preload_libraries = 'pii_audit'" "pii_audit.flush_interval = 50" >/dev/null
    pgc_start "$dir" >/dev/null
    q -d postgres -c 'CREATE EXTENSION pii_audit'
    check "$version: installed" "$version" "$(q -d postgres -c "SELECT extversion FROM pg_extension WHERE extname = 'pii_audit'")"
    q -d postgres <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);
INSERT INTO customers SELECT g, 'name ' || g, '138' || g FROM generate_series(1, 50) g;
SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
CREATE ROLE clerk LOGIN;
GRANT SELECT (id, name) ON customers TO clerk;
SQL
    for i in 1 2 3 4 5 6 7 8; do q -d postgres -c "SELECT name FROM customers WHERE id = $i" >/dev/null; done
    q -d postgres -c "SET pii_audit.end_user = 'teller-9'" -c 'SELECT name, phone FROM customers WHERE id BETWEEN 5 AND 9' >/dev/null
    q -d postgres -U clerk -c 'SELECT phone FROM customers WHERE id = 7' >/dev/null 2>&1 || true
    q -d postgres -c 'SELECT name FROM customers WHERE id = 1 / 0' >/dev/null 2>&1 || true
    wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 30 || true
    pgc_stop "$dir" fast >/dev/null  # drains the queue into the old trail
    pgc_start "$dir" >/dev/null
    old_max=$(q -d postgres -c 'SELECT max(event_id) FROM pii_audit.events')
    before=$(snapshot "$old_max")
    old_count=$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_id <= $old_max")
    old_reads=$(q -d postgres -c "SELECT count(*) FROM pii_audit.subject_access('7')")
    check "$version: the old trail holds reads of subject 7 (one row, several rows)" t \
        "$(q -d postgres -c "SELECT count(*) >= 2 FROM pii_audit.subject_access('7')")"

    pgc_stop "$dir" fast >/dev/null
    reinstall_current
    pgc_start "$dir" >/dev/null
    # This build with the old SQL: it stores events (without server names, unchained) until
    # the update. The same session's reads after the update get a new session row with the name.
    q -d postgres -c 'SELECT name FROM customers WHERE id = 2' >/dev/null
    wait_until postgres "SELECT count(*) > $old_count FROM pii_audit.events" 30 ||
        check "$version: this build stores events before the update" "stored" "waiting"
    q -d postgres -c 'ALTER EXTENSION pii_audit UPDATE'
    check "$version -> $current: updated" "$current" "$(q -d postgres -c "SELECT extversion FROM pg_extension WHERE extname = 'pii_audit'")"
    after=$(snapshot "$old_max")
    if [[ "$before" == "$after" ]]; then
        check "$version -> $current: every old event is in every view, unchanged" ok ok
    else
        check "$version -> $current: every old event is in every view, unchanged" "no difference" \
            "$(diff <(echo "$before") <(echo "$after") | head -20)"
    fi
    check "$version -> $current: events kept their count" "$old_count" \
        "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE event_id <= $old_max")"
    q -d postgres -c 'SELECT name FROM customers WHERE id = 7' >/dev/null
    if wait_until postgres "SELECT count(*) = $old_reads + 1 FROM pii_audit.subject_access('7')" 30; then
        check "$version -> $current: subject_access finds old and new reads" ok ok
    else
        check "$version -> $current: subject_access finds old and new reads" "$((old_reads + 1))" \
            "$(q -d postgres -c "SELECT count(*) FROM pii_audit.subject_access('7')")"
    fi
    check "$version -> $current: old events have no server name, new ones this server's" "0|t" \
        "$(q -d postgres -c "SELECT count(server_name) FILTER (WHERE event_id <= $old_max), bool_and(server_name = pii_audit._server_name()) FILTER (WHERE event_id > $old_max) FROM pii_audit.events")"
    check "$version -> $current: subject_access and breach_scope name no server for old reads, this one for the new" \
        "0|t|t" \
        "$(q -d postgres -c "SELECT count(server_name) FILTER (WHERE event_id <= $old_max), bool_and(server_name = pii_audit._server_name()) FILTER (WHERE event_id > $old_max), (SELECT bool_and(server_names <@ ARRAY[pii_audit._server_name()]) FROM pii_audit.breach_scope(current_user, '-infinity', 'infinity')) FROM pii_audit.subject_access('7')")"
    check "$version -> $current: new events follow, ids gapless" "t" \
        "$(q -d postgres -c "SELECT min(event_id) = 1 AND max(event_id) = count(*) AND max(event_id) > $old_max FROM pii_audit.events")"
    # Tamper evidence starts with the first batch stored after the update: what came before
    # is reported unchained (not as tampering), what came after verifies.
    check "$version -> $current: verify_trail reports the old events unchained and verifies the rest" \
        "unchained|1 ok" \
        "$(q -d postgres -c "SELECT string_agg(problem || CASE WHEN problem = 'unchained' THEN '|' || event_id ELSE '' END, ' ' ORDER BY problem DESC) FROM pii_audit.verify_trail(1, 9223372036854775807)")"
    check "$version -> $current: the chain begins after the old events" t \
        "$(q -d postgres -c "SELECT min(first_event_id) > $old_max FROM pii_audit.trail_digests")"
    check "$version -> $current: the new read has a higher id than every old event" "t" \
        "$(q -d postgres -c "SELECT min(event_id) > $old_max FROM pii_audit.subject_access('7') WHERE event_time > pg_postmaster_start_time()")"
    check "$version -> $current: no error in the server log" "" \
        "$(pgc_log "$dir" | grep -E 'ERROR|PANIC|TRAP' | grep -v 'division by zero\|permission denied for table customers\|STATEMENT' | head -3)"
done

echo "# upgrade: $passes passed, $failures failed"
if ((failures > 0)); then
    pgc_log "$dir" | tail -40
    exit 1
fi
