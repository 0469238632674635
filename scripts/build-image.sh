#!/usr/bin/env bash
# Build a local systemd-capable Debian image for Molecule and the demo, with debootstrap.
# Usage: build-image.sh SUITE [IMAGE]   e.g. build-image.sh bookworm  -> dhis-celery/debian:bookworm
# No registry is reachable here, so images are made from Debian's packages. The mirror comes
# from this machine's own apt sources; those sources (with the suite swapped) go into the image
# so apt works inside. An image that already exists is reused (FORCE=1 rebuilds).
set -euo pipefail

suite=${1:?usage: build-image.sh SUITE [IMAGE]}
image=${2:-dhis-celery/debian:${suite}}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-image: $image exists, reusing it"
  exit 0
fi

# First "URIs:" of a deb822 stanza (or deb line) for the main archive and for security.
sources=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' <<<"$sources")
security=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' <<<"$sources")
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  security=$(awk '$1 == "deb" && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "build-image: no Debian mirror found in this machine's apt sources" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/dhis-celery-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "build-image: debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,python3,sudo,ca-certificates,iproute2,procps \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

rm -f "$rootfs"/etc/apt/sources.list
mkdir -p "$rootfs"/etc/apt/sources.list.d
{
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite"
  if [ -n "$security" ]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$security" "$suite"
  fi
} >"$rootfs"/etc/apt/sources.list.d/debian.sources
# A container has no console to log in on; keep systemd's boot quiet and short.
rm -f "$rootfs"/etc/machine-id && touch "$rootfs"/etc/machine-id
ln -sf /dev/null "$rootfs"/etc/systemd/system/getty@tty1.service || true

tar -C "$rootfs" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$image" >/dev/null
echo "build-image: built $image"
