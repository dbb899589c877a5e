#!/usr/bin/env bash
# Build the images that the built-in nodes and the tests run, each only when
# it is missing or its sources changed. Every image carries the label
# pipewell.source-hash, the hash of what it is built from; an image whose
# label matches is left alone.
#
#   pipewell/base:bookworm   Debian bookworm (minbase) + python3 + python3-pil
#   pipewell/busybox:latest  Debian's static busybox: sh and the coreutils applets
#   pipewell/<node>:latest   one per nodes/<node>/Dockerfile (pipewell nodes build)
#
# No container registry is needed: when debian:bookworm-slim cannot be pulled,
# the base is made with debootstrap from the Debian mirror and its root file
# system is kept in $DATA_DIR/cache so that later imports take seconds.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

HASH_LABEL=pipewell.source-hash
BASE_IMAGE=pipewell/base:bookworm
BUSYBOX_IMAGE=pipewell/busybox:latest
BASE_SUITE=bookworm
# What the built-in nodes need, nothing more: Debian adds the dependencies.
# (python3-pil depends on "mime-support | python3-pil.imagetk", and through
# mime-support's mailcap on all of perl: 45 MB of the image that cannot go.)
BASE_PACKAGES=python3,python3-pil
DEBIAN_MIRROR=${PIPEWELL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT=${PIPEWELL_PULL_TIMEOUT:-20}
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Applets the busybox image must have (the tests and examples rely on them).
BUSYBOX_APPLETS="sh cat cp mv ls head tail wc dd sleep echo printf mkdir rm tr sed grep
sha256sum md5sum env true false test expr yes seq stat id touch"

sha() { sha256sum | cut -c1-64; }

image_hash() {
    docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# After a rebuild, remove the image the tag pointed to before, unless
# something still uses it (docker rmi refuses then, which is fine).
drop_replaced() {
    local old=$1 image=$2
    if [ -n "$old" ] && [ "$old" != "$(image_id "$image")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

# rm -rf a root file system debootstrap built, never following a mount
# (debootstrap may bind /dev, /proc or /sys into it).
remove_rootfs() {
    local dir=$1 target
    [ -e "$dir" ] || return 0
    target=$(realpath "$dir")
    awk -v t="$target" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts |
        sort -r | while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$dir"
}

# ------------------------------------------------------------------ base

slim_rootfs() {
    local root=$1
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/usr/share/lintian "$root"/debootstrap
    find "$root"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find "$root"/var/log -type f -delete
    rm -f "$root"/var/cache/debconf/*-old
    # Docker mounts its own; the host's would leak into the image.
    rm -f "$root"/etc/resolv.conf "$root"/etc/hostname
    # Images built FROM the base stay slim too (the same rules as debian:*-slim).
    cat >"$root"/etc/dpkg/dpkg.cfg.d/pipewell-slim <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
}

debootstrap_base() {
    local tarball=$1 root=$CACHE_DIR/base-rootfs
    local build_log=$CACHE_DIR/debootstrap.log
    apt_install debootstrap debian-archive-keyring
    remove_rootfs "$root"
    # shellcheck disable=SC2064 # expanded now: $root is local
    trap "remove_rootfs '$root'" EXIT
    log "debootstrap $BASE_SUITE with $BASE_PACKAGES (a minute or two; log: $build_log)"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" \
        "$BASE_SUITE" "$root" "$DEBIAN_MIRROR" >"$build_log" 2>&1; then
        tail -n 30 "$build_log" >&2
        die "debootstrap failed; full log in $build_log"
    fi
    slim_rootfs "$root"
    rm -f "$CACHE_DIR"/base-"$BASE_SUITE"-*.tar
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    remove_rootfs "$root"
    trap - EXIT
}

import_base() {
    local tarball=$1 hash=$2
    log "importing $BASE_IMAGE from $tarball"
    docker import -m "pipewell base: debootstrap $BASE_SUITE + $BASE_PACKAGES" \
        -c "ENV PATH=$DEFAULT_PATH" -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
        -c "LABEL $HASH_LABEL=$hash" "$tarball" "$BASE_IMAGE" >/dev/null
}

# With a registry in reach, the official slim image plus the same packages.
pull_base() {
    local hash=$1
    log "trying docker pull debian:$BASE_SUITE-slim (${PULL_TIMEOUT}s at most)"
    timeout "$PULL_TIMEOUT" docker pull -q "debian:$BASE_SUITE-slim" >/dev/null 2>&1 || return 1
    docker build --label "$HASH_LABEL=$hash" -t "$BASE_IMAGE" - <<EOF
FROM debian:$BASE_SUITE-slim
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BASE_PACKAGES//,/ } \\
 && rm -rf /var/lib/apt/lists/*
EOF
}

ensure_base() {
    local hash old tarball
    hash=$({ declare -f slim_rootfs debootstrap_base import_base pull_base
             echo "$BASE_SUITE $BASE_PACKAGES $DEFAULT_PATH"; } | sha)
    old=$(image_id "$BASE_IMAGE")
    if [ "$(image_hash "$BASE_IMAGE")" = "$hash" ]; then
        log "$BASE_IMAGE is up to date"
        return 0
    fi
    tarball=$CACHE_DIR/base-$BASE_SUITE-${hash:0:16}.tar
    if [ ! -f "$tarball" ] && pull_base "$hash"; then
        drop_replaced "$old" "$BASE_IMAGE"
        return 0
    fi
    [ -f "$tarball" ] || debootstrap_base "$tarball"
    import_base "$tarball" "$hash"
    drop_replaced "$old" "$BASE_IMAGE"
}

# --------------------------------------------------------------- busybox

build_busybox_rootfs() {
    local root=$1 path applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,dev,proc,sys}
    cp /bin/busybox "$root/bin/busybox"
    "$root/bin/busybox" --list-full | while read -r path; do
        mkdir -p "$root/$(dirname "$path")"
        [ -e "$root/$path" ] || ln -s /bin/busybox "$root/$path"
    done
    for applet in $BUSYBOX_APPLETS; do
        [ -L "$root/bin/$applet" ] || [ -L "$root/usr/bin/$applet" ] ||
            die "/bin/busybox has no '$applet' applet"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
    chmod 700 "$root/root"
    chmod 1777 "$root/tmp" "$root/var/tmp"
}

ensure_busybox() {
    local hash old root=$CACHE_DIR/busybox-rootfs
    # Debian's static build: the image has no libc to link against.
    apt_install busybox-static
    hash=$({ declare -f build_busybox_rootfs; echo "$BUSYBOX_APPLETS $DEFAULT_PATH"
             sha </bin/busybox; } | sha)
    if [ "$(image_hash "$BUSYBOX_IMAGE")" = "$hash" ]; then
        log "$BUSYBOX_IMAGE is up to date"
        return 0
    fi
    log "building $BUSYBOX_IMAGE"
    old=$(image_id "$BUSYBOX_IMAGE")
    rm -rf "$root"
    build_busybox_rootfs "$root"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
        docker import -m "pipewell busybox: $(/bin/busybox | head -n 1)" \
            -c "ENV PATH=$DEFAULT_PATH" -c 'CMD ["/bin/sh"]' \
            -c "LABEL $HASH_LABEL=$hash" - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$root"
    drop_replaced "$old" "$BUSYBOX_IMAGE"
}

# ----------------------------------------------------------------- nodes
# `pipewell nodes build` (orchestrator/node_images.py) builds pipewell/<node> from
# each nodes/<node>/Dockerfile, with the same source-hash label rule, a few at a
# time: the one implementation a worker also uses for an image it lacks.
VENV=${VENV:-.venv}
NODE_BUILDS=${PIPEWELL_NODE_BUILDS:-2}

if ! docker info >/dev/null 2>&1; then
    die "no Docker daemon reachable: run scripts/ensure-docker.sh first (make setup does)."
fi
lock images
ensure_base
ensure_busybox
"$VENV/bin/pipewell" nodes build --parallel "$NODE_BUILDS" | while read -r line; do log "$line"; done
