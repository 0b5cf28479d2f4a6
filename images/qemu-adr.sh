#!/usr/bin/env bash
# Unpack QEMU 10.0 from Debian bookworm-backports into pmemlab's cache for the ADR persistence model
# (lab/adr/qemu.py), without touching the system QEMU: `apt-get download` + `dpkg -x` into a private
# prefix, and qemu-plugin.h from the same version's Debian source tarball (its sha256 checked).
# Idempotent: an unpacked prefix with its header is kept. Needs a bookworm-backports apt source
# (bootstrap.sh adds one) and apt's lists; runs as the invoking user (apt-get download needs no root).
# Usage: images/qemu-adr.sh [CACHE_DIR]     prints the prefix
set -euo pipefail

VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
SEABIOS='1.16.3-2~bpo12+1'
ORIG='qemu_10.0.2+ds.orig.tar.xz'
ORIG_SHA256='0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1'
CACHE=${1:-${PMEMLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmemlab}}
PREFIX="$CACHE/qemu/${VERSION#*:}"

if [ -x "$PREFIX/root/usr/bin/qemu-system-x86_64" ] && [ -f "$PREFIX/include/qemu-plugin.h" ]; then
    echo "$PREFIX"; exit 0
fi
work="$PREFIX.tmp.$$"
rm -rf "$work"; mkdir -p "$work/debs" "$work/include"
trap 'rm -rf "$work"' EXIT
cd "$work/debs"
apt-get download -q "qemu-system-x86=$VERSION" "qemu-system-common=$VERSION" "qemu-system-data=$VERSION" \
    "seabios=$SEABIOS" >/dev/null 2>download.log || { cat download.log >&2; exit 1; }
for deb in *.deb; do dpkg -x "$deb" "$work/root"; done
# The backport's shared libraries must be on this host (most come with Debian 12's own QEMU).
if missing=$(ldd "$work/root/usr/bin/qemu-system-x86_64" | grep 'not found'); then
    echo "qemu-adr: libraries missing for QEMU $VERSION: $missing" >&2; exit 1
fi
cd "$work"
# The source tarball: apt-get source fetches it (the Debian diff of a backport may 404: not needed).
apt-get source -qq --download-only "qemu=$VERSION" >/dev/null 2>source.log || true
if [ ! -f "$ORIG" ] || [ "$(sha256sum "$ORIG" | cut -d' ' -f1)" != "$ORIG_SHA256" ]; then
    echo "qemu-adr: could not fetch $ORIG (needs a deb-src line for bookworm-backports):" >&2
    cat source.log >&2; exit 1
fi
tar -xJf "$ORIG" --strip-components=3 -C include qemu-10.0.2/include/qemu/qemu-plugin.h
rm -f "$ORIG" ./*.dsc ./*.debian.tar.* source.log
rm -rf debs
"$work/root/usr/bin/qemu-system-x86_64" --version | head -1 >/dev/null
rm -rf "$PREFIX"; mv "$work" "$PREFIX"
trap - EXIT
echo "$PREFIX"
