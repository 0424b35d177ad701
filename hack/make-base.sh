#!/usr/bin/env bash
# Make a local debian:bookworm-slim for podman on a machine that cannot pull images:
# debootstrap a minimal Debian, trim it as the official slim image is trimmed, import it.
#
#   hack/make-base.sh [CACHE_DIR] [IMAGE]     (defaults: .cache/podman-base, localhost/debian:bookworm-slim)
#
# Idempotent: the root filesystem is cached in CACHE_DIR (complete once its stamp file
# exists) and the import is skipped when the image exists. Needs root, debootstrap, podman.
set -euo pipefail

cd "$(dirname "$0")/.."
cache=${1:-.cache/podman-base}
image=${2:-localhost/debian:bookworm-slim}
rootfs=$cache/rootfs
stamp=$cache/rootfs.done

say() { printf 'make-base: %s\n' "$*" >&2; }

for tool in debootstrap podman tar; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool is missing; install it (apt-get install debootstrap podman)"; exit 2; }
done

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources | head -n 1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# What the official slim image leaves out, so sizes measured here are comparable.
trim() {
    local root=$1 dir
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
    cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
EOF
    cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
    for dir in man locale info groff lintian; do
        if [ -d "$root/usr/share/$dir" ]; then
            find "$root/usr/share/$dir" -mindepth 1 -delete
        fi
    done
    rm -rf "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/cache/apt/*.bin "${root:?}"/var/cache/apt/archives/*.deb \
        "${root:?}"/var/log/apt/* "${root:?}"/var/log/dpkg.log "${root:?}"/var/log/bootstrap.log
    : > "$root/etc/machine-id"
}

if [ -f "$stamp" ] && [ -d "$rootfs" ]; then
    say "root filesystem cached in $rootfs"
else
    rm -rf "$rootfs" "$stamp"  # a half-made one from an interrupted run
    mkdir -p "$cache"
    say "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    trim "$rootfs"
    date -u +%FT%TZ > "$stamp"
fi

if podman image exists "$image"; then
    say "$image exists"
else
    say "importing $image"
    tar --numeric-owner --sort=name -C "$rootfs" -c . |
        podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$image" >/dev/null
fi
