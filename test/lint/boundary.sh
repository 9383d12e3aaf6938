#!/usr/bin/env bash
# boundary.sh: fails if a crossing between C++ and PostgreSQL is written by hand instead of
# through extension/boundary.h (PG_TRY and friends, sigsetjmp) or include/pii_audit/cpp_call.h
# (try/catch in code PostgreSQL calls). A C++ try inside a cpp_call body is allowed when the
# line says so with the comment "inside cpp_call".
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
status=0
while IFS= read -r hit; do
    echo "boundary: hand-written PostgreSQL error handling (use extension/boundary.h): $hit"
    status=1
done < <(grep -rnE 'PG_TRY|PG_CATCH|PG_FINALLY|PG_END_TRY|sigsetjmp|PG_exception_stack' \
             extension --include='*.cpp' --include='*.h' | grep -v '^extension/boundary\.h:' || true)
while IFS= read -r hit; do
    echo "boundary: hand-written C++ exception handling (use cpp_call, or mark it \"inside cpp_call\"): $hit"
    status=1
done < <(grep -rnE '(^|[^a-z_])try[[:space:]]*\{|catch[[:space:]]*\(' extension --include='*.cpp' --include='*.h' |
             grep -v 'inside cpp_call' || true)
if [[ $status == 0 ]]; then echo "boundary: every crossing goes through boundary.h / cpp_call.h"; fi
exit $status
