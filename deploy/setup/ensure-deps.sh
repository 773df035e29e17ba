#!/usr/bin/env bash
# Installs the system packages NxMesh needs for development and tests, from
# Debian's repositories, only when something is missing (running it again does
# nothing). Usage:
#
#   deploy/setup/ensure-deps.sh [postgres] [nginx] [chromium]
#
#   postgres  PostgreSQL server binaries for the embedded database (postgresql)
#   nginx     nginx with the stream module (nginx libnginx-mod-stream)
#   chromium  headless browser and its WebDriver for UI tests
#             (chromium chromium-driver fonts-liberation)
#
# The services the packages bring (the distribution's nginx on port 80 and its
# PostgreSQL cluster on port 5432) are stopped and disabled after installing:
# NxMesh runs its own instances.
set -euo pipefail

log() { printf 'ensure-deps: %s\n' "$*"; }
die() { printf 'ensure-deps: error: %s\n' "$*" >&2; exit 1; }

if [ "$#" -eq 0 ]; then
	die "usage: $0 [postgres] [nginx] [chromium]"
fi

have_postgres() {
	local initdb dir
	if initdb=$(command -v initdb 2>/dev/null); then
		dir=$(dirname "$initdb")
		[ -x "$dir/postgres" ] && return 0
	fi
	for dir in /usr/lib/postgresql/*/bin; do
		[ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
	done
	return 1
}

have_nginx() {
	{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } &&
		[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]
}

have_chromium() {
	[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] &&
		[ -d /usr/share/fonts/truetype/liberation ]
}

packages=()
installing=()
for component in "$@"; do
	case "$component" in
	postgres)
		if have_postgres; then
			log "postgres: present"
		else
			log "postgres: missing"
			packages+=(postgresql)
			installing+=(postgres)
		fi
		;;
	nginx)
		if have_nginx; then
			log "nginx: present"
		else
			log "nginx: missing (nginx binary or stream module)"
			packages+=(nginx libnginx-mod-stream)
			installing+=(nginx)
		fi
		;;
	chromium)
		if have_chromium; then
			log "chromium: present"
		else
			log "chromium: missing (chromium, chromedriver or fonts)"
			packages+=(chromium chromium-driver fonts-liberation)
			installing+=(chromium)
		fi
		;;
	*)
		die "unknown component '$component' (known: postgres nginx chromium)"
		;;
	esac
done

if [ "${#packages[@]}" -eq 0 ]; then
	log "nothing to install"
	exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		die "not root and sudo is missing; as root run: apt-get install ${packages[*]}"
	fi
fi
command -v apt-get >/dev/null 2>&1 ||
	die "apt-get not found (not a Debian-like system); install by hand: ${packages[*]}"

apt_opts=(-o DPkg::Lock::Timeout=300)
log "apt-get update"
"${sudo[@]}" apt-get "${apt_opts[@]}" update -q ||
	die "apt-get update failed"
log "apt-get install ${packages[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${packages[@]}" ||
	die "installing ${packages[*]} failed"

# stop_service NAME PIDFILE: stops and disables a service the package may have
# started, by whatever means this machine has; every failure is ignored.
stop_service() {
	local name=$1 pidfile=$2 pid
	log "stopping and disabling the distribution's $name service"
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		"${sudo[@]}" systemctl stop "$name" >/dev/null 2>&1 || true
		"${sudo[@]}" systemctl disable "$name" >/dev/null 2>&1 || true
	fi
	if command -v service >/dev/null 2>&1; then
		"${sudo[@]}" service "$name" stop >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		"${sudo[@]}" update-rc.d "$name" disable >/dev/null 2>&1 || true
	fi
	if [ -n "$pidfile" ] && [ -r "$pidfile" ]; then
		pid=$(head -n1 "$pidfile" 2>/dev/null || true)
		if [ -n "$pid" ] && [ "$pid" -gt 1 ] 2>/dev/null; then
			"${sudo[@]}" kill "$pid" >/dev/null 2>&1 || true
		fi
	fi
}

for component in "${installing[@]}"; do
	case "$component" in
	nginx) stop_service nginx /run/nginx.pid ;;
	postgres) stop_service postgresql "" ;;
	esac
done

failed=()
for component in "${installing[@]}"; do
	case "$component" in
	postgres) have_postgres || failed+=(postgres) ;;
	nginx) have_nginx || failed+=(nginx) ;;
	chromium) have_chromium || failed+=(chromium) ;;
	esac
done
if [ "${#failed[@]}" -gt 0 ]; then
	die "still missing after installing: ${failed[*]}"
fi
log "installed: ${installing[*]}"
