#!/usr/bin/env bash
# install-deps.sh: install the Debian 12 packages pii_audit needs to build, test, demo and
# benchmark. Idempotent: when every package is already installed it does not touch apt at all.
# Only the missing packages are installed (installed ones are not upgraded behind the back of a
# running build). Needs root (or sudo) only when something is missing. It never starts, and nothing here
# depends on, the Debian default cluster's service: the tests run their own clusters.
set -euo pipefail

packages=(
    postgresql-15
    postgresql-server-dev-15
    postgresql-contrib
    libpq-dev
    libboost-dev
    libfmt-dev
    googletest
    libgtest-dev
    libgmock-dev
    nlohmann-json3-dev    # the OCSF validator (tests) and pii-audit-export --verify read JSON
    cmake
    g++
    make
    postgresql-15-pgaudit # only the benchmark uses it
    dpkg-dev              # dpkg-source: test/pg_regress_diff unpacks PostgreSQL's source package
    sqlsmith              # test/fuzz/sqlsmith.sh: random queries against the labelled regression database
    libssl-dev            # pii-audit-export: TLS output (RFC 5425)
    openssl               # test/server/shipper.sh: test certificates
    rsyslog               # test/server/shipper.sh: the receivers (TCP, UDP)
    rsyslog-relp          #   ... RELP
    rsyslog-openssl       #   ... TLS
    python3               # test/server/relp_ack.sh: the scripted RELP receiver (standard library only)
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    if [[ "$status" != ii* ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#packages[@]} packages already installed"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "install-deps: not root and no sudo; install as root: ${missing[*]}" >&2
        exit 1
    fi
fi

# Installing postgresql-15 would start the default cluster through invoke-rc.d. A policy-rc.d
# that answers 101 ("action forbidden") stops that; we add one only if there is none, and
# remove only the one we added.
policy=/usr/sbin/policy-rc.d
added_policy=0
cleanup() {
    if ((added_policy)); then
        "${sudo_cmd[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# added by pii_audit scripts/install-deps.sh\nexit 101\n' |
        "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    added_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null

echo "install-deps: done"
