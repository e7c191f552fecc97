#!/usr/bin/env bash
# Installs what HelixAgent needs on Debian/Ubuntu when it is missing: PostgreSQL and Redis (run by the AppHost as
# local processes when no container runtime answers, and by the tests), promtool (Debian's prometheus package; the
# tests check deploy/prometheus with it), and buildah and mmdebstrap (the tests build the Dockerfile's images without
# a Docker engine; buildah is not a container runtime the AppHost would pick), openssl (scripts/generate-certs.sh), systemd-analyze (Debian's systemd package; the tests verify deploy/systemd/ with it), and node with npm (the tests drive
# Anthropic's npm SDK, pinned in tests/node/package.json, which they install with npm ci).
# Idempotent and quiet when all is present.
set -euo pipefail

have_postgres() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1; }
have_promtool() { command -v promtool >/dev/null 2>&1; }
have_buildah() { command -v buildah >/dev/null 2>&1; }
have_openssl() { command -v openssl >/dev/null 2>&1; }
have_mmdebstrap() { command -v mmdebstrap >/dev/null 2>&1; }
have_systemd_analyze() { command -v systemd-analyze >/dev/null 2>&1; }
have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
have_promtool || missing+=(prometheus)
have_buildah || missing+=(buildah)
have_mmdebstrap || missing+=(mmdebstrap)
have_openssl || missing+=(openssl)
have_systemd_analyze || missing+=(systemd)
have_node || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: please install ${missing[*]} with your package manager (no apt-get here)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/helixagent-apt.log 2>&1; then
  $sudo apt-get update >/tmp/helixagent-apt.log 2>&1
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/helixagent-apt.log 2>&1 \
    || { echo "install-deps: apt-get failed, see /tmp/helixagent-apt.log" >&2; exit 1; }
fi
# The packages may start their own system-wide servers (postgresql, redis-server, prometheus); HelixAgent runs its own
# on free ports and needs none of them.
have_postgres && have_redis && have_promtool && have_buildah && have_mmdebstrap && have_openssl && have_systemd_analyze && have_node
