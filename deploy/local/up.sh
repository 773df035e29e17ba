#!/usr/bin/env bash
# Runs a complete local NxMesh for trying it out (`go tool task up`):
#
#  1. builds the master and the agent into <data>/bin, and the agent binaries
#     the master serves at /downloads/ into <data>/downloads
#     (`go tool task build-agents`);
#  2. starts `nxmesh serve` in the background (log: <data>/master.log) with its
#     embedded PostgreSQL under <data> (run as root from a directory the user
#     "postgres" cannot reach, e.g. a clone under /root: under
#     /var/lib/nxmesh/<hash>, named in <data>/postgres.location), and waits for
#     /readyz;
#  3. unless the local agent already has its identity (<data>/agent/identity),
#     signs in as the first administrator and creates a registration token for
#     the first workspace of the first organization (the default ones);
#  4. starts `nxmesh-agent` in the background (log: <data>/agent.log), running its
#     own nginx under <data>/nginx (stopped with the agent; run as root, its
#     workers run as root too, since nobody could not reach <data>, which is
#     0700), and waits until the master reports it online;
#  5. prints the admin URL, the credentials and how to try it, then waits; Ctrl-C
#     (or either process dying) stops both.
#
# Running it again keeps everything: the database, the admin and the agent's
# identity (no new token is created). To start afresh, stop it and remove <data>
# and, when <data>/postgres.location exists, the directory it names.
#
# The first administrator is NXMESH_ADMIN_EMAIL / NXMESH_ADMIN_PASSWORD when set;
# otherwise admin@localhost with a password generated once and kept in
# <data>/admin-password (mode 0600), so this script can sign in to create the
# agent's token. The addresses and the data directory come from NXMESH_HTTP_ADDR
# (127.0.0.1:8080), NXMESH_GRPC_ADDR (127.0.0.1:9443) and NXMESH_DATA_DIR
# (./data); they are exported so the master uses the same values whatever
# config.yaml says.
set -euo pipefail

cd "$(dirname "$0")/../.."

log() { printf 'up: %s\n' "$*"; }
die() { printf 'up: error: %s\n' "$*" >&2; exit 1; }

command -v curl >/dev/null || die "curl is required"

export NXMESH_DATA_DIR="${NXMESH_DATA_DIR:-./data}"
export NXMESH_HTTP_ADDR="${NXMESH_HTTP_ADDR:-127.0.0.1:8080}"
export NXMESH_GRPC_ADDR="${NXMESH_GRPC_ADDR:-127.0.0.1:9443}"
export NXMESH_HTTP_PUBLIC_URL="${NXMESH_HTTP_PUBLIC_URL:-http://$NXMESH_HTTP_ADDR}"
data="$NXMESH_DATA_DIR"
base="http://$NXMESH_HTTP_ADDR"
grpc_addr="$NXMESH_GRPC_ADDR"
case "$grpc_addr" in
0.0.0.0:* | :*) grpc_addr="127.0.0.1:${grpc_addr##*:}" ;;
esac

mkdir -p "$data/bin"
chmod 700 "$data"

# ---- Credentials of the first administrator ----
password_note=""
if [ -z "${NXMESH_ADMIN_EMAIL:-}" ]; then
	export NXMESH_ADMIN_EMAIL="admin@localhost"
fi
if [ -z "${NXMESH_ADMIN_PASSWORD:-}" ]; then
	if [ ! -s "$data/admin-password" ]; then
		generated=$(head -c 1024 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | cut -c1-24)
		(umask 077 && printf '%s\n' "$generated" >"$data/admin-password")
	fi
	chmod 600 "$data/admin-password"
	NXMESH_ADMIN_PASSWORD="$(head -n 1 "$data/admin-password")"
	export NXMESH_ADMIN_PASSWORD
	password_note=" (kept in $data/admin-password)"
fi

if curl -fsS -o /dev/null "$base/readyz" 2>/dev/null; then
	die "something already answers on $base; stop it first (or set NXMESH_HTTP_ADDR)"
fi

# ---- Build ----
log "building nxmesh and nxmesh-agent into $data/bin"
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
built=$(date -u +%FT%TZ)
go build -ldflags "-X main.version=$version -X main.commit=$commit -X main.date=$built" -o "$data/bin/nxmesh" .
go build -ldflags "-X main.version=$version -X main.commit=$commit -X main.buildDate=$built" -o "$data/bin/nxmesh-agent" ./agent
# The binaries the master serves at /downloads/ for "Add agent" on other machines.
downloads="${NXMESH_DOWNLOADS_DIR:-$data/downloads}"
log "building the downloadable agents (linux/amd64, linux/arm64) into $downloads"
go tool task build-agents DIR="$downloads" >/dev/null

