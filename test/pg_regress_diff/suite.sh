# shellcheck shell=bash
# suite.sh: a sourceable library that runs PostgreSQL 15's core regression suite (src/test/regress)
# on throwaway clusters, with or without pii_audit and the labelling event trigger. Shared by
#   run.sh                 the differential test (cluster A plain, cluster B with pii_audit), and
#   ../fuzz/sqlsmith.sh    which fuzzes the `regression` database that the suite leaves in a
#                          cluster like B (every column labelled) with sqlsmith,
# so that both test exactly the same labelled database.
#
# The caller sets `set -euo pipefail`, optionally SUITE_TAG (the prefix of log lines, default
# pg_regress_diff), sources this file, and then:
#   suite_init BUILD_DIR        checks the installation; sets bindir, pg_config, pkglibdir,
#                               pg_regress, build_dir (absolute)
#   suite_fetch                 the suite's sources and regress.so, downloaded and built once
#                               into BUILD_DIR/pg-regress-src; sets cache, suite_version
#   suite_workdir TEMPLATE      a work directory under /tmp (mktemp TEMPLATE) holding the suite's
#                               input files and libraries; sets work. The caller removes it
#                               (pgc_destroy each cluster in it, then rm -rf).
#   start_cluster NAME [conf]   a fresh cluster in $work/NAME with common_conf plus [conf]
#   setup_labelling NAME        pii_audit in `postgres` and template1, and label_columns.sql's
#                               event trigger in template1 (cluster B; before the next two)
#   create_regression_db NAME   database `regression` from template1, as pg_regress makes it
#   run_suite NAME              the parallel schedule; results in $work/out-NAME
#   label_stats NAME            sets labelled, keyed, changes, reads (proof of labelling)
# common_conf and pii_conf are the clusters' settings (arrays).
# Variables it sets are for its callers:
# shellcheck disable=SC2034
# shellcheck source-path=SCRIPTDIR source=../../scripts/pgcluster.sh

suite_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite_repo=$(cd "$suite_here/../.." && pwd)
source "$suite_repo/scripts/pgcluster.sh"

log() { echo "${SUITE_TAG:-pg_regress_diff}: $*"; }
die() {
    echo "${SUITE_TAG:-pg_regress_diff}: $*" >&2
    exit 1
}

suite_init() {
    build_dir=$1
    mkdir -p "$build_dir"
    build_dir=$(cd "$build_dir" && pwd)
    bindir=$(pgc__bindir)
    pg_config="$bindir/pg_config"
    [[ -x "$pg_config" ]] || pg_config=$(command -v pg_config)
    pkglibdir=$("$pg_config" --pkglibdir)
    local pgxs
    pgxs=$("$pg_config" --pgxs)
    pg_regress="$(dirname "$pgxs")/../test/regress/pg_regress"

    [[ -x "$pg_regress" ]] || die "$pg_regress not found (package postgresql-server-dev-15)"
    [[ -f "$pkglibdir/pii_audit.so" ]] || die "pii_audit is not installed in $pkglibdir (cmake --install first)"
    # The suite loads these two contrib/spi modules from the same directory as regress.so
    # (triggers.sql: \set autoinclib :libdir '/autoinc' :dlsuffix); postgresql-15 ships them.
    local m
    for m in autoinc refint; do
        [[ -f "$pkglibdir/$m.so" ]] || die "$pkglibdir/$m.so is missing (package postgresql-15)"
    done

    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot use apt to fetch the suite"
        as_root=(sudo)
    fi
}

# ------------------------------------------------------------------ the suite's sources

# The Debian source package is served by the same mirrors as the binaries, which the machine
# (and CI) can reach. Only `deb` entries are configured, so we add the matching `deb-src`
# entries in a file of our own (same URIs, suites, components and keyring as debian.sources,
# bookworm-security included: the installed version often comes from there) and refresh only
# that file's indexes, leaving the binary package lists alone.
src_list=/etc/apt/sources.list.d/pii_audit-src.sources
apt_src_update() {
    if [[ ! -f "$src_list" ]]; then
        local deb822=/etc/apt/sources.list.d/debian.sources
        [[ -f "$deb822" ]] || die "no $deb822 to derive deb-src entries from; add deb-src lines for postgresql-15 yourself"
        log "adding deb-src entries in $src_list"
        sed -e 's/^Types:.*$/Types: deb-src/' "$deb822" | "${as_root[@]}" tee "$src_list" >/dev/null
    fi
    log "apt-get update (source indexes only)"
    "${as_root[@]}" apt-get update -qq -o Dir::Etc::sourcelist="$src_list" \
        -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 </dev/null
}

