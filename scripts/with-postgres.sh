#!/usr/bin/env bash
# Run a command with a reachable PostgreSQL server and MOTIA_PY_TEST_POSTGRES_URL pointing at it.
#
# - MOTIA_PY_TEST_POSTGRES_URL already set: use it as it is.
# - otherwise create a throwaway cluster in a temporary directory (initdb) and start it on a free port on
#   127.0.0.1, then stop and remove it afterwards. The binaries are Debian's (/usr/lib/postgresql/*/bin,
#   the newest), installed with apt-get when missing and we are root. PostgreSQL refuses to run as root:
#   as root the cluster belongs to the `postgres` system user (created by Debian's package), or to a
#   dedicated `motia-postgres` user made here. A system cluster is never touched.
# - exports MOTIA_PY_TEST_POSTGRES_URL, MOTIA_PY_TEST_POSTGRES_BIN (the binaries, for tests that run
#   their own server) and MOTIA_PY_TEST_POSTGRES_USER (the user servers run as, when we are root).
# - when CI is set and no PostgreSQL can be had, fail: PostgreSQL tests never skip in CI.
set -euo pipefail

find_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
    echo "$dir"
  elif command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir
  fi
}

if [[ -z "${MOTIA_PY_TEST_POSTGRES_URL:-}" ]]; then
  bin=$(find_bin)
  if [[ -z "$bin" && "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "with-postgres: installing postgresql" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || true
    bin=$(find_bin)
  fi
  if [[ -n "$bin" ]]; then
    run=()
    owner=""
    if [[ "$(id -u)" == "0" ]]; then
      owner=postgres
      if ! id "$owner" >/dev/null 2>&1; then
        owner=motia-postgres
        id "$owner" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
      fi
      run=(runuser -u "$owner" --)
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    dir=$(mktemp -d)
    chmod 755 "$dir"
    mkdir "$dir/data"
    [[ -n "$owner" ]] && chown "$owner" "$dir" "$dir/data"
    cleanup() {
      ${run[@]+"${run[@]}"} "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
      rm -rf "$dir"
    }
    trap cleanup EXIT
    ${run[@]+"${run[@]}"} "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # a test server: durable commits (restart tests kill servers of their own), more connections than
    # the default for the process tests, sockets in the temporary directory only
    ${run[@]+"${run[@]}"} "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=300" \
      start >/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
    ${run[@]+"${run[@]}"} "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres motia_test
    export MOTIA_PY_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/motia_test"
    export MOTIA_PY_TEST_POSTGRES_BIN="$bin"
    [[ -n "$owner" ]] && export MOTIA_PY_TEST_POSTGRES_USER="$owner"
    echo "with-postgres: private PostgreSQL ($bin) on port $port" >&2
  elif [[ -n "${CI:-}" ]]; then
    echo "with-postgres: no PostgreSQL available and CI is set: failing" >&2
    exit 1
  else
    echo "with-postgres: no PostgreSQL; PostgreSQL tests will skip (they fail when CI is set)" >&2
  fi
fi
"$@"
