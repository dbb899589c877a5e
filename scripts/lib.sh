# Shared helpers for the set-up scripts; sourced, not run.
# shellcheck shell=bash

# The scripts run from the repository root so that relative paths (the data
# directory above all) mean the same thing whoever calls them.
PIPEWELL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PIPEWELL_ROOT" || exit 1

DATA_DIR=${PIPEWELL_DATA_DIR:-.pipewell}
CACHE_DIR=$DATA_DIR/cache
mkdir -p "$CACHE_DIR"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

# Hold an exclusive lock on $CACHE_DIR/<name>.lock for the rest of the script,
# so that two `make setup` started at once do not build the same thing twice
# (or start two Docker daemons).
# The descriptor is LOCK_FD, for a long-lived child to close.
lock() {
    exec {LOCK_FD}>"$CACHE_DIR/$1.lock"
    if ! flock -n "$LOCK_FD"; then
        log "waiting for another set-up holding $CACHE_DIR/$1.lock"
        flock "$LOCK_FD"
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

APT_UPDATED=
apt_update() {
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
}

# Install the Debian packages given that are not installed yet. Services in
# them are not started (policy-rc.d): the scripts start what they need
# themselves, and tests start their own Redis.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        installed "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root || ! is_debian; then
        die "missing packages: ${missing[*]}. Install them (on Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run again."
    fi
    # Package lists: fetched when there are none, refreshed when an install
    # with the ones there fails (they may name versions the mirror dropped).
    if [ -z "$APT_UPDATED" ] && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt_update
    fi
    local policy=/usr/sbin/policy-rc.d added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    log "apt-get install ${missing[*]}"
    local rc=0
    apt_get_install "${missing[@]}" || rc=$?
    if [ "$rc" -ne 0 ] && [ -z "$APT_UPDATED" ]; then
        rc=0
        { apt_update && apt_get_install "${missing[@]}"; } || rc=$?
    fi
    [ -z "$added_policy" ] || rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

apt_get_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null
}
