#!/usr/bin/env bash
# relp_ack.sh: pii-audit-export's RELP output counts an event as delivered only once the
# receiver answered its frame "200 OK", and sends everything unanswered again after a
# reconnect. rsyslog shows the dangerous cases only when it restarts at the right moment (the
# shipper test saw 70 of 44,553 events lost in about one run of four), so here a scripted RELP
# receiver (test/server/relp_receiver.py) makes each of them happen on purpose:
#   1. it answers 20 of 60 frames, then sends rsyslog's "serverclose" hint and closes (what
#      imrelp does when rsyslog stops): librelp's session close returned without an error
#      report, and the shipper counted all 60 as delivered;
#   2. the same, closing the connection without the hint (a receiver that dies);
#   3. it answers 40 frames, refuses the 41st ("500 ..."): the error is reported, and the
#      shipper resends from the 41st, not from an estimate before it;
#   4. it answers "open" and then nothing: after --timeout the shipper gives up on the
#      connection, and delivers everything once the receiver answers again;
#   5. it closes an idle session between two batches ("serverclose" while idle): the next
#      batch goes to a new session, nothing lost.
# Each case checks the checkpoint against what the receiver answered and that the receiver's
# answered lines hold every event, in order, with no gap.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
# shellcheck source=checks.sh
source "$repo/test/server/checks.sh"

bindir=$(pgc__bindir)
shipper=${SHIPPER:-$bindir/pii-audit-export}  # SHIPPER: another build, to compare
[[ -x "$shipper" ]] || { echo "relp_ack.sh: missing $shipper; install the build" >&2; exit 1; }
receiver_py="$repo/test/server/relp_receiver.py"

siem_workdir relp
rcv_pid=
ship=
trap 'shipper_cleanup RELP_KEEP' EXIT

siem_cluster
conn="host=$sock port=$port user=siem dbname=postgres"

reads() {  # reads N: N labelled lookups, one event each; waits until they are stored
    local i
    for ((i = 1; i <= $1; i++)); do echo "SELECT name FROM customers WHERE id = $i;"; done |
        q -d postgres >/dev/null
    wait_until postgres "SELECT events_enqueued = events_persisted FROM pii_audit.status" 60
}
last_event() { q -d postgres -c 'SELECT coalesce(max(event_id), 0) FROM pii_audit.events'; }
cp_event() { awk '$1 == "event_id" { print $2 }' "$1" 2>/dev/null || echo 0; }
# The event ids the receiver answered, in the order it received them.
answered_ids() { sed -n 's/.*\[pii_audit@32473 event_id="\([0-9]*\)".*/\1/p' "$1"; }

receiver_start() {  # receiver_start NAME PLAN...
    local name=$1
    shift
    rm -f "$work/$name.port"
    python3 "$receiver_py" "$work/$name.port" "$work/$name.log" "$@" 2>"$work/$name.rcv.err" &
    rcv_pid=$!
    local deadline=$((SECONDS + 20))
    until [[ -s "$work/$name.port" ]]; do
        ((SECONDS < deadline)) || { echo "relp_receiver did not start" >&2; exit 1; }
        sleep 0.1
    done
    rport=$(cat "$work/$name.port")
}
receiver_stop() { kill "$rcv_pid" 2>/dev/null; wait "$rcv_pid" 2>/dev/null || true; rcv_pid=; }

# gapless NAME FIRST LAST FILE: the answered ids run from FIRST to LAST, each after the one
# before it or (a replay) going back no further than what was answered before.
gapless() {
    answered_ids "$4" | awk -v first="$2" -v last="$3" '
        { if ($1 > top + 1 && !(NR == 1 && $1 == first)) { bad = bad " gap before " $1 }
          if ($1 > top) top = $1; seen[$1] = 1 }
        END { for (k = first; k <= last; k++) if (!(k in seen)) { missing++ }
              printf "%d missing%s\n", missing + 0, bad }'
}

