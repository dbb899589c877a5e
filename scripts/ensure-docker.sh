#!/usr/bin/env bash
# Make a Docker daemon reachable. Nothing to do when `docker info` works;
# otherwise, as root on Debian, install docker.io when the daemon is missing
# and start dockerd in the background, logging to $DATA_DIR/dockerd.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}

reachable() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

reachable && exit 0
lock docker
reachable && exit 0

if ! is_root || ! is_debian; then
    if command -v docker >/dev/null 2>&1 && [ -S /var/run/docker.sock ]; then
        die "a Docker daemon is running but $(id -un) cannot reach it: add yourself to the 'docker' group (sudo usermod -aG docker $(id -un), then log in again) or run as root."
    fi
    die "no Docker daemon reachable. Install and start Docker (on Debian: sudo apt-get install docker.io && sudo service docker start), or run 'make setup' as root on Debian to have it done."
fi

# /usr/local/bin/docker may be a lone client: what matters is the daemon.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    # ca-certificates: docker.io only recommends it, and pulls need it.
    apt_install docker.io ca-certificates
    # The new client may reach a daemon elsewhere (DOCKER_HOST, a mounted socket).
    reachable && exit 0
fi

log_file=$DATA_DIR/dockerd.log
log "starting dockerd (log: $log_file)"
# setsid and closed standard streams: the daemon must outlive this script and
# must not hold make's (or CI's) output pipe open, nor our lock.
(
    exec {LOCK_FD}>&-
    exec setsid nohup dockerd >>"$log_file" 2>&1 </dev/null
) &
pid=$!

for _ in $(seq "$WAIT_SECONDS"); do
    if reachable; then
        log "dockerd is up (pid $pid)"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { log "dockerd exited"; break; }
    sleep 1
done
# Its log is chatty: the errors say why (often missing privileges, e.g. in
# an unprivileged container, where dockerd cannot run at all).
log "no Docker daemon answering after dockerd was started; from $log_file:"
{ grep -E 'level=(error|fatal)|^failed' "$log_file" || tail -n 30 "$log_file"; } | tail -n 15 >&2
exit 1