# Versions of source package postgresql-15 that apt knows, newest first.
source_versions() {
    apt-cache showsrc postgresql-15 2>/dev/null | sed -n 's/^Version: //p' | sort -u |
        sort -r -t: -k1,1 -V
}

# fetch_suite DEST: unpack src/test/regress of the installed version's source package into
# DEST/regress (and write DEST/source-version). The mirror may lack the exact source (this
# machine's mirror answers 404 for bookworm-security sources whose binaries it serves); then
# we fall back, with a warning, to the newest other 15.x source apt can download: the tests of
# two 15.x releases differ in a few bug-fix cases only, and since A and B run the same files
# against the same server, the comparison is as good (PG_REGRESS_DIFF_EXACT=1 refuses).
fetch_suite() {
    local dest=$1 want=$2 tmp v got=""
    if ! command -v dpkg-source >/dev/null 2>&1; then
        log "dpkg-source is missing; running scripts/install-deps.sh"
        "$suite_repo/scripts/install-deps.sh"
    fi
    if ! source_versions | grep -qxF "$want"; then
        apt_src_update
    fi
    local candidates=("$want")
    if [[ "${PG_REGRESS_DIFF_EXACT:-0}" != 1 ]]; then
        while IFS= read -r v; do
            [[ "$v" != "$want" && "$v" == 15.* ]] && candidates+=("$v")
        done < <(source_versions)
    fi
    tmp="$build_dir/pg-regress-src/download.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for v in "${candidates[@]}"; do
        log "downloading the source package postgresql-15=$v"
        # Root downloads unsandboxed (the _apt user cannot write here); that warning is noise.
        if (cd "$tmp" && apt-get source -qq --download-only "postgresql-15=$v" </dev/null >apt.log 2>&1); then
            got=$v
            break
        fi
        grep -v "unsandboxed as root" "$tmp/apt.log" >&2 || true
        rm -f "$tmp"/*
        log "postgresql-15=$v source is not downloadable from the configured mirrors"
    done
    [[ -n "$got" ]] || die "cannot download any postgresql-15 source package (wanted $want)"
    if [[ "$got" != "$want" ]]; then
        echo "pg_regress_diff: WARNING: using the regression suite of postgresql-15 $got, not of the installed $want (not on the mirror)" >&2
    fi
    log "unpacking"
    (cd "$tmp" && dpkg-source -q -x ./*.dsc src >/dev/null)
    rm -rf "$dest"
    mkdir -p "$dest"
    mv "$tmp/src/src/test/regress" "$dest/regress"
    printf '%s\n' "$got" >"$dest/source-version"
    rm -rf "$tmp"
}

suite_fetch() {
    local installed
    installed=$(dpkg-query -W -f='${Version}' postgresql-15) || die "postgresql-15 is not installed"
    cache="$build_dir/pg-regress-src/$installed"
    if [[ ! -f "$cache/source-version" ]]; then
        fetch_suite "$cache" "$installed"
    fi
    suite_version=$(cat "$cache/source-version")
    log "suite of postgresql-15 $suite_version (installed: $installed), cached in $cache"

    # regress.so: the suite's C functions, built with PGXS against the installed headers.
    # (with_llvm=no: no bitcode for JIT inlining, so clang is not needed.)
    if [[ ! -f "$cache/lib/regress.so" || "$cache/regress/regress.c" -nt "$cache/lib/regress.so" ]]; then
        log "building regress.so"
        mkdir -p "$cache/lib"
        cp "$cache/regress/regress.c" "$cache/lib/"
        make -s -C "$cache/lib" -f "$suite_here/Makefile" PG_CONFIG="$pg_config" with_llvm=no >/dev/null
    fi
}

# ------------------------------------------------------------------ the clusters

# Everything the servers read or write lives under /tmp: the postgres OS user runs them and
# may not be able to enter the build tree. The socket path must also fit in 107 bytes.
suite_workdir() {
    work=$(mktemp -d "$1")
    chmod 755 "$work"
    # The suite's input directory: server-side COPY reads its data/ files.
    cp -r "$cache/regress" "$work/suite"
    # --dlpath: regress.so plus autoinc.so and refint.so, which the suite expects beside it.
    mkdir -p "$work/lib"
    cp "$cache/lib/regress.so" "$work/lib/"
    ln -s "$pkglibdir/autoinc.so" "$pkglibdir/refint.so" "$work/lib/"
}

# Settings of both clusters; they must differ only in what pii_audit needs.
#  - max_prepared_transactions > 0 so that prepared_xacts really runs two-phase commits
#    (as in PostgreSQL's own `make check`), through pii_audit's transaction callbacks too.
#  - compute_query_id = regress: pii_audit asks for query identifiers (EnableQueryId(), so the
#    default `auto` computes them in B only), and EXPLAIN VERBOSE would then print a `Query
#    Identifier` line in B only, in some 50 files. `regress` is PostgreSQL's setting for exactly
#    this case ("auto, but not shown by EXPLAIN", what pg_stat_statements' own tests use): B
#    still computes identifiers, A still does not, and neither prints them. explain.sql sets
#    compute_query_id = on itself, in both clusters alike.
common_conf=(
    "max_prepared_transactions = 2"
    "compute_query_id = regress"
)
pii_conf=(
    "shared_preload_libraries = 'pii_audit'"
    "pii_audit.database = 'postgres'"
)

# start_cluster NAME [conf lines...]: a fresh cluster in $work/NAME with database `regression`
# created as pg_regress would (it does not create it with --use-existing), but from template1,
# so that B's regression database inherits the extension and the event trigger; template1 of A
# is pristine, so A's regression database is what pg_regress would have made.
start_cluster() {
    local name=$1
    shift
    pgc_init "$work/$name" auto "${common_conf[@]}" "$@"
    pgc_start "$work/$name"
}

create_regression_db() {
    pgc_psql "$work/$1" -q <<'SQL'
CREATE DATABASE regression TEMPLATE template1;
ALTER DATABASE regression SET lc_messages TO 'C';
ALTER DATABASE regression SET lc_monetary TO 'C';
ALTER DATABASE regression SET lc_numeric TO 'C';
ALTER DATABASE regression SET lc_time TO 'C';
ALTER DATABASE regression SET bytea_output TO 'hex';
ALTER DATABASE regression SET timezone_abbreviations TO 'Default';
SQL
}

# run_suite NAME: the whole parallel schedule against cluster NAME, results in $work/out-NAME.
run_suite() {
    local name=$1 out="$work/out-$1" start rc
    mkdir -p "$out/results"
    # Server-side COPY ... TO writes into results/ (copy.sql, misc.sql).
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$out"
    fi
    start=$SECONDS
    log "running the core suite against cluster $name"
    set +e
    "$pg_regress" \
        --use-existing \
        --bindir="$bindir" \
        --host="$(pgc_sockdir "$work/$name")" \
        --port="$(pgc_port "$work/$name")" \
        --user=postgres \
        --dbname=regression \
        --dlpath="$work/lib" \
        --inputdir="$work/suite" \
        --outputdir="$out" \
        --schedule="$work/suite/parallel_schedule" >"$out/pg_regress.log" 2>&1
    rc=$?
    set -e
    # Failures against the suite's expected files are not ours to judge (the environment and
    # minor version matter); A versus B is what counts. Show the summary line only.
    log "cluster $name: $(grep -E 'tests (passed|failed)|failed \(ignoring|All [0-9]+ tests' "$out/pg_regress.log" | tr -s ' ' | head -1) (pg_regress exit $rc, $((SECONDS - start)) s)"
}

# setup_labelling NAME: what makes cluster B: the extension in the audit database and in
# template1, then the labelling event trigger in template1 (the cluster must preload pii_audit,
# i.e. be started with pii_conf). Call before create_regression_db.
setup_labelling() {
    pgc_psql "$work/$1" -q -c 'CREATE EXTENSION pii_audit'
    pgc_psql "$work/$1" -q -d template1 -c 'CREATE EXTENSION pii_audit'
    pgc_psql "$work/$1" -q -d template1 -f "$suite_here/label_columns.sql"
}

# label_stats NAME: proof that the suite ran on labelled tables: the columns still labelled at
# its end (the suite leaves most of its tables behind), and the label changes the worker stored
# in the trail. Sets labelled, keyed, changes, reads.
label_stats() {
    local c="$work/$1"
    labelled=$(pgc_psql "$c" -d regression -Atq -c 'SELECT count(*) FROM pii_audit.labelled_columns' || echo 0)
    keyed=$(pgc_psql "$c" -d regression -Atq -c 'SELECT count(*) FROM pii_audit.labelled_columns WHERE subject_key' || echo 0)
    changes=$(pgc_psql "$c" -Atq -c 'SELECT count(*) FROM pii_audit.label_changes' || echo '?')
    reads=$(pgc_psql "$c" -Atq -c "SELECT count(*) FROM pii_audit.access_log WHERE database_name = 'regression'" || echo '?')
}