# once CASE PLAN READS [ARGS...]: READS new events, a receiver with PLAN, then one --once run
# after the previous case's events; sets first and last (the events it must deliver).
once() {
    local name=$1 plan=$2 n=$3
    shift 3
    first=$(($(last_event) + 1))
    reads "$n"
    last=$(last_event)
    receiver_start "$name" "$plan"
    rc=0
    timeout 120 "$shipper" -d "$conn" -o "relp://127.0.0.1:$rport" --format rfc5424 --once \
        --checkpoint "$work/$name.cp" --start-after $((first - 1)) --retry-max 0.5 --timeout "${wait_s:-5}" \
        2>"$work/$name.err" || rc=$?
    receiver_stop
}
delivered() {  # delivered TITLE NAME: the common checks of a --once run
    check "$1: --once exits 0" 0 "$rc"
    check "$1: the checkpoint reaches the last event" "yes" \
        "$( (($(cp_event "$work/$2.cp") >= last)) && echo yes || echo "no: $(cp_event "$work/$2.cp") < $last")"
    check "$1: every event answered, in order" "0 missing" \
        "$(gapless "$2" "$first" "$(cp_event "$work/$2.cp")" "$work/$2.log")"
}
no_duplicates() {  # no_duplicates TITLE NAME: answered frame by frame, so replays repeat nothing
    check "$1: resent from the first unanswered event, none twice" "0" \
        "$(answered_ids "$work/$2.log" | sort -n | uniq -d | wc -l)"
}

# ---- 1. serverclose in the middle of a batch (fewer frames than librelp's window) ----------------
once c1 ack:20 60
delivered "serverclose mid-batch" c1
contains "serverclose mid-batch: the break is reported" "will be sent again" "$(cat "$work/c1.err")"
no_duplicates "serverclose mid-batch" c1

# ---- 2. the receiver closes the connection without a word ---------------------------------------
once c2 eof:20 60
delivered "connection closed mid-batch" c2
contains "connection closed mid-batch: the break is reported" "will be sent again" "$(cat "$work/c2.err")"
no_duplicates "connection closed mid-batch" c2

# ---- 3. a frame refused with 500 -----------------------------------------------------------------
once c3 nak:40 200
delivered "refused frame" c3
contains "refused frame: the receiver's answer is reported" "500 test receiver refuses this frame" "$(cat "$work/c3.err")"
no_duplicates "refused frame" c3

# ---- 4. a receiver that answers nothing ----------------------------------------------------------
wait_s=2 once c4 mute 50
delivered "silent receiver" c4
contains "silent receiver: the timeout is reported" "no answer" "$(cat "$work/c4.err")"

# ---- 5. serverclose while idle, between two batches ---------------------------------------------
# ack:1000 answers everything of the first batch, then closes the session once it is quiet.
first=$(($(last_event) + 1))
receiver_start c5 ack:1000
reads 10
"$shipper" -d "$conn" -o "relp://127.0.0.1:$rport" --format rfc5424 --poll-interval 0.2 \
    --checkpoint "$work/c5.cp" --start-after $((first - 1)) --retry-max 0.5 --timeout 5 2>"$work/c5.err" &
ship=$!
deadline=$((SECONDS + 60))
until (($(cp_event "$work/c5.cp") >= first + 9)) || ((SECONDS > deadline)); do sleep 0.2; done
sleep 1.5  # the receiver closes the idle session
reads 20
last=$(last_event)
until (($(cp_event "$work/c5.cp") >= last)) || ((SECONDS > deadline)); do sleep 0.2; done
kill -TERM "$ship"
rc=0
wait "$ship" || rc=$?
ship=
receiver_stop
check "idle serverclose: SIGTERM stops it cleanly" 0 "$rc"
check "idle serverclose: the checkpoint reaches the last event" "yes" \
    "$( (($(cp_event "$work/c5.cp") >= last)) && echo yes || echo "no: $(cp_event "$work/c5.cp") < $last")"
check "idle serverclose: every event answered, in order" "0 missing" \
    "$(gapless c5 "$first" "$(cp_event "$work/c5.cp")" "$work/c5.log")"
check "idle serverclose: a new session for the second batch" "yes" \
    "$( (($(grep -c 'connection' "$work/c5.rcv.err") >= 2)) && echo yes || echo no)"

echo "# $passes passed, $failures failed"
((failures == 0))
