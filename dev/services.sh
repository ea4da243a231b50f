# Start, readiness and stop for each local service and each pipeline binary.
# Sourced by dev/lib.sh; every function is idempotent.

kafka_java() {
  java -Xms256m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$BXB_ROOT/dev/config/kafka-log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

# The standard Kafka admin tools, run against the local broker's classpath.
kafka_tool() {
  java -Xmx256m -Dlog4j2.configurationFile="$BXB_ROOT/dev/config/kafka-log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

kafka_ready() {
  (exec 3<>"/dev/tcp/127.0.0.1/$BXB_KAFKA_PORT") 2>/dev/null || return 1
  timeout 30 "$BXB_ROOT/dev/kafka-topics" --list >/dev/null 2>&1
}

start_kafka() {
  is_running kafka && return 0
  local dir="$BXB_STATE/kafka"
  mkdir -p "$dir/data" "$BXB_LOGS"
  sed -e "s|@KAFKA_PORT@|$BXB_KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$BXB_KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$dir/data|g" \
      "$BXB_ROOT/dev/config/kafka-server.properties" > "$dir/server.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$BXB_LOGS/kafka.log" | tail -n 1)"
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$dir/server.properties" >>"$BXB_LOGS/kafka.log" 2>&1 \
      || die "formatting Kafka storage failed (log: .dev/logs/kafka.log)"
  fi
  log "starting kafka on $BXB_KAFKA_BROKERS"
  spawn kafka java -Xms256m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$BXB_ROOT/dev/config/kafka-log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
  wait_ready kafka 120 kafka_ready
}

registry_ready() { http_ok "$BXB_SCHEMA_REGISTRY_URL/subjects"; }

start_registry() {
  is_running registry && return 0
  local java_bin; java_bin="$(registry_java)" || die "no Java >= 21 for Apicurio Registry; run ./dev/install"
  log "starting apicurio registry on $BXB_SCHEMA_REGISTRY_URL"
  # In-memory storage: the gateway registers the event schema again at every start.
  # Quarkus' management interface would bind 0.0.0.0:9000 by default; keep it on the loopback.
  spawn registry "$java_bin" -Xms128m -Xmx512m \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$BXB_REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$BXB_REGISTRY_MANAGEMENT_PORT" \
    -jar "$APICURIO_HOME/quarkus-run.jar"
  wait_ready registry 120 registry_ready
}

postgres_ready() {
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$BXB_POSTGRES_PORT"
}

# PostgreSQL refuses to run as root, so as root its files belong to the postgres user, who may
# not be able to enter the clone (a private checkout directory); then they live under
# /var/lib/postgresql instead, in a directory named after the clone.
postgres_dir() {
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$BXB_STATE" 2>/dev/null; then
    echo "/var/lib/postgresql/bxb-dev-$(printf '%s' "$BXB_STATE" | sha256sum | cut -c1-12)"
  else
    echo "$BXB_STATE/postgres"
  fi
}

start_postgres() {
  is_running postgres && return 0
  local dir bin
  dir="$(postgres_dir)"
  bin="$(pg_bin)"
  mkdir -p "$dir" "$BXB_LOGS"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "initialising postgres in $dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_pg_user "$bin/initdb" -D "$dir/data" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$BXB_LOGS/postgres.log" 2>&1 \
      || die "initdb failed (log: .dev/logs/postgres.log)"
    cat "$BXB_ROOT/dev/config/postgresql.conf" >> "$dir/data/postgresql.conf"
  fi
  mkdir -p "$dir/socket"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/socket"
  log "starting postgres on 127.0.0.1:$BXB_POSTGRES_PORT"
  local as_owner=()
  [ "$(id -u)" = 0 ] && as_owner=(runuser -u postgres --)
  spawn postgres "${as_owner[@]}" "$bin/postgres" -D "$dir/data" -p "$BXB_POSTGRES_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir/socket"
  wait_ready postgres 60 postgres_ready
  # The application role and database; the superuser only connects over the private socket.
  as_pg_user "$bin/psql" -q -h "$dir/socket" -p "$BXB_POSTGRES_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE bxb LOGIN CREATEDB PASSWORD ''bxb'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bxb') \gexec
SELECT 'CREATE DATABASE bxb OWNER bxb'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'bxb') \gexec
SQL
}

