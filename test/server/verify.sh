#!/usr/bin/env bash
# verify.sh BUILD_DIR: the digest records pii-audit-export puts in its stream, and
# `pii-audit-export --verify FILE`, against a real cluster:
#   1. shipped to a file in each format with --digest-every 5: the file holds export_digests()'
#      records for every batch that holds a multiple of 5, each right after its batch's last
#      event; OCSF digest records are valid against the pinned OCSF schema;
#   2. --verify on each file (an officer's connection): the untouched trail matches, exit 0;
#   3. bad input: a damaged digest record (its line named, exit 1), a digest changed in the
#      file (the mismatch named, exit 1), a file without digest records, a role that may not
#      verify, --verify with --output (exit 2);
#   4. a superuser rewrites events after one and recomputes the whole chain
#      (test/server/attacker.sql): verify_trail alone finds nothing, --verify with the file
#      the shipper wrote before finds it (external_mismatch, exit 1).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:?usage: verify.sh BUILD_DIR}
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

bindir=$(pgc__bindir)
shipper="$bindir/pii-audit-export"
validator="$build/test/pii_audit_ocsf_validate"
for need in "$shipper" "$validator"; do
    [[ -x "$need" ]] || { echo "verify.sh: missing $need (build and install first)" >&2; exit 1; }
done

siem_workdir verify
trap 'siem_remove VERIFY_KEEP' EXIT
siem_cluster 20
q -d postgres -c "CREATE ROLE auditor LOGIN IN ROLE pii_audit_officer"
as_siem="host=$sock port=$port user=siem dbname=postgres"
as_auditor="host=$sock port=$port user=auditor dbname=postgres"
settled() {
    wait_until postgres "SELECT events_persisted = events_enqueued FROM pii_audit.status" 30 ||
        { echo "not ok - the worker did not store the events"; exit 1; }
}
# Reads by three end users, in several batches (the worker flushes every 20 ms).
for round in 1 2 3 4 5 6; do
    for user in 1 2 3; do
        q -d postgres -c "SET pii_audit.end_user = 'clerk-$user'" \
            -c "SELECT name FROM customers WHERE id = $round$user" \
            -c "SELECT name FROM customers WHERE id = $user" >/dev/null
    done
    sleep 0.1
done
settled

# ---- 1. digest records in each format ------------------------------------------------------------
for format in json ocsf cef leef rfc5424; do
    rc=0
    timeout 120 "$shipper" -d "$as_siem" -o "file:$work/$format.log" --format "$format" --once \
        --digest-every 5 --checkpoint "$work/$format.cp" 2>"$work/$format.err" || rc=$?
    check "$format: shipped" 0 "$rc"
    last=$(awk '$1 == "event_id" { print $2 }' "$work/$format.cp")
    q -d postgres -U siem -c "SELECT line FROM pii_audit.export_digests(0, 5, '$format') WHERE event_id <= $last ORDER BY event_id" >"$work/$format.expected"
    grep -Fxf "$work/$format.expected" "$work/$format.log" >"$work/$format.got" || true
    check "$format: every digest record of export_digests(), once, in order ($(wc -l <"$work/$format.expected") records)" \
        "same" "$(cmp -s "$work/$format.expected" "$work/$format.got" && echo same || echo differs)"
    check "$format: the events too, around them" "$last" "$(($(wc -l <"$work/$format.log") - $(wc -l <"$work/$format.got")))"
done
check "several digest records in the stream" "yes" "$( (($(wc -l <"$work/json.got") >= 4)) && echo yes || echo no)"
# Each record right after the last event of its batch: in rfc5424, the event ids run
# e, e+1, ... and a digest record for batch [F, L] comes after event L, before event L + 1.
check "rfc5424: each digest record follows the last event of its batch" "0" \
    "$(sed 's/^<[0-9]*>1 [^ ]* [^ ]* pii_audit [^ ]* \([a-z_]*\) \[pii_audit@32473 event_id="\([0-9]*\)".*/\1 \2/' "$work/rfc5424.log" |
        awk '$1 == "digest" { if (prev != $2) bad++; next } { prev = $2 } END { print bad + 0 }')"
out=$("$validator" <"$work/ocsf.log" 2>&1 || true)
check "ocsf: every line valid against OCSF 1.3.0, digest records included" \
    "$(wc -l <"$work/ocsf.log" | tr -d ' ') events valid, 0 not" "$(tail -n 1 <<<"$out")"
contains "ocsf: digest records are Event Log Activity (1008)" '"class_uid":1008' "$(tr -d ' ' <"$work/ocsf.got" | sed -n 1p)"

# ---- 2. --verify, untouched trail ----------------------------------------------------------------
for format in json ocsf cef leef rfc5424; do
    rc=0
    out=$("$shipper" -d "$as_auditor" --verify "$work/$format.log" 2>&1) || rc=$?
    check "$format: --verify on the untouched trail exits 0" 0 "$rc"
    contains "$format: --verify says it matches" "digest records held outside match" "$out"
done

# ---- 3. bad input --------------------------------------------------------------------------------
# A damaged digest record: a digit cut from its digest.
awk 'BEGIN { done = 0 } !done && /pii_audit\.digests/ { sub(/"digest" : "[0-9a-f]/, "\"digest\" : \""); done = 1 } { print }' \
    "$work/json.log" >"$work/damaged.log"
