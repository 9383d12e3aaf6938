#!/usr/bin/env bash
# test.sh: THE command that runs every pii_audit test. Installs the Debian dependencies,
# builds and installs the extension (scripts/build.sh), then runs every test CTest knows
# (unit tests, pg_regress suites and integration tests; those start their own throwaway
# PostgreSQL clusters). Exits non-zero on any failure. BUILD_DIR defaults to build.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
build_dir=${BUILD_DIR:-build}

"$repo/scripts/build.sh"

echo "==> ctest"
# --no-tests=error: a build that registers no test must not pass as green.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error
