#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the distributed-sweep tests (tests/sweep/).
#
#   source .ci/start-postgres.sh          # exports LIBRAPIM_TEST_PG_URL=postgresql://librapim@127.0.0.1:PORT/librapim_test
#   eval "$(.ci/start-postgres.sh)"       # the same, run as a program (prints the export line on stdout)
#   librapim_pg_stop                      # (after sourcing) stop the server and delete its data folder
#
# Installs the server with apt-get if it is missing (quietly; needs root or password-less sudo), then runs
# initdb + pg_ctl in a fresh temporary folder on a free port, as the `postgres` user when run as root.
# Safe to source under `set -euo pipefail`; every step has a timeout, so it never hangs. If anything fails
# it warns on stderr and leaves LIBRAPIM_TEST_PG_URL unset (the PostgreSQL tests then skip, saying why);
# set LIBRAPIM_PG_REQUIRED=1 to make that an error instead. If LIBRAPIM_TEST_PG_URL already answers, it is
# reused.

_librapim_pg_log() { printf 'start-postgres: %s\n' "$*" >&2; }

_librapim_pg_as() {  # run a command as the server's owner (postgres when we are root)
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

_librapim_pg_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            _librapim_pg_log "PostgreSQL is not installed and apt-get needs root"; return 1
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || { _librapim_pg_log "PostgreSQL is not installed and there is no apt-get"; return 1; }
    _librapim_pg_log "installing postgresql with apt-get (quiet)"
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 $sudo apt-get install -y -qq postgresql >/dev/null 2>&1; then
        timeout 300 $sudo apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive timeout 600 $sudo apt-get install -y -qq postgresql >/dev/null 2>&1 \
            || { _librapim_pg_log "apt-get install postgresql failed"; return 1; }
    fi
}

_librapim_pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then printf '%s\n' "$d"; return 0; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

_librapim_pg_start() {
    local bindir port dir
    if [ -n "${LIBRAPIM_TEST_PG_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 \
        && timeout 10 pg_isready -q -d "$LIBRAPIM_TEST_PG_URL" -t 5 >/dev/null 2>&1; then
        _librapim_pg_log "reusing the server at LIBRAPIM_TEST_PG_URL"
        return 0
    fi
    bindir=$(_librapim_pg_bindir) || { _librapim_pg_install || return 1; bindir=$(_librapim_pg_bindir) || return 1; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        _librapim_pg_log "running as root but there is no 'postgres' user to own the server"; return 1
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
        || { _librapim_pg_log "cannot find a free port"; return 1; }
    dir=$(mktemp -d "${TMPDIR:-/tmp}/librapim-pg.XXXXXX") || return 1
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir" || return 1; fi
    _librapim_pg_as timeout 120 "$bindir/initdb" -D "$dir/data" -U librapim --auth=trust -E UTF8 \
        >"$dir/initdb.log" 2>&1 || { _librapim_pg_log "initdb failed (see $dir/initdb.log)"; return 1; }
    _librapim_pg_as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off -c max_connections=50" \
        start >/dev/null 2>&1 || { _librapim_pg_log "the server did not start (see $dir/server.log)"; return 1; }
    timeout 30 "$bindir/createdb" -h 127.0.0.1 -p "$port" -U librapim librapim_test >/dev/null 2>&1 \
        || { _librapim_pg_log "createdb failed"; _librapim_pg_as "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true; return 1; }
    export LIBRAPIM_TEST_PG_URL="postgresql://librapim@127.0.0.1:$port/librapim_test"
    export LIBRAPIM_TEST_PG_DIR="$dir"
    export LIBRAPIM_TEST_PG_BINDIR="$bindir"
    _librapim_pg_log "PostgreSQL ($("$bindir/postgres" --version 2>/dev/null || echo '?')) at $LIBRAPIM_TEST_PG_URL, data in $dir"
}

librapim_pg_stop() {
    [ -n "${LIBRAPIM_TEST_PG_DIR:-}" ] || return 0
    _librapim_pg_as "${LIBRAPIM_TEST_PG_BINDIR:-}/pg_ctl" -D "$LIBRAPIM_TEST_PG_DIR/data" -m fast -w -t 30 stop \
        >/dev/null 2>&1 || true
    rm -rf "$LIBRAPIM_TEST_PG_DIR"
    unset LIBRAPIM_TEST_PG_URL LIBRAPIM_TEST_PG_DIR LIBRAPIM_TEST_PG_BINDIR
}

if _librapim_pg_start; then
    _librapim_pg_ok=1
else
    _librapim_pg_ok=0
    unset LIBRAPIM_TEST_PG_URL
    _librapim_pg_log "no PostgreSQL server: the PostgreSQL sweep tests will skip"
fi
if (return 0 2>/dev/null); then  # sourced
    if [ "$_librapim_pg_ok" = 0 ] && [ "${LIBRAPIM_PG_REQUIRED:-0}" = 1 ]; then unset _librapim_pg_ok; return 1; fi
    unset _librapim_pg_ok
else  # run as a program: print the line to eval
    [ "$_librapim_pg_ok" = 1 ] && printf 'export LIBRAPIM_TEST_PG_URL=%q\n' "$LIBRAPIM_TEST_PG_URL"
    [ "$_librapim_pg_ok" = 1 ] || [ "${LIBRAPIM_PG_REQUIRED:-0}" != 1 ]
fi
