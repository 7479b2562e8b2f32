#!/usr/bin/env bash
# Run a command with a reachable Redis server and MOTIA_PY_TEST_REDIS_URL pointing at it.
#
# - MOTIA_PY_TEST_REDIS_URL already set: use it as it is.
# - otherwise start a private redis-server on a free port (installing Debian's redis-server package
#   when the binary is missing and we are root), and stop it afterwards.
# - when CI is set and no Redis can be had, fail: Redis tests never skip in CI.
set -euo pipefail

if [[ -z "${MOTIA_PY_TEST_REDIS_URL:-}" ]]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
      echo "with-redis: installing redis-server" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2 || true
    fi
  fi
  if command -v redis-server >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
    for _ in $(seq 1 100); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
      sleep 0.05
    done
    export MOTIA_PY_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    export MOTIA_PY_TEST_REDIS_SERVER="$(command -v redis-server)"
    echo "with-redis: private redis-server on port $port" >&2
  elif [[ -n "${CI:-}" ]]; then
    echo "with-redis: no redis-server available and CI is set: failing" >&2
    exit 1
  else
    echo "with-redis: no redis-server; Redis tests will skip (they fail when CI is set)" >&2
  fi
fi
"$@"