# ---- Processes and their shutdown ----
master_pid=""
agent_pid=""
stopping=""
stop() {
	[ -n "$stopping" ] && return
	stopping=1
	trap - INT TERM
	log "stopping"
	if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
		kill -TERM "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
	fi
	if [ -n "$master_pid" ] && kill -0 "$master_pid" 2>/dev/null; then
		kill -TERM "$master_pid" 2>/dev/null || true
		wait "$master_pid" 2>/dev/null || true
	fi
	log "stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# ---- Master ----
log "starting the master (log: $data/master.log)"
"$data/bin/nxmesh" serve >>"$data/master.log" 2>&1 &
master_pid=$!

# Waits up to $1 seconds for the command in the remaining arguments to succeed,
# failing early when the master exits.
await() {
	local seconds=$1
	shift
	local deadline=$((SECONDS + seconds))
	until "$@"; do
		kill -0 "$master_pid" 2>/dev/null || die "the master exited; see $data/master.log"
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}
await 180 curl -fs -o /dev/null "$base/readyz" || die "the master is not ready after 180 s; see $data/master.log"
log "master ready at $base"

# ---- REST helpers (no jq needed: ids and tokens never contain quotes) ----
access_token=""
api() { # METHOD PATH [JSON]
	local args=(-sS -X "$1" -H "Authorization: Bearer $access_token" -H "Content-Type: application/json")
	[ $# -ge 3 ] && args+=(--data "$3")
	curl "${args[@]}" "$base$2"
}
field() { # NAME: the first "NAME":"value" of stdin, or nothing
	{ grep -o "\"$1\":\"[^\"]*\"" || true; } | head -n 1 | sed 's/^"[^"]*":"//; s/"$//'
}

login() {
	local body
	body=$(printf '{"email":"%s","password":"%s"}' "$NXMESH_ADMIN_EMAIL" "$NXMESH_ADMIN_PASSWORD")
	access_token=$(curl -sS -X POST -H "Content-Type: application/json" --data "$body" "$base/v1/auth/login" | field access_token)
	[ -n "$access_token" ] || die "cannot sign in as $NXMESH_ADMIN_EMAIL with the password$password_note; this database's first administrator was created with other credentials: set NXMESH_ADMIN_EMAIL and NXMESH_ADMIN_PASSWORD to them"
}

default_workspace() {
	local org ws
	org=$(api GET "/v1/organizations?per_page=1" | field id)
	[ -n "$org" ] || die "the administrator has no organization"
	ws=$(api GET "/v1/organizations/$org/workspaces?per_page=1" | field id)
	[ -n "$ws" ] || die "organization $org has no workspace"
	printf '%s' "$ws"
}

login
workspace="${NXMESH_UP_WORKSPACE_ID:-$(default_workspace)}"
[ -n "$workspace" ] || die "no workspace to register the local agent in"

# ---- Agent ----
agent_args=(--master "$grpc_addr" --data-dir "$data/agent" --nginx-prefix "$data/nginx" --nginx-stop-on-exit)
if [ "$(id -u)" = 0 ]; then
	# Started by root, nginx's workers would run as nobody, who cannot reach the
	# temporary directories under <data>/nginx (<data> is 0700).
	agent_args+=(--nginx-user root)
fi
if [ -s "$data/agent/identity/agent.crt" ]; then
	log "the local agent is already registered; reusing its identity"
else
	log "creating a registration token for the local agent in workspace $workspace"
	resp=$(api POST "/v1/workspaces/$workspace/agents/tokens" '{"name":"local","labels":{"env":"local"},"expires_in_hours":1}')
	token=$(printf '%s' "$resp" | field token)
	fingerprint=$(printf '%s' "$resp" | { grep -o 'sha256:[0-9a-f]\{64\}' || true; } | head -n 1)
	[ -n "$token" ] && [ -n "$fingerprint" ] || die "creating the agent token failed: $resp"
	agent_args+=(--ca-fingerprint "$fingerprint" --name local)
	# In the environment rather than the command line, out of ps's sight.
	export NXMESH_AGENT_TOKEN="$token"
fi
mkdir -p "$data/agent" "$data/nginx"
log "starting the agent with its nginx under $data/nginx (log: $data/agent.log)"
"$data/bin/nxmesh-agent" "${agent_args[@]}" >>"$data/agent.log" 2>&1 &
agent_pid=$!

agent_online() {
	kill -0 "$agent_pid" 2>/dev/null || die "the agent exited; see $data/agent.log"
	api GET "/v1/workspaces/$workspace/agents?state=online" | grep -q '"state":"online"'
}
if await 60 agent_online; then
	log "agent online"
else
	log "warning: the agent is not online after 60 s; see $data/agent.log"
fi

database="$data/postgres"
if [ -s "$data/postgres.location" ]; then
	database="$(head -n 1 "$data/postgres.location") (kept outside $data, where PostgreSQL's user can reach it)"
fi

cat <<EOF

NxMesh is running.
  Admin:     $base/   (Agents: $base/workspaces/$workspace/agents)
  Email:     $NXMESH_ADMIN_EMAIL
  Password:  $NXMESH_ADMIN_PASSWORD$password_note
  Logs:      $data/master.log  $data/agent.log
  Database:  $database
  nginx:     $data/nginx (run by the agent "local", labels env=local)

Try it: create an upstream and a virtual host in the admin (or with the API),
e.g. listening on port 8081 for demo.local, then:

  curl -H 'Host: demo.local' http://127.0.0.1:8081/

With the API (workspace $workspace):

  T=\$(curl -s $base/v1/auth/login -H 'Content-Type: application/json' \\
      -d '{"email":"$NXMESH_ADMIN_EMAIL","password":"<password>"}' | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
  curl -s $base/v1/workspaces/$workspace/upstreams -H "Authorization: Bearer \$T" -H 'Content-Type: application/json' \\
      -d '{"name":"demo","servers":[{"address":"127.0.0.1:9000"}]}'
  curl -s $base/v1/workspaces/$workspace/virtual-hosts -H "Authorization: Bearer \$T" -H 'Content-Type: application/json' \\
      -d '{"name":"demo","server_name":"demo.local","listen_port":8081,"locations":[{"path":"/","upstream_id":"<id of demo>"}]}'

Press Ctrl-C to stop the master, the agent and its nginx.
EOF

# Runs until Ctrl-C or until one of the two exits.
set +e
wait -n "$master_pid" "$agent_pid"
status=$?
set -e
if [ -z "$stopping" ]; then
	if kill -0 "$master_pid" 2>/dev/null; then
		log "the agent exited ($status); see $data/agent.log"
	else
		log "the master exited ($status); see $data/master.log"
	fi
	exit 1
fi
