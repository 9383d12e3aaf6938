#!/usr/bin/env bash
# Labelled insider evaluation: generate an organisation, replay it through pii-audit-score,
# score the alerts against the answer key, and measure speed and state size.
#
#   bench/insider/run.sh BUILD_DIR [SEED] [-- insider-gen --set options...]
#
# BUILD_DIR holds pii-audit-score, insider-gen, insider-eval and insider-speed (any
# subdirectory). Work files go to ${WORK:-/tmp/pii_audit_insider}.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [SEED] [-- generator options]}
seed=${2:-1}
shift $(( $# >= 2 ? 2 : 1 ))
[[ ${1:-} == -- ]] && shift
work=${WORK:-/tmp/pii_audit_insider}
mkdir -p "$work"
find_tool() { find "$build" -type f -name "$1" -perm -u+x | head -1; }
gen=$(find_tool insider-gen); score=$(find_tool pii-audit-score)
eval_tool=$(find_tool insider-eval); speed=$(find_tool insider-speed)
for t in gen score eval_tool speed; do
  [[ -n ${!t} ]] || { echo "run.sh: $t not built under $build" >&2; exit 1; }
done

events=$work/events-$seed.jsonl key=$work/key-$seed.tsv alerts=$work/alerts-$seed.jsonl
"$gen" --seed "$seed" --out "$events" --key "$key" "$@"
echo "== seed $seed $*: $(wc -l < "$events") events"
"$score" --replay "$events" --utc-offset 480 --stats > "$alerts" 2> "$work/stats-$seed.txt"
"$eval_tool" --key "$key" --alerts "$alerts"
echo "== replay (JSON parsing + scoring, one thread): $(cat "$work/stats-$seed.txt")"
echo "== scorer alone (events preloaded in memory): $("$speed" "$events" --utc-offset 480)"
