#!/usr/bin/env bash
# CI (and a bare machine): install Debian's docker.io, docker-compose, mmdebstrap and
# binutils, and start a Docker daemon when none answers. Prints the DOCKER_HOST to export.
#
#   eval "$(deploy/container/ci-prepare.sh)"     # sets DOCKER_HOST for what follows
#
# The daemon keeps its images under $TALLYKEY_DOCKER_ROOT (default /var/tmp/tallykey-docker),
# which outlives /tmp, so the base images built by base.sh are reused by the next run on the
# same machine. Its socket, state and log are under /tmp/tallykey-docker. Runs as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v strip >/dev/null || need+=(binutils)   # make image strips the wheels' objects
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Debian's client: a preinstalled /usr/local/bin/docker may lack what the build needs.
DOCKER=/usr/bin/docker

# `docker compose` (v2 syntax) through Debian's Compose v1, for either docker client
if ! "$DOCKER" compose version >/dev/null 2>&1; then
  install -D -m 755 "$(dirname "$0")/compose-plugin.sh" \
    /usr/local/lib/docker/cli-plugins/docker-compose
fi
if [ -n "${DOCKER_HOST:-}" ] && "$DOCKER" info >/dev/null 2>&1; then
  echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0
fi
if "$DOCKER" -H unix:///var/run/docker.sock info >/dev/null 2>&1; then
  echo "export DOCKER_HOST=unix:///var/run/docker.sock"; exit 0
fi

run=/tmp/tallykey-docker
root=${TALLYKEY_DOCKER_ROOT:-/var/tmp/tallykey-docker}
sock="unix://$run/docker.sock"
mkdir -p "$run" "$root"
if ! "$DOCKER" -H "$sock" info >/dev/null 2>&1; then
  # setsid: the daemon outlives this script and the CI step's process group
  setsid dockerd --data-root "$root" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
    -H "$sock" >"$run/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    "$DOCKER" -H "$sock" info >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$DOCKER" -H "$sock" info >/dev/null 2>&1 || {
    echo "dockerd did not start; its log:" >&2; tail -n 30 "$run/dockerd.log" >&2; exit 1; }
fi
echo "export DOCKER_HOST=$sock"
