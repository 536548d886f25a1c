#!/bin/sh
# PostgreSQL for the compose cluster: on first start, a cluster in $PGDATA (the volume) with
# the user POSTGRES_USER (default postgres), its password POSTGRES_PASSWORD (required), and
# the database POSTGRES_DB (default the user's name); then the server, listening on every
# address with password (SCRAM) authentication.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "POSTGRES_PASSWORD is not set: the database would accept anyone" >&2
    exit 78
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$database" != postgres ]; then
    echo "CREATE DATABASE \"$database\" OWNER \"$user\";" \
      | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "initialised a PostgreSQL cluster in $PGDATA (database $database, user $user)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
