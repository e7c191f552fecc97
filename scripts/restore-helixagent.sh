#!/usr/bin/env bash
# Restores a backup made by backup-helixagent.sh, following the runbook's "Database Restore":
#   kubectl scale deployment/helixagent --replicas=0     # stop the application first (or systemctl stop helixagent)
#   scripts/restore-helixagent.sh backup_20261128_020000.dump
#   kubectl scale deployment/helixagent --replicas=3
# The restore runs in one transaction (--clean --if-exists): it either replaces the database's contents or changes nothing.
# Connection: libpq's PG* variables, as for the backup. Prints the row count of completions to verify.
set -euo pipefail

fail() { echo "restore-helixagent: $*" >&2; exit 1; }
[ $# -eq 1 ] || fail "usage: restore-helixagent.sh BACKUP.dump"
dump=$1
[ -r "$dump" ] || fail "cannot read $dump"
env_file=${HELIXAGENT_BACKUP_ENV:-/etc/helixagent/backup.env}
if [ -r "$env_file" ]; then
  set -a; . "$env_file"; set +a
fi
db=${PGDATABASE:-helixagent_db}
command -v pg_restore >/dev/null 2>&1 || fail "pg_restore not found: install postgresql-client"

pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error -d "$db" "$dump" \
  || fail "pg_restore of $dump into $db failed; the database is unchanged"
echo "restored $dump into $db: $(psql -d "$db" -Atc 'SELECT count(*) FROM completions') rows in completions"
