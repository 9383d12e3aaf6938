#!/usr/bin/env bash
# compare.sh A_RESULTS B_RESULTS ALLOW_LIST UNEXPECTED_OUT ALLOWED_OUT
#
# Compares A_RESULTS/*.out (plain server) with B_RESULTS/*.out (pii_audit) file by file. Every
# line that only one side has (the `<` and `>` lines of diff) must match an entry of ALLOW_LIST
# for that test and side; see allowed-diffs.txt for the format. Writes the unified diffs of the
# files with unmatched lines, followed by those lines, to UNEXPECTED_OUT, and the diffs that are
# fully allowed to ALLOWED_OUT. Prints a summary; exits 1 when something is not allowed (or the
# allow-list is malformed), 0 otherwise.
set -euo pipefail

if [[ $# -ne 5 ]]; then
    echo "usage: $0 A_RESULTS B_RESULTS ALLOW_LIST UNEXPECTED_OUT ALLOWED_OUT" >&2
    exit 2
fi
a=$1 b=$2 allow=$3 unexpected=$4 allowed=$5
: >"$unexpected"
: >"$allowed"

# Check the allow-list's form once: "TEST SIDE REGEX", SIDE + or -, and no entry without a
# comment saying why (an entry must follow a comment line or another entry of its group).
awk '
    /^[[:space:]]*$/ { prev = "blank"; next }
    /^#/ { prev = "comment"; next }
    {
        if (NF < 3 || ($2 != "+" && $2 != "-")) {
            printf "%s:%d: not \"TEST SIDE REGEX\" (SIDE is + or -): %s\n", FILENAME, NR, $0; bad = 1
        } else if (prev == "blank" || prev == "") {
            printf "%s:%d: entry without a comment saying why it is acceptable: %s\n", FILENAME, NR, $0; bad = 1
        }
        prev = "entry"
    }
    END { exit bad }
' "$allow" >&2 || exit 1

declare -A used=()
files=$( (cd "$a" && ls -- *.out; cd "$OLDPWD" && cd "$b" && ls -- *.out) | sort -u)
n_same=0 n_allowed=0 n_bad=0
bad_tests=() allowed_tests=()
for f in $files; do
    test=${f%.out}
    if [[ ! -f "$a/$f" || ! -f "$b/$f" ]]; then
        printf '==== %s: only in %s\n' "$test" "$([[ -f "$a/$f" ]] && echo A || echo B)" >>"$unexpected"
        bad_tests+=("$test")
        n_bad=$((n_bad + 1))
        continue
    fi
    if cmp -s "$a/$f" "$b/$f"; then
        n_same=$((n_same + 1))
        continue
    fi
    # The changed lines, as "SIDE<TAB>line", checked against this test's entries and the "*"
    # entries. Output: "U<TAB>SIDE<TAB>line" for an unmatched line, "E<TAB>n" for each entry
    # (line number in the allow-list) that matched something.
    verdict=$({ diff "$a/$f" "$b/$f" || true; } | awk -v test="$test" -v allow="$allow" '
        BEGIN {
            while ((getline line < allow) > 0) {
                ln++
                if (line ~ /^#/ || line ~ /^[[:space:]]*$/) continue
                split(line, w, /[[:space:]]+/)
                if (w[1] != test && w[1] != "*") continue
                re = line
                sub(/^[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+/, "", re)
                n++; side[n] = w[2]; rx[n] = re; where[n] = ln
            }
        }
        /^[<>] / {
            s = substr($0, 1, 1) == "<" ? "-" : "+"
            l = substr($0, 3)
            ok = 0
            for (i = 1; i <= n; i++)
                if (side[i] == s && l ~ rx[i]) { ok = 1; hit[where[i]] = 1; break }
            if (!ok) printf "U\t%s\t%s\n", s, l
        }
        /^[<>]$/ {   # an empty line
            s = $0 == "<" ? "-" : "+"
            ok = 0
            for (i = 1; i <= n; i++)
                if (side[i] == s && "" ~ rx[i]) { ok = 1; hit[where[i]] = 1; break }
            if (!ok) printf "U\t%s\t\n", s
        }
        END { for (k in hit) printf "E\t%s\n", k }
    ')
    while IFS=$'\t' read -r kind rest; do
        [[ "$kind" == E ]] && used[$rest]=1
    done <<<"$verdict"
    if grep -q '^U' <<<"$verdict"; then
        bad_tests+=("$test")
        n_bad=$((n_bad + 1))
        {
            printf '==== %s: lines no allow-list entry explains (- only in A, + only in B):\n' "$test"
            grep '^U' <<<"$verdict" | cut -f2- | sed 's/\t/ /' | head -n 40 || true
            printf -- '---- diff -u A B of %s:\n' "$test"
            diff -u --label "a/$f" --label "b/$f" "$a/$f" "$b/$f" | head -n 300 || true
            echo
        } >>"$unexpected"
    else
        allowed_tests+=("$test")
        n_allowed=$((n_allowed + 1))
        diff -u --label "a/$f" --label "b/$f" "$a/$f" "$b/$f" >>"$allowed" || true
    fi
done

echo "compare: $n_same result files identical, $n_allowed differ only as allowed${allowed_tests[*]:+ (${allowed_tests[*]})}, $n_bad differ otherwise${bad_tests[*]:+ (${bad_tests[*]})}"
# Entries that matched nothing: harmless, but probably out of date (the difference is gone).
awk '!/^#/ && !/^[[:space:]]*$/ { print NR "\t" $0 }' "$allow" | while IFS=$'\t' read -r ln entry; do
    [[ -n "${used[$ln]:-}" ]] || echo "compare: note: allow-list entry at line $ln matched nothing: $entry"
done
((n_bad == 0))
