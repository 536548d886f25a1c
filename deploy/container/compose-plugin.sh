#!/bin/sh
# `docker compose ...` for a machine that has only Compose v1 (Debian bookworm's
# docker-compose 1.29): a Docker CLI plugin that hands every command to `docker-compose`.
# ci-prepare.sh installs it as /usr/local/lib/docker/cli-plugins/docker-compose when
# `docker compose` is missing; the compose file and its commands (up -d, logs, exec, ps,
# down -v) are the same under both.
if [ "${1:-}" = docker-cli-plugin-metadata ]; then
  printf '{"SchemaVersion":"0.1.0","Vendor":"tallykey (Compose v1 shim)","Version":"%s","ShortDescription":"Docker Compose (v1, docker-compose)"}\n' \
    "$(docker-compose version --short 2>/dev/null || echo 1)"
  exit 0
fi
[ "${1:-}" = compose ] && shift
exec docker-compose "$@"