clickhouse_ready() { [ "$(curl -fsS --max-time 2 "$BXB_CLICKHOUSE_URL/ping")" = "Ok." ]; }

start_clickhouse() {
  is_running clickhouse && return 0
  local dir="$BXB_STATE/clickhouse"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  sed -e "s|@HTTP_PORT@|$BXB_CLICKHOUSE_HTTP_PORT|g" \
      -e "s|@TCP_PORT@|$BXB_CLICKHOUSE_TCP_PORT|g" \
      -e "s|@DIR@|$dir|g" \
      -e "s|@USERS@|$BXB_ROOT/dev/config/clickhouse-users.xml|g" \
      "$BXB_ROOT/dev/config/clickhouse-config.xml" > "$dir/config.xml"
  log "starting clickhouse on $BXB_CLICKHOUSE_URL"
  spawn clickhouse clickhouse-server --config-file="$dir/config.xml"
  wait_ready clickhouse 60 clickhouse_ready
  # The database and its table come from `bxbctl migrate` (./dev/up), or from the consumer
  # itself, which migrates on start by default.
}

start_service() {
  case "$1" in
    kafka) start_kafka ;;
    registry) start_registry ;;
    postgres) start_postgres ;;
    clickhouse) start_clickhouse ;;
    gateway|consumer-clickhouse|consumer-postgres) start_app "$1" ;;
    *) die "unknown service '$1' (one of: ${SERVICES[*]} ${APPS[*]})" ;;
  esac
}

stop_service() {
  case "$1" in
    postgres)
      # SIGTERM would wait for every client to disconnect ("smart" mode); fast mode does not.
      if is_running postgres; then
        log "stopping postgres"
        as_pg_user "$(pg_bin)/pg_ctl" -D "$(postgres_dir)/data" stop -m fast -w >/dev/null
      fi
      stop_pid postgres ;;
    kafka|registry|clickhouse|gateway|consumer-clickhouse|consumer-postgres)
      is_running "$1" && log "stopping $1"
      stop_pid "$1" ;;
    *) die "unknown service '$1' (one of: ${SERVICES[*]} ${APPS[*]})" ;;
  esac
}

# The pipeline binaries. Each reads its settings from BXB_* variables (see `--help`).
app_port() {
  case "$1" in
    gateway) echo "$BXB_GATEWAY_PORT" ;;
    consumer-clickhouse) echo "$BXB_CONSUMER_CLICKHOUSE_PORT" ;;
    consumer-postgres) echo "$BXB_CONSUMER_POSTGRES_PORT" ;;
  esac
}

start_app() {
  local name="$1"
  if is_running "$name"; then
    # A rebuilt binary replaces the running one, so ./dev/up after a code change runs the change.
    [ "$BXB_BIN/$name" -nt "$(pid_file "$name")" ] || return 0
    log "$name was rebuilt; restarting it"
    stop_pid "$name"
  fi
  [ -x "$BXB_BIN/$name" ] || die "$BXB_BIN/$name is missing; ./dev/up builds it"
  local port; port="$(app_port "$name")"
  log "starting $name on 127.0.0.1:$port"
  # shellcheck disable=SC2046
  spawn "$name" env $(grep -v '^$' "$BXB_STATE/env") \
    BXB_LISTEN_ADDR="127.0.0.1:$port" \
    BXB_API_KEYS_FILE="$BXB_STATE/api-keys.json" \
    "$BXB_BIN/$name"
  wait_ready "$name" 60 http_ok "http://127.0.0.1:$port/readyz"
}
