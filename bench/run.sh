#!/usr/bin/env bash
# HelixAgent benchmark: gateway-minus-direct latency and throughput against a local fake OpenAI upstream, with the
# production path on (auth, cluster rate limits in Redis, usage ledger in PostgreSQL, metrics, tracing).
#   bench/run.sh                 # DURATION=10s CONCURRENCY="1 16 64 256" by default
# Prints a table and writes it to bench/results/<date>.txt. Needs postgresql, redis-server and wrk (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
export DOTNET_CLI_TELEMETRY_OPTOUT=1

for tool in wrk redis-server; do
  command -v $tool >/dev/null || { echo "bench: $tool is missing (apt-get install -y wrk redis-server)" >&2; exit 1; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "bench: PostgreSQL is missing (apt-get install -y postgresql)" >&2; exit 1; }

echo "building Release..." >&2
dotnet build -c Release HelixAgent.Api/HelixAgent.Api.csproj -v q -nologo >/dev/null
dotnet build -c Release HelixAgent.FakeUpstream/HelixAgent.FakeUpstream.csproj -v q -nologo >/dev/null
api=HelixAgent.Api/bin/Release/net10.0/helixagent.dll
fake=HelixAgent.FakeUpstream/bin/Release/net10.0/helixagent-fake-upstream.dll

work=$(mktemp -d /tmp/helixagent-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -INT -f -- "-D $work/pg/data" 2>/dev/null || true
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }
wait_port() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "bench: port $1 did not open" >&2; exit 1; }

pg_port=$(free_port); redis_port=$(free_port); up_port=$(free_port); gw_port=$(free_port)
mkdir -p "$work/pg"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
as_pg "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off >"$work/pg.log" 2>&1 &
pids+=($!)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$pg_port"; wait_port "$redis_port"; sleep 0.5
psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE helixagent_db" >/dev/null
db="Host=127.0.0.1;Port=$pg_port;Username=postgres;Database=helixagent_db"
redis="127.0.0.1:$redis_port"
env "ConnectionStrings__helixagent-db=$db" dotnet "$api" migrate up >/dev/null
key=$(env "ConnectionStrings__helixagent-db=$db" dotnet "$api" keys create --name bench --rpm 1000000000 --tpm 2000000000 --quiet | tail -1)

dotnet "$fake" --protocol openai --port "$up_port" --reply "The quick brown fox jumps over the lazy dog" >"$work/fake.log" 2>&1 &
pids+=($!)
env ASPNETCORE_ENVIRONMENT=Production ASPNETCORE_URLS="http://127.0.0.1:$gw_port" \
  "ConnectionStrings__helixagent-db=$db" "ConnectionStrings__redis=$redis" \
  Providers__bench__Type=openai Providers__bench__BaseUrl="http://127.0.0.1:$up_port/v1" Providers__bench__Models__0=bench-model \
  Logging__LogLevel__Default=Warning DOTNET_gcServer=0 \
  dotnet "$api" >"$work/gateway.log" 2>&1 &
gw_pid=$!; pids+=($gw_pid)
wait_port "$up_port"; wait_port "$gw_port"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$gw_port/ready" >/dev/null && break; sleep 0.1; done

body='{"model":"bench-model","messages":[{"role":"user","content":"Say something short."}],"max_tokens":32}'
upbody='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say something short."}],"max_tokens":32}'
cachebody='{"model":"bench-model","temperature":0,"messages":[{"role":"user","content":"Cache me."}],"max_tokens":32}'
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status"; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
# run URL BODY KEY CONNECTIONS -> "p50_ms p99_ms rps total non2xx"
run() {
  local threads=2; [ "$4" -lt 2 ] && threads=1
  local out; out=$(BODY="$2" KEY="$3" wrk -t"$threads" -c"$4" -d"$DURATION" --latency -s bench/chat.lua "$1" 2>&1)
  local p50 p99 rps total non2xx
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
  echo "$p50 $p99 $rps $total $non2xx"
}

idle_rss=$(rss)
# warm-up (JIT, pools)
BODY="$body" KEY="$key" wrk -t2 -c16 -d3s -s bench/chat.lua "http://127.0.0.1:$gw_port/v1/chat/completions" >/dev/null 2>&1
BODY="$upbody" wrk -t2 -c16 -d3s -s bench/chat.lua "http://127.0.0.1:$up_port/v1/chat/completions" >/dev/null 2>&1

report="$work/report.txt"
{
  echo "HelixAgent benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ), $DURATION per run, wrk -t2"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), .NET $(dotnet --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "upstream: fake OpenAI server on loopback (no added latency); gateway: Production, auth, Redis rate limits, ledger, metrics"
  echo
  printf "%-6s | %10s %10s %9s | %10s %10s %9s | %10s %10s\n" conns "direct p50" "direct p99" "direct/s" "gw p50" "gw p99" "gw/s" "added p50" "added p99"
} >"$report"
for c in $CONCURRENCY; do
  read -r dp50 dp99 drps _ _ < <(run "http://127.0.0.1:$up_port/v1/chat/completions" "$upbody" "" "$c")
  read -r gp50 gp99 grps _ _ < <(run "http://127.0.0.1:$gw_port/v1/chat/completions" "$body" "$key" "$c")
  printf "%-6s | %8sms %8sms %9s | %8sms %8sms %9s | %8sms %8sms\n" "$c" "$dp50" "$dp99" "$drps" "$gp50" "$gp99" "$grps" \
    "$(awk -v a="$gp50" -v b="$dp50" 'BEGIN{printf "%.3f", a-b}')" "$(awk -v a="$gp99" -v b="$dp99" 'BEGIN{printf "%.3f", a-b}')" >>"$report"
done
steady_rss=$(rss)
curl -s "http://127.0.0.1:$gw_port/v1/chat/completions" -H "X-API-Key: $key" -H "Content-Type: application/json" -d "$cachebody" >/dev/null
read -r cp50 cp99 crps _ _ < <(run "http://127.0.0.1:$gw_port/v1/chat/completions" "$cachebody" "$key" 16)
sleep 2
# wrk stops with requests in flight that the gateway still serves: compare the ledger with the gateway's own count.
rows=$(psql -h 127.0.0.1 -p "$pg_port" -U postgres -d helixagent_db -Atc "SELECT count(*) FROM completions")
rows2xx=$(psql -h 127.0.0.1 -p "$pg_port" -U postgres -d helixagent_db -Atc "SELECT count(*) FROM completions WHERE status BETWEEN 200 AND 299")
metrics=$(curl -s "http://127.0.0.1:$gw_port/metrics")
answered=$(echo "$metrics" | awk '/^helixagent_requests_total/ {s += $NF} END {printf "%d", s}')
answered2xx=$(echo "$metrics" | awk '/^helixagent_requests_total/ && /status_class="2xx"/ {s += $NF} END {printf "%d", s}')
lost=$(echo "$metrics" | awk '$1=="helixagent_ledger_rows_lost_total" {print $2}')
{
  echo
  echo "cache hit (16 conns): p50 ${cp50}ms p99 ${cp99}ms, ${crps}/s"
  echo "RSS: idle ${idle_rss} MB, steady ${steady_rss} MB, after $(rss) MB"
  echo "ledger: completions rows = ${rows} (2xx: ${rows2xx}); requests the gateway answered = ${answered} (2xx: ${answered2xx}); rows lost = ${lost:-?}"
} >>"$report"
cat "$report"
mkdir -p bench/results
cp "$report" "bench/results/$(date -u +%Y%m%d_%H%M%S).txt"
