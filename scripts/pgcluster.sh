# shellcheck shell=bash
# pgcluster.sh: a sourceable library to run THROWAWAY PostgreSQL 15 clusters for tests,
# the demo and benchmarks. Each cluster lives entirely in one directory DIR:
#   DIR/data        the data directory (initdb)
#   DIR/sock        the private Unix-socket directory
#   DIR/server.log  the server log (pg_ctl -l)
#   DIR/port        the port the cluster was created with
# It never touches the system (Debian) cluster: a private port, a private socket directory,
# and by default no TCP listener at all (listen_addresses = '').
#
# initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` OS user
# (runuser), and DIR is handed to that user. Clients (psql, pgbench, pg_regress) run as the
# caller: as root they can always reach the socket, and they can read files (SQL scripts,
# test inputs) that the postgres user could not.
#
#   source scripts/pgcluster.sh
#   pgc_init DIR PORT [postgresql.conf line...]   # PORT may be "auto" or empty
#   pgc_start DIR [extra postgres options]       # e.g. "-c shared_preload_libraries="
#   pgc_psql DIR -d postgres -c 'select 1'
#   pgc_stop DIR [smart|fast|immediate]          # default fast
#   pgc_restart DIR
#   pgc_runtime_conf DIR [line...]               # replace DIR/data/pgc_runtime.conf
#   pgc_env DIR                                  # export PGHOST PGPORT PGUSER
#   pgc_log DIR; pgc_destroy DIR
#
# It can also be run as a command: scripts/pgcluster.sh start DIR (see the end of the file).
#
# Functions return non-zero on failure and print why on stderr; they do not exit.

# The PostgreSQL 15 binaries: PG_BINDIR wins, else Debian's versioned directory, else pg_config.
pgc__bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        printf '%s\n' "$PG_BINDIR"
    elif [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1; then
        pg_config --bindir
    else
        echo "pgcluster: cannot find the PostgreSQL 15 binaries (set PG_BINDIR)" >&2
        return 1
    fi
}

# Print an error. Returns 0 on purpose: callers `return 1` themselves, so that under the
# caller's `set -e` the failure surfaces at the caller's line (and its ERR trap), not in here.
pgc__err() {
    echo "pgcluster: $*" >&2
}

# The OS user that owns and runs the server: postgres when we are root, else ourselves.
pgc__server_user() {
    if [[ $(id -u) -eq 0 ]]; then
        echo postgres
    else
        id -un
    fi
}

