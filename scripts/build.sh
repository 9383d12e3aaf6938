#!/usr/bin/env bash
# build.sh: install the Debian dependencies, configure and build pii_audit with CMake, and
# install it into the system PostgreSQL 15 (the directories pg_config reports).
# Shared by scripts/test.sh and scripts/demo.sh. BUILD_DIR (default: build) and
# BUILD_TYPE (default: RelWithDebInfo) may be set in the environment.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
build_dir=${BUILD_DIR:-build}
build_type=${BUILD_TYPE:-RelWithDebInfo}

"$repo/scripts/install-deps.sh"

echo "==> configure ($build_type) in $build_dir"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type"
echo "==> build"
cmake --build "$build_dir" -j2
echo "==> install into the system PostgreSQL"
if [[ $(id -u) -eq 0 ]] || ! command -v sudo >/dev/null 2>&1; then
    cmake --install "$build_dir"
else
    sudo cmake --install "$build_dir"
fi
