#!/usr/bin/env bash
# The grid of organisations (issue 15): generates every organisation of grid.tsv, replays it
# through pii-audit-score, scores the alerts, and prints one table row per organisation and the
# worst case of each half (tune, hold).
#
#   bench/insider/grid.sh BUILD_DIR [NAME...]
#
# SCORE=path/to/pii-audit-score compares another build of the scorer on the same organisations;
# JOBS (default 2) organisations run at a time; work files go to ${WORK:-/tmp/pii_audit_grid}.
# EVAL_ONLY=1 scores the alerts and answer keys kept in WORK by an earlier run again (after a
# change to insider-eval) without generating or replaying anything.
# SETS="name=value ..." adds insider-gen --set options to every organisation (after its own):
# SETS=nanning_same_path=1 runs the grid with the Nanning clerk on his colleagues' screen.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: grid.sh BUILD_DIR [NAME...]}
shift
work=${WORK:-/tmp/pii_audit_grid}
jobs=${JOBS:-2}
mkdir -p "$work"
find_tool() { find "$build" -type f -name "$1" -perm -u+x | head -1; }
gen=$(find_tool insider-gen); eval_tool=$(find_tool insider-eval)
score=${SCORE:-$(find_tool pii-audit-score)}
for t in gen score eval_tool; do
  [[ -n ${!t} && -x ${!t} ]] || { echo "grid.sh: $t not found under $build" >&2; exit 1; }
done

rows=$(grep -v '^#' "$here/grid.tsv" | grep -v '^[[:space:]]*$')
if (( $# > 0 )); then
  rows=$(for n in "$@"; do awk -F'\t' -v n="$n" '$1 == n' <<<"$rows"; done)
fi
[[ -n $rows ]] || { echo "grid.sh: no organisation selected" >&2; exit 1; }

run_one() {
  local name=$1 seed=$3 days=$4 settings=$5 sets=()
  for s in $settings ${SETS:-}; do sets+=(--set "$s"); done
  local ev=$work/$name.jsonl key=$work/$name.key al=$work/$name.alerts
  if [[ ${EVAL_ONLY:-0} == 1 ]]; then
    "$eval_tool" --key "$key" --alerts "$al" --summary "$name" --list-false > "$work/$name.eval"
    return
  fi
  "$gen" --seed "$seed" --days "$days" --out "$ev" --key "$key" "${sets[@]}"
  "$score" --replay "$ev" --utc-offset 480 > "$al"
  "$eval_tool" --key "$key" --alerts "$al" --summary "$name" --list-false > "$work/$name.eval"
  rm -f "$ev"
}
export -f run_one
export gen score eval_tool work EVAL_ONLY SETS
# Tabs separate the columns of grid.tsv; the settings column holds spaces.
tr '\t' '\037' <<<"$rows" | xargs -d '\n' -P "$jobs" -I{} bash -c \
  'IFS=$'"'"'\037'"'"' read -r a b c d e <<<"$1"; run_one "$a" "$b" "$c" "$d" "$e"' _ {}

echo "| org | half | detected | false / 1,000 actor-days | precision | Nanning clerk | hidden in team run | other scenarios: records before first alert |"
echo "|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r name half _; do
  line=$(grep '^summary' "$work/$name.eval")
  IFS=$'\t' read -r _ _ det total false ad per prec scen <<<"$line"
  nan=-; hid=; other=
  for s in $scen; do
    case $s in
      nanning_clerk=*) nan=${s#*=} ;;
      hidden_*) hid+="${hid:+, }${s%%=*} ${s#*=}" ;;
      *) other+="${other:+, }${s%%=*} ${s#*=}" ;;
    esac
  done
  echo "| $name | $half | $det/$total | $per | $prec | $nan | ${hid:--} | $other |"
done <<<"$rows"
echo
for half in tune hold; do
  while IFS=$'\t' read -r name h _; do
    if [[ $h == "$half" ]]; then grep '^summary' "$work/$name.eval"; fi
  done <<<"$rows" | awk -F'\t' -v half="$half" '
    { n++; miss += $4 - $3; if ($7 > fa) { fa = $7; fo = $2 } if (min_p == "" || $8 < min_p) { min_p = $8; po = $2 }
      split($9, sc, " ")
      for (i in sc) if (sc[i] ~ /^nanning_clerk=/) {
        v = substr(sc[i], index(sc[i], "=") + 1)
        if (v ~ /^MISS/) { ns = 2; no = $2 } else { split(v, bt, "/"); r = bt[1] / bt[2]; if (r > ns) { ns = r; no = $2; nv = v } }
      } }
    END { if (n == 0) exit
      printf "worst of %s (%d organisations): scenarios missed %d; false alerts / 1,000 actor-days %.2f (%s); precision %.3f (%s); Nanning clerk %s (%.0f%% of his codes, %s)\n",
             half, n, miss, fa, fo, min_p, po, (ns > 1 ? "MISSED" : nv), (ns > 1 ? 100 : 100 * ns), no }'
done