# Run a server-side command (initdb, pg_ctl) as the server user, from a directory that user
# can enter (initdb and pg_ctl look up the current directory).
pgc__as_server() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pgc__abs() {
    local d=$1
    [[ -n "$d" ]] || { pgc__err "empty directory argument"; return 1; }
    case "$d" in
        /*) printf '%s\n' "$d" ;;
        *) printf '%s/%s\n' "$PWD" "$d" ;;
    esac
}

pgc_port() {
    local dir
    dir=$(pgc__abs "${1:-}") || return 1
    [[ -r "$dir/port" ]] || { pgc__err "no cluster in $dir (missing $dir/port)"; return 1; }
    cat "$dir/port"
}

pgc_sockdir() {
    local dir
    dir=$(pgc__abs "${1:-}") || return 1
    printf '%s/sock\n' "$dir"
}

# True when something accepts connections on 127.0.0.1:PORT or a Unix socket for PORT exists
# in the shared default locations.
pgc__port_busy() {
    local port=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 0
    fi
    [[ -e "/tmp/.s.PGSQL.$port" || -e "/var/run/postgresql/.s.PGSQL.$port" ]]
}

# Print a port in 54000..54999 that looks free, starting from one derived from $$ so that
# parallel runs start in different places. With listen_addresses = '' and a private socket
# directory a clash is harmless anyway; this keeps TCP setups safe too.
pgc_free_port() {
    local start=$((54000 + ($$ * 7 + RANDOM) % 1000)) i port
    for ((i = 0; i < 1000; i++)); do
        port=$((54000 + (start - 54000 + i) % 1000))
        if ! pgc__port_busy "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    pgc__err "no free port in 54000..54999"
    return 1
}

pgc_is_running() {
    local dir bindir
    dir=$(pgc__abs "${1:-}") || return 1
    bindir=$(pgc__bindir) || return 1
    [[ -f "$dir/data/PG_VERSION" ]] || return 1
    pgc__as_server "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

# pgc_init DIR PORT [extra postgresql.conf lines...]
# Creates a fresh cluster in DIR. A cluster left running in DIR by an earlier run is stopped
# and its data removed first.
pgc_init() {
    local dir port bindir user line
    dir=$(pgc__abs "${1:-}") || return 1
    port=${2:-auto}
    shift 2 || shift $#
    bindir=$(pgc__bindir) || return 1
    user=$(pgc__server_user)
    if [[ "$port" == auto ]]; then
        port=$(pgc_free_port) || return 1
    fi
    [[ "$port" =~ ^[0-9]+$ ]] || { pgc__err "bad port '$port'"; return 1; }
    # Unix socket paths are limited to 107 bytes.
    if ((${#dir} + ${#port} + 16 > 107)); then
        pgc__err "directory path too long for a Unix socket: $dir/sock/.s.PGSQL.$port"
        return 1
    fi

    if [[ -f "$dir/data/postmaster.pid" ]] && pgc_is_running "$dir"; then
        echo "pgcluster: stopping the cluster left running in $dir" >&2
        pgc__as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir/data" "$dir/sock" "$dir/server.log" "$dir/port"
    mkdir -p "$dir/data" "$dir/sock" || return 1
    chmod 700 "$dir/data"
    : >"$dir/server.log"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$user:" "$dir" "$dir/data" "$dir/sock" "$dir/server.log" || return 1
        if ! runuser -u postgres -- test -w "$dir/data"; then
            pgc__err "user postgres cannot reach $dir (a parent directory is not searchable); use a directory under /tmp"
            return 1
        fi
    fi
    printf '%s\n' "$port" >"$dir/port"

    if ! pgc__as_server "$bindir/initdb" -D "$dir/data" --auth=trust -U postgres \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        pgc__err "initdb failed in $dir"
        return 1
    fi

    {
        echo
        echo "# ---- pgcluster.sh settings ----"
        echo "port = $port"
        echo "unix_socket_directories = '$dir/sock'"
        echo "listen_addresses = ''"
        echo "max_connections = 100"
        echo "logging_collector = off"
        echo "fsync = off"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        echo "# ---- caller settings ----"
        for line in "$@"; do
            printf '%s\n' "$line"
        done
        echo "# ---- replaced by pgc_runtime_conf ----"
        echo "include_if_exists = 'pgc_runtime.conf'"
    } >>"$dir/data/postgresql.conf"
    pgc_runtime_conf "$dir"
}

# pgc_runtime_conf DIR [lines...]: replace the cluster's runtime settings file (read last, so
# it overrides everything); takes effect at the next (re)start or reload.
pgc_runtime_conf() {
    local dir line
    dir=$(pgc__abs "${1:-}") || return 1
    shift
    [[ -d "$dir/data" ]] || { pgc__err "no cluster in $dir"; return 1; }
    {
        for line in "$@"; do
            printf '%s\n' "$line"
        done
    } >"$dir/data/pgc_runtime.conf"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir/data/pgc_runtime.conf"
    fi
}

# pgc_start DIR [extra postgres options, one string passed to pg_ctl -o]
pgc_start() {
    local dir bindir opts
    dir=$(pgc__abs "${1:-}") || return 1
    opts=${2:-}
    bindir=$(pgc__bindir) || return 1
    [[ -f "$dir/data/PG_VERSION" ]] || { pgc__err "no cluster in $dir (run pgc_init)"; return 1; }
    if pgc_is_running "$dir"; then
        return 0
    fi
    if ! pgc__as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \
        ${opts:+-o "$opts"} start >/dev/null; then
        echo "---- tail of $dir/server.log ----" >&2
        tail -n 40 "$dir/server.log" >&2 || true
        pgc__err "the server in $dir did not start"
        return 1
    fi
}

# pgc_stop DIR [smart|fast|immediate]: no-op when not running.
pgc_stop() {
    local dir mode bindir
    dir=$(pgc__abs "${1:-}") || return 1
    mode=${2:-fast}
    bindir=$(pgc__bindir) || return 1
    [[ -f "$dir/data/PG_VERSION" ]] || return 0
    pgc_is_running "$dir" || return 0
    if ! pgc__as_server "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w -t 120 stop >/dev/null; then
        echo "pgcluster: $mode stop failed in $dir, stopping immediately" >&2
        pgc__as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null
    fi
}

# pgc_restart DIR [extra postgres options]
pgc_restart() {
    pgc_stop "${1:-}" fast && pgc_start "$@"
}

# pgc_psql DIR [psql args...]: connects through the private socket as user postgres to database
# postgres unless the args say otherwise (a later -U / -d wins). Stops at the first error.
pgc_psql() {
    local dir bindir port
    dir=$(pgc__abs "${1:-}") || return 1
    shift
    bindir=$(pgc__bindir) || return 1
    port=$(pgc_port "$dir") || return 1
    "$bindir/psql" -X -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres -d postgres "$@"
}

# pgc_env DIR: export PGHOST, PGPORT, PGUSER (and PG_BINDIR) for clients of this cluster.
pgc_env() {
    local dir
    dir=$(pgc__abs "${1:-}") || return 1
    PGPORT=$(pgc_port "$dir") || return 1
    PGHOST="$dir/sock"
    PGUSER=postgres
    export PGHOST PGPORT PGUSER
}

# pgc_env_print DIR: the same, as shell lines to paste or eval.
pgc_env_print() {
    local dir port
    dir=$(pgc__abs "${1:-}") || return 1
    port=$(pgc_port "$dir") || return 1
    printf 'export PGHOST=%q PGPORT=%q PGUSER=postgres\n' "$dir/sock" "$port"
}

pgc_log() {
    local dir
    dir=$(pgc__abs "${1:-}") || return 1
    if [[ -r "$dir/server.log" ]]; then
        cat "$dir/server.log"
    else
        echo "pgcluster: no server log in $dir" >&2
    fi
}

# pgc_destroy DIR: stop (immediately) and remove everything in DIR.
pgc_destroy() {
    local dir
    dir=$(pgc__abs "${1:-}") || return 1
    [[ -e "$dir" ]] || return 0
    if [[ "$dir" == / ]]; then
        pgc__err "refusing to remove /"
        return 1
    fi
    pgc_stop "$dir" immediate || true
    rm -rf "$dir"
}

# Run as a command instead of being sourced: scripts/pgcluster.sh FUNCTION ARGS...
# e.g. `scripts/pgcluster.sh init /tmp/c auto "shared_preload_libraries = 'pii_audit'"`,
# `scripts/pgcluster.sh start /tmp/c`, `scripts/pgcluster.sh destroy /tmp/c` (handy for CTest
# fixtures and for people).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    if [[ $# -lt 1 ]] || ! declare -F "pgc_$1" >/dev/null; then
        echo "usage: $0 {init|start|stop|restart|psql|runtime_conf|port|sockdir|env_print|log|destroy|free_port|is_running} ARGS..." >&2
        exit 2
    fi
    cmd=$1
    shift
    "pgc_$cmd" "$@"
fi
