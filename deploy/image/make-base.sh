#!/bin/sh
# Make Phoenix's Python base images from Debian packages, without pulling anything.
#
#   deploy/image/make-base.sh [RUNTIME_TAG [BUILD_TAG]]
#
# Images cannot be pulled here (no registry), so the base is a Debian bookworm root filesystem
# made by debootstrap (--variant=minbase: essential packages and apt only) and imported:
#
#   RUNTIME_TAG (default phoenix-base/python:bookworm)        python3 and ca-certificates;
#       the Dockerfile's final stage (ARG BASE)
#   BUILD_TAG   (default phoenix-base/python-build:bookworm)  the same plus python3-venv
#       (ensurepip's pip); the Dockerfile's build stage (ARG BUILD_BASE)
#
# One debootstrap makes both: the build image is imported first, then python3-venv and the
# wheels ensurepip carries are purged and the runtime image imported, so the final image holds
# no pip, compiler or build tool. Debian bookworm's Python is 3.11, which Phoenix needs (>= 3.11).
#
# Needs root, debootstrap (apt-get install debootstrap) and docker; takes about a minute.
# PHOENIX_DEBIAN_MIRROR names another mirror, e.g. a snapshot for a reproducible base:
#   PHOENIX_DEBIAN_MIRROR=http://snapshot.debian.org/archive/debian/20250520T000000Z
set -eu

RUNTIME_TAG=${1:-phoenix-base/python:bookworm}
BUILD_TAG=${2:-phoenix-base/python-build:bookworm}
SUITE=bookworm
MIRROR=${PHOENIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Needed only to build: purged before the runtime image is imported.
BUILD_ONLY="python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl"

if [ "$(id -u)" -ne 0 ]; then
  echo "make-base.sh: debootstrap needs root (run it with sudo)" >&2
  exit 1
fi
command -v debootstrap >/dev/null 2>&1 || {
  echo "make-base.sh: no debootstrap (apt-get install debootstrap)" >&2
  exit 1
}
command -v docker >/dev/null 2>&1 || { echo "make-base.sh: no docker command" >&2; exit 1; }

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/phoenix-base.XXXXXX")
# --one-file-system: never into a /proc or /sys a failed debootstrap left mounted there.
trap 'rm -rf --one-file-system "$ROOT"' EXIT
trap 'exit 130' INT TERM

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOT/rootfs" "$MIRROR" >"$ROOT/debootstrap.log" 2>&1 || {
  tail -n 30 "$ROOT/debootstrap.log" >&2
  exit 1
}

slim() {
  # What a container never reads: apt's package lists and caches, documentation (but each
  # package's copyright file), translations of programs' messages, logs.
  chroot "$ROOT/rootfs" apt-get clean
  rm -rf "$ROOT/rootfs/var/lib/apt/lists/"* "$ROOT/rootfs/var/cache/apt/"*.bin \
    "$ROOT/rootfs/var/cache/debconf/"*-old "$ROOT/rootfs/var/lib/dpkg/"*-old \
    "$ROOT/rootfs/usr/share/man/"* "$ROOT/rootfs/usr/share/info/"* \
    "$ROOT/rootfs/usr/share/locale/"* "$ROOT/rootfs/var/log/"* "$ROOT/rootfs/tmp/"*
  find "$ROOT/rootfs/usr/share/doc" ! -type d ! -name copyright -delete
  find "$ROOT/rootfs/usr/share/doc" -type d -empty -delete
}

import_image() {
  tar --numeric-owner -C "$ROOT/rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR ($2)" \
    - "$1" >/dev/null
  echo "$1"
}

slim
import_image "$BUILD_TAG" "python3, python3-venv, ca-certificates"

# shellcheck disable=SC2086
chroot "$ROOT/rootfs" dpkg --purge $BUILD_ONLY >>"$ROOT/debootstrap.log" 2>&1 || {
  tail -n 30 "$ROOT/debootstrap.log" >&2
  exit 1
}
slim
import_image "$RUNTIME_TAG" "python3, ca-certificates"
