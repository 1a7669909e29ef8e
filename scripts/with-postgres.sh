#!/usr/bin/env bash
# with-postgres.sh CMD [ARGS...]
#
# Starts throwaway PostgreSQL servers (initdb + pg_ctl from the machine,
# PostgreSQL 15 preferred), runs CMD with
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/erpflow_test?sslmode=disable
#   TEST_PG_RESTART=<shell command that restarts the restartable server,
#                  waiting until it is up>
#   TEST_PG_RESTART_URL=the same on a second server, the one that
#                  TEST_PG_RESTART restarts (so that restart tests do not
#                  disturb tests running in parallel on TEST_DATABASE_URL)
# in its environment, always stops the servers and removes their files,
# and exits with CMD's status. It fails when PostgreSQL cannot start.
#
# As root, the server runs as the user "postgres" (created when missing),
# because PostgreSQL refuses to run as root.
#
# Environment:
#   PGBIN      directory holding initdb/pg_ctl (default: found automatically)
#   PG_FSYNC   "on" to keep fsync (default off: the data is thrown away)
#   PG_CONF    extra postgresql.conf lines for the main server, e.g. the
#              production-like settings `make bench-pg` passes
#   PG_KEEP    set to keep the data directory after exit (debugging)
set -euo pipefail

die() { echo "with-postgres: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: with-postgres.sh CMD [ARGS...]"

find_pgbin() {
	if [ -n "${PGBIN:-}" ]; then echo "$PGBIN"; return; fi
	local d
	for d in /usr/lib/postgresql/15/bin /usr/local/bin /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
	done
	if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
		dirname "$(command -v pg_ctl)"; return
	fi
	die "initdb/pg_ctl not found (install PostgreSQL 15 or set PGBIN)"
}
PGBIN=$(find_pgbin)
# pg_ctl/initdb in /usr/local/bin may be symlinks: resolve to the real bin dir
# so that postgres, psql and pg_isready of the same version are found.
PGBIN=$(dirname "$(readlink -f "$PGBIN/pg_ctl")")

ISREADY="$PGBIN/pg_isready"
[ -x "$ISREADY" ] || ISREADY=$(command -v pg_isready || true)
PSQL="$PGBIN/psql"
[ -x "$PSQL" ] || PSQL=$(command -v psql || true)
[ -n "$PSQL" ] || die "psql not found"

RUNAS=()
PGUSER_OS=$(id -un)
if [ "$(id -u)" = 0 ]; then
	PGUSER_OS=postgres
	if ! id postgres >/dev/null 2>&1; then
		useradd --system --no-create-home --shell /bin/sh postgres ||
			die "cannot create user postgres"
	fi
fi

# as_pg CMD... runs a command line as the server's OS user.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		su "$PGUSER_OS" -s /bin/sh -c "$*"
	else
		sh -c "$*"
	fi
}

# As root the server's user must reach the directory: use /tmp, not a
# TMPDIR that may sit under /root.
if [ "$(id -u)" = 0 ]; then
	TMP=$(mktemp -d /tmp/erpflow-pg.XXXXXX)
else
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/erpflow-pg.XXXXXX")
fi
chmod 0755 "$TMP"
[ "$(id -u)" = 0 ] && chown "$PGUSER_OS" "$TMP"

STARTED=() # data directories of running servers, stopped on exit
cleanup() {
	local rc=$?
	local d
	for d in "${STARTED[@]}"; do
		as_pg "'$PGBIN/pg_ctl' stop -D '$d' -m immediate -w -t 30" >/dev/null 2>&1 || true
	done
	if [ -z "${PG_KEEP:-}" ]; then
		rm -rf "$TMP"
	else
		echo "with-postgres: kept $TMP" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FSYNC=off
[ "${PG_FSYNC:-}" = on ] && FSYNC=on

# port_free PORT: nothing listens there.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_cluster NAME SHARED_BUFFERS: initdb + start a server in $TMP/NAME on
# a free port, wait until it is ready, create database erpflow_test; sets
# PORT.
start_cluster() {
	local name=$1 dir="$TMP/$1"
	local data="$dir/data" log="$dir/postgres.log"
	mkdir -p "$data" "$dir/sock"
	[ "$(id -u)" = 0 ] && chown -R "$PGUSER_OS" "$dir"
	as_pg "'$PGBIN/initdb' -D '$data' -U postgres -A trust -E UTF8 --no-locale --no-sync" >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }
	cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 300
fsync = $FSYNC
full_page_writes = $FSYNC
shared_buffers = $2
# no parallel query: small /dev/shm in containers, steadier tests
max_parallel_workers_per_gather = 0
log_min_messages = warning
CONF
	if [ "$1" = main ] && [ -n "${PG_CONF:-}" ]; then
		printf '%s\n' "$PG_CONF" >>"$data/postgresql.conf"
	fi
	PORT=""
	local try p
	for try in 1 2 3 4 5 6 7 8; do
		p=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
		port_free "$p" || continue
		if as_pg "'$PGBIN/pg_ctl' start -D '$data' -l '$log' -w -t 60 -o '-p $p'" >/dev/null 2>&1; then
			PORT=$p
			STARTED+=("$data")
			break
		fi
		# Lost a race for the port: try another one; anything else is fatal.
		grep -q -i "address already in use" "$log" 2>/dev/null || { cat "$log" >&2 || true; die "PostgreSQL did not start"; }
	done
	[ -n "$PORT" ] || { cat "$log" >&2 || true; die "PostgreSQL did not start (no free port)"; }

	# Wait until it accepts connections (pg_ctl -w already did; belt and braces).
	local deadline=$((SECONDS + 60))
	if [ -n "$ISREADY" ]; then
		until "$ISREADY" -q -h 127.0.0.1 -p "$PORT" -U postgres; do
			[ $SECONDS -lt $deadline ] || { cat "$log" >&2; die "PostgreSQL not ready after 60s"; }
			sleep 0.2
		done
	fi
	"$PSQL" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
		-c "CREATE DATABASE erpflow_test" || die "cannot create database erpflow_test"
}

# The main server: never restarted, shared by all tests.
start_cluster main 128MB
MAIN_PORT=$PORT
DATA="$TMP/main/data"
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$MAIN_PORT/erpflow_test?sslmode=disable"

# A second server for tests that restart the database, so that a restart
# does not pull the database from under tests running in parallel.
start_cluster restart 32MB
RDATA="$TMP/restart/data"
RLOG="$TMP/restart/postgres.log"
export TEST_PG_RESTART_URL="postgres://postgres@127.0.0.1:$PORT/erpflow_test?sslmode=disable"
# Restart keeps the same port and options (pg_ctl reuses postmaster.opts).
if [ "$(id -u)" = 0 ]; then
	export TEST_PG_RESTART="su $PGUSER_OS -s /bin/sh -c \"'$PGBIN/pg_ctl' restart -D '$RDATA' -l '$RLOG' -m fast -w -t 60\" >/dev/null"
else
	export TEST_PG_RESTART="'$PGBIN/pg_ctl' restart -D '$RDATA' -l '$RLOG' -m fast -w -t 60 >/dev/null"
fi
PORT=$MAIN_PORT
echo "with-postgres: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') at 127.0.0.1:$PORT (data $DATA)" >&2

set +e
"$@"
status=$?
set -e
exit $status
