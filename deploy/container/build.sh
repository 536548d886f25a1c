#!/usr/bin/env bash
# `make image`: tallykey:<version> and tallykey:latest (and tallykey-mailsink, the compose
# cluster's SMTP sink) from deploy/container/Containerfile.
#
# 1. The wheels of tallykey and of its dependencies are made on this host (pip wheel, with
#    Debian's Python 3.11, the image's) into build/container (wheels/: the dependencies,
#    app/: tallykey, mailsink-wheels/: the SMTP sink's), the build context;
#    nothing inside the build downloads. Their shared objects are stripped (strip_wheels.py).
# 2. BASE: as given; else tallykey-base:bookworm when it exists; else debian:bookworm-slim
#    when it is present or can be pulled; else deploy/container/base.sh builds
#    tallykey-base:bookworm from Debian packages (no registry needed).
# 3. The compose cluster's PostgreSQL, Redis and nginx images are built when missing
#    (base.sh), so `docker-compose -f deploy/compose.yaml up -d` can follow.
# The wheels are made while the base is built, and the cluster's images while the image is.
#
# Environment: BASE, DOCKER (default /usr/bin/docker, Debian's client), DOCKER_HOST,
# PYTHON (the Python 3.11 that makes the wheels, with pip or venv; default Debian's
# /usr/bin/python3, the same 3.11.x as the image's, so version markers resolve alike).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DOCKER=${DOCKER:-/usr/bin/docker}
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)}
context=$root/build/container
started=$SECONDS
say() { echo "[$((SECONDS - started)) s] $*" >&2; }

# the daemon ci-prepare.sh starts, when no other one is named or answers
if [ -z "${DOCKER_HOST:-}" ] && ! "$DOCKER" info >/dev/null 2>&1 \
    && "$DOCKER" -H unix:///tmp/tallykey-docker/docker.sock info >/dev/null 2>&1; then
  export DOCKER_HOST=unix:///tmp/tallykey-docker/docker.sock
fi
"$DOCKER" info >/dev/null 2>&1 || {
  echo "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-unset});" \
       "deploy/container/ci-prepare.sh starts one" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "the wheels must be made with Python 3.11 (the image's); set PYTHON" >&2; exit 1; }
version=$("$PYTHON" -c 'import tomllib, sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")

# --- 1. wheels (in the background) ----------------------------------------------------------
pip=("$PYTHON" -m pip)
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  [ -x "$root/build/pip/bin/pip" ] || "$PYTHON" -m venv "$root/build/pip"
  pip=("$root/build/pip/bin/pip")
fi
rm -rf "$context"
mkdir -p "$context/wheels" "$context/mailsink-wheels" "$context/app"
cp "$here/warm.py" "$context/"
# the last commit's time in the wheel's entries: the same source makes the same wheel, so a
# second build reuses every layer
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 315532800)}
say "making wheels for tallykey $version and its dependencies"
{
  "${pip[@]}" wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" \
    "$root[server]" 2> >(grep -v '^WARNING: Location' >&2)
  "${pip[@]}" wheel --quiet --disable-pip-version-check --wheel-dir "$context/mailsink-wheels" \
    aiosmtpd 2> >(grep -v '^WARNING: Location' >&2)
  mv "$context"/wheels/tallykey-*.whl "$context/app/"   # its own layer (Containerfile)
  "$PYTHON" "$here/strip_wheels.py" "$context/wheels"   # debug symbols out: ~30 MB
} &
wheels=$!

# --- 2. base ------------------------------------------------------------------------------
if [ -z "${BASE:-}" ]; then
  if "$DOCKER" image inspect tallykey-base:bookworm >/dev/null 2>&1; then
    BASE=tallykey-base:bookworm
  elif "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1 \
      || timeout 60 "$DOCKER" pull --quiet debian:bookworm-slim >/dev/null 2>&1; then
    BASE=debian:bookworm-slim
  else
    say "no registry reachable: building the base image from Debian packages"
    "$here/base.sh" --base-only
    BASE=tallykey-base:bookworm
  fi
fi

# --- 3. the compose cluster's other images (in the background) -------------------------------
BASE_IMAGE=$BASE "$here/base.sh" --services-only &
services=$!

wait "$wheels" || { echo "making the wheels failed" >&2; exit 1; }
say "building tallykey:$version FROM $BASE"
build() {  # the build's output only when it fails
  "$DOCKER" build --build-arg "BASE=$BASE" -f "$here/Containerfile" "$@" "$context" \
    >"$root/build/docker-build.log" 2>&1 \
    || { tail -n 40 "$root/build/docker-build.log" >&2; exit 1; }
}
build --target mailsink -t "tallykey-mailsink:$version" -t tallykey-mailsink:latest
build -t "tallykey:$version" -t tallykey:latest
say "built tallykey:$version"
wait "$services" || { echo "building the compose cluster's images failed" >&2; exit 1; }
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "tallykey:$version" >&2
say "done"
