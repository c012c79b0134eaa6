#!/usr/bin/env bash
# peers-down.sh: stop the servers scripts/peers-up.sh started (the two
# redis-servers and the throwaway PostgreSQL) and remove
# ${PEERS_DIR:-/tmp/holdfast-peers}. Idempotent: with nothing running or
# nothing there it does nothing and succeeds. It only stops processes
# whose pid files are under $PEERS_DIR.
set -euo pipefail

PEERS_DIR=${PEERS_DIR:-/tmp/holdfast-peers}

log() { echo "peers-down: $*" >&2; }

if [ ! -d "$PEERS_DIR" ]; then
	log "nothing at $PEERS_DIR"
	exit 0
fi

# stop_pid pidfile name: SIGTERM, then wait up to 30s, then SIGKILL.
stop_pid() {
	local pidfile=$1 name=$2 pid
	[ -f "$pidfile" ] || return 0
	pid=$(head -n1 "$pidfile")
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name ($pid) did not stop: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "stopped $name ($pid)"
	fi
}

for dir in "$PEERS_DIR"/redis-*; do
	[ -d "$dir" ] && stop_pid "$dir/redis.pid" "redis ${dir##*/redis-}"
done

PG_DATA="$PEERS_DIR/pg/data"
if [ -f "$PG_DATA/postmaster.pid" ]; then
	pg_ctl=
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/pg_ctl" ] && pg_ctl="$d/pg_ctl"
	done
	if [ -n "$pg_ctl" ]; then
		if [ "$(id -u)" -eq 0 ]; then
			runuser -u postgres -- "$pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 2>/dev/null || true
		else
			"$pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 2>/dev/null || true
		fi
	fi
	# Without pg_ctl, or if it failed: the postmaster's pid, SIGTERM is
	# a smart shutdown, so send SIGINT (fast) by hand.
	pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -INT "$pid"
		for _ in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
	log "stopped postgres"
fi

rm -rf "$PEERS_DIR"
log "removed $PEERS_DIR"
