# checks.sh: what the server tests share (sourced after scripts/pgcluster.sh, with $dir set to
# the test's cluster directory). Counts passes and failures in $passes and $failures.
passes=0
failures=0

check() {  # check NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then
        echo "ok - $1"
        passes=$((passes + 1))
    else
        echo "not ok - $1: expected [$2], got [$3]"
        failures=$((failures + 1))
    fi
}

contains() {  # contains NAME NEEDLE HAYSTACK
    if [[ "$3" == *"$2"* ]]; then
        echo "ok - $1"
        passes=$((passes + 1))
    else
        echo "not ok - $1: [$2] not in [$3]"
        failures=$((failures + 1))
    fi
}

q() { pgc_psql "$dir" -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }

wait_until() {  # wait_until DB SQL-returning-t [seconds]
    local deadline=$((SECONDS + ${3:-30}))
    while ((SECONDS < deadline)); do
        [[ "$(q -d "$1" -c "$2" 2>/dev/null)" == t ]] && return 0
        sleep 0.2
    done
    return 1
}
