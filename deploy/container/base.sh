#!/usr/bin/env bash
# Build the base images locally from Debian packages, for machines that reach Debian's
# mirror but no container registry:
#   tallykey-base:bookworm       minimal Debian bookworm + Python 3.11 (BASE for the image)
#   tallykey-postgres:bookworm   PostgreSQL 15   \
#   tallykey-redis:bookworm      Redis 7          > from services.Containerfile, for compose
#   tallykey-nginx:bookworm      nginx           /
#
#   deploy/container/base.sh            # builds what is missing (a second run does nothing)
#   deploy/container/base.sh --force    # rebuilds all of them
#   deploy/container/base.sh --base-only  # only tallykey-base:bookworm
#   deploy/container/base.sh --services-only  # only the three others, FROM $BASE_IMAGE
#
# The root filesystem comes from `mmdebstrap --variant=minbase` with the mirrors this host's
# apt uses (MIRROR=... overrides: a URL or a .sources/.list file) and is turned into an image
# by `docker import`. Runs as root (mmdebstrap's root mode). DOCKER (default /usr/bin/docker,
# Debian's client) and DOCKER_HOST are honoured.
set -euo pipefail
cd "$(dirname "$0")"
DOCKER=${DOCKER:-/usr/bin/docker}
BASE_IMAGE=${BASE_IMAGE:-tallykey-base:bookworm}
force=0
base_only=0
services_only=0
case "${1:-}" in
  --force) force=1 ;;
  --base-only) base_only=1 ;;
  --services-only) services_only=1 ;;
  "") ;;
  *) echo "usage: base.sh [--force | --base-only | --services-only]" >&2; exit 2 ;;
esac

have() { [ "$force" = 0 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

mirrors() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local found=0 file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources; do
    if [ -f "$file" ] && grep -Eq '^[[:space:]]*(deb |URIs:)' "$file"; then
      echo "$file"; found=1
    fi
  done
  [ "$found" = 1 ] || echo "http://deb.debian.org/debian"
}

if [ "$services_only" = 0 ] && ! have "$BASE_IMAGE"; then
  command -v mmdebstrap >/dev/null || {
    echo "base.sh needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
  echo "building $BASE_IMAGE with mmdebstrap (a few minutes)" >&2
  # Documentation, manuals and translations are left out, as in Debian's slim images; so
  # is Perl (only usrmerge needed it, and usr-is-merged stands in); the package lists and
  # downloaded packages are removed by mmdebstrap's clean-up.
  # shellcheck disable=SC2046
  mmdebstrap --variant=minbase --quiet --aptopt='APT::Install-Recommends "false"' \
    --include=usr-is-merged,python3,python3-venv,ca-certificates \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get purge -qq -y usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null' \
    --customize-hook='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/cache/debconf/*-old' \
    bookworm - $(mirrors) \
  | "$DOCKER" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      - "$BASE_IMAGE" >/dev/null
fi

[ "$base_only" = 1 ] && exit 0
for service in postgres redis nginx; do
  if ! have "tallykey-$service:bookworm"; then
    echo "building tallykey-$service:bookworm" >&2
    "$DOCKER" build --quiet --build-arg "BASE=$BASE_IMAGE" --target "$service" \
      -t "tallykey-$service:bookworm" -f services.Containerfile . >/dev/null
  fi
done
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^tallykey-' >&2 || true
