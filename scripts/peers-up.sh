#!/usr/bin/env bash
# peers-up.sh: start the peer servers the load harness compares holdfast
# with, on 127.0.0.1, and print their URLs (one per line, on stdout):
#
#   redis://127.0.0.1:16379/0?name=redis-always      appendfsync always
#   redis://127.0.0.1:16380/0?name=redis-everysec    appendfsync everysec
#   postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable
#                                                    synchronous_commit on
#
# Data, logs and sockets live under ${PEERS_DIR:-/tmp/holdfast-peers}; the
# URLs are also written to $PEERS_DIR/urls. It installs redis-server and
# postgresql with apt-get when they are missing (root only; no sudo). It is
# idempotent: servers it already started are left running. As root,
# PostgreSQL runs as the postgres user (runuser). scripts/peers-down.sh
# stops everything and removes $PEERS_DIR.
#
# Ports: PEERS_REDIS_ALWAYS_PORT (16379), PEERS_REDIS_EVERYSEC_PORT (16380),
# PEERS_PG_PORT (15432).
set -euo pipefail

PEERS_DIR=${PEERS_DIR:-/tmp/holdfast-peers}
REDIS_ALWAYS_PORT=${PEERS_REDIS_ALWAYS_PORT:-16379}
REDIS_EVERYSEC_PORT=${PEERS_REDIS_EVERYSEC_PORT:-16380}
PG_PORT=${PEERS_PG_PORT:-15432}

log() { echo "peers-up: $*" >&2; }
die() { log "$*"; exit 1; }

# --- installation -----------------------------------------------------------

apt_updated=
apt_install() {
	if [ "$(id -u)" -ne 0 ]; then
		die "$1 is missing; install it as root: apt-get update && apt-get install -y $1"
	fi
	command -v apt-get >/dev/null || die "$1 is missing and there is no apt-get to install it"
	if [ -z "$apt_updated" ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		apt_updated=1
	fi
	log "apt-get install -y $1"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}

pg_bindir() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
PG_BIN=$(pg_bindir) || { apt_install postgresql && PG_BIN=$(pg_bindir); } || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"

# --- redis -----------------------------------------------------------------

mkdir -p "$PEERS_DIR"
chmod 755 "$PEERS_DIR"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_redis() { # port appendfsync
	local port=$1 fsync=$2 dir="$PEERS_DIR/redis-$1"
	mkdir -p "$dir"
	if alive "$dir/redis.pid"; then
		log "redis ($fsync) already running on 127.0.0.1:$port"
		return
	fi
	if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
		die "127.0.0.1:$port answers PING but was not started by this script ($dir/redis.pid)"
	fi
	redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
		--appendonly yes --appendfsync "$fsync" --save '' \
		--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
	for _ in $(seq 100); do
		redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 || die "redis on $port did not start: see $dir/redis.log"
	log "redis ($fsync) started on 127.0.0.1:$port"
}

start_redis "$REDIS_ALWAYS_PORT" always
start_redis "$REDIS_EVERYSEC_PORT" everysec

# --- postgresql ------------------------------------------------------------

PG_DIR="$PEERS_DIR/pg"
PG_DATA="$PG_DIR/data"
mkdir -p "$PG_DIR"
if [ "$(id -u)" -eq 0 ]; then
	# root cannot run postgres: the postgresql package made a postgres user.
	id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user (apt-get install -y postgresql)"
	chown postgres: "$PG_DIR"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi

if [ ! -f "$PG_DATA/PG_VERSION" ]; then
	rm -rf "$PG_DATA"
	as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
		die "initdb failed: see $PG_DIR/initdb.log"
	cat >>"$PG_DATA/postgresql.conf" <<EOF

# holdfast peers-up.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
synchronous_commit = on
fsync = on
full_page_writes = on
max_connections = 300
EOF
	log "initdb $PG_DATA"
fi

if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
	log "postgres already running on 127.0.0.1:$PG_PORT"
else
	as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 start >&2 ||
		die "postgres did not start: see $PG_DIR/postgres.log"
	log "postgres started on 127.0.0.1:$PG_PORT"
fi

# --- urls ------------------------------------------------------------------

{
	echo "redis://127.0.0.1:$REDIS_ALWAYS_PORT/0?name=redis-always"
	echo "redis://127.0.0.1:$REDIS_EVERYSEC_PORT/0?name=redis-everysec"
	echo "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
} >"$PEERS_DIR/urls"
cat "$PEERS_DIR/urls"
