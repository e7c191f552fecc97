#!/usr/bin/env bash
# Backs up the HelixAgent database: pg_dump -Fc of helixagent_db to $BACKUP_DIR/backup_YYYYmmdd_HHMMSS.dump, keeping the
# newest $BACKUP_KEEP copies. Meant for cron (the runbook installs it as /usr/local/bin/backup-helixagent.sh):
#   0 2 * * * /usr/local/bin/backup-helixagent.sh
# Connection: libpq's PG* variables (PGHOST, PGPORT, PGUSER, PGPASSWORD or ~/.pgpass), read from
# $HELIXAGENT_BACKUP_ENV (default /etc/helixagent/backup.env) when that file exists. Exits non-zero with a message on failure.
set -euo pipefail

env_file=${HELIXAGENT_BACKUP_ENV:-/etc/helixagent/backup.env}
if [ -r "$env_file" ]; then
  set -a; . "$env_file"; set +a
fi
dir=${BACKUP_DIR:-/var/backups/helixagent}
keep=${BACKUP_KEEP:-7}
db=${PGDATABASE:-helixagent_db}

fail() { echo "backup-helixagent: $*" >&2; exit 1; }
command -v pg_dump >/dev/null 2>&1 || fail "pg_dump not found: install postgresql-client"
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || fail "BACKUP_KEEP must be a positive number, not '$keep'"
mkdir -p "$dir" || fail "cannot create $dir"

file="$dir/backup_$(date +%Y%m%d_%H%M%S).dump"
while [ -e "$file" ]; do sleep 1; file="$dir/backup_$(date +%Y%m%d_%H%M%S).dump"; done
tmp="$file.partial"
if ! pg_dump -Fc -d "$db" -f "$tmp" 2>"$tmp.err"; then
  msg=$(cat "$tmp.err"); rm -f "$tmp" "$tmp.err"
  fail "pg_dump of $db failed: $msg"
fi
rm -f "$tmp.err"
mv "$tmp" "$file"
echo "$file"

# Keep the newest $keep backups.
ls -1t "$dir"/backup_*.dump 2>/dev/null | tail -n +$((keep + 1)) | while read -r old; do rm -f -- "$old"; done