line=$(grep -n -m 1 'pii_audit\.digests' "$work/damaged.log" | cut -d: -f1)
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/damaged.log" 2>&1) || rc=$?
check "damaged record: exit 1" 1 "$rc"
contains "damaged record: the line is named" "damaged.log, line $line: a damaged digest record: the digest" "$out"
contains "damaged record: says what is wrong" "is not 64 lowercase hex digits" "$out"
# A damaged CEF record: its event id.
awk 'BEGIN { done = 0 } !done && /\|digest\|/ { sub(/ cn1=[0-9]+/, " cn1=12x"); done = 1 } { print }' "$work/cef.log" >"$work/damaged.cef"
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/damaged.cef" 2>&1) || rc=$?
check "damaged CEF record: exit 1" 1 "$rc"
contains "damaged CEF record: says what is wrong" "the event id '12x' is not a number" "$out"
# A digest replaced by another valid one: the trail no longer matches the file.
second=$(sed -n '2p' "$work/cef.expected" | sed 's/.* cs1=\([0-9a-f]*\).*/\1/')
third=$(sed -n '3p' "$work/cef.expected" | sed 's/.* cs1=\([0-9a-f]*\).*/\1/')
third_id=$(sed -n '3p' "$work/cef.expected" | sed 's/.* cn1=\([0-9]*\).*/\1/')
sed "s/ cs1=$third/ cs1=$second/" "$work/cef.log" >"$work/changed.cef"
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/changed.cef" 2>&1) || rc=$?
check "changed digest: exit 1" 1 "$rc"
contains "changed digest: the mismatch is named" "external_mismatch" "$out"
contains "changed digest: at that digest" "$third_id" "$(grep external_mismatch <<<"$out")"
# A file without digest records.
timeout 60 "$shipper" -d "$as_siem" -o "file:$work/plain.log" --format json --once --digest-every 0 \
    --checkpoint "$work/plain.cp" 2>/dev/null
check "--digest-every 0: no digest records" 0 "$(grep -c 'pii_audit\.digests' "$work/plain.log" || true)"
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/plain.log" 2>&1) || rc=$?
check "no digest records: exit 1" 1 "$rc"
contains "no digest records: says so" "holds no digest record" "$out"
rc=0
out=$("$shipper" -d "$as_siem" --verify "$work/json.log" 2>&1) || rc=$?
check "a SIEM role may not verify: exit 1" 1 "$rc"
contains "a SIEM role may not verify: says who may" "pii_audit_officer" "$out"
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/json.log" -o stdout 2>&1) || rc=$?
check "--verify with --output: exit 2" 2 "$rc"
contains "--verify with --output: says why" "ships nothing: drop --output" "$out"
rc=0
out=$("$shipper" -d "$as_auditor" --verify "$work/nowhere.log" 2>&1) || rc=$?
check "a missing file: exit 1" 1 "$rc"
contains "a missing file: named" "cannot read $work/nowhere.log" "$out"

# ---- 4. a superuser rewrites events and recomputes the chain -----------------------------------
upto=$(q -d postgres -c "SELECT max(last_event_id) FROM pii_audit.trail_digests")
q -d postgres -f "$repo/test/server/attacker.sql" >/dev/null
framed=$(q -d postgres -c "SELECT min(event_id) FROM pii_audit.events WHERE end_user = 'clerk-3'")
q -d postgres <<SQL
ALTER TABLE pii_audit.trail_digests DISABLE TRIGGER trail_digests_append_only;
ALTER TABLE pii_audit.trail_groups DISABLE TRIGGER trail_append_only;
UPDATE pii_audit.trail_groups SET session_id = (SELECT session_id FROM pii_audit.trail_sessions WHERE end_user = 'clerk-1' LIMIT 1)
WHERE session_id IN (SELECT session_id FROM pii_audit.trail_sessions WHERE end_user = 'clerk-3');
CALL attacker.rechain($framed, $upto);
SQL
check "the rewrite: clerk-3's reads now look like clerk-1's" 0 \
    "$(q -d postgres -c "SELECT count(*) FROM pii_audit.events WHERE end_user = 'clerk-3'")"
# (Up to the rewrite's end: batches the worker stores later, logins included, still chain to the
# digest it remembers, which the attacker replaced; tamper.sh checks the same span.)
check "the recomputed chain verifies by itself" "ok" \
    "$(q -d postgres -U auditor -c "SELECT string_agg(problem, ',') FROM pii_audit.verify_trail(1, $upto)")"
for format in cef ocsf; do
    rc=0
    out=$("$shipper" -d "$as_auditor" --verify "$work/$format.log" 2>&1) || rc=$?
    check "rechained trail, $format file: --verify exits 1" 1 "$rc"
    contains "rechained trail, $format file: external_mismatch named" ": external_mismatch: " "$out"
    first=$(grep -m 1 'external_mismatch' <<<"$out" | sed 's/^event \([0-9]*\):.*/\1/')
    check "rechained trail, $format file: the span named begins at or before the rewrite" "yes" \
        "$( ((first <= framed)) && echo yes || echo "no: $first > $framed")"
done

echo "# $passes passed, $failures failed"
((failures == 0))
