#!/bin/sh
# gen-debian.sh regenerates debian-layer.tar.gz: a container layer built from
# real Debian 12 (bookworm) .deb files, with a var/lib/dpkg/status made from
# their control fields. Run it on a Debian 12 host (or container) with apt
# sources configured:
#
#   cd internal/scan/index/testdata && ./gen-debian.sh
#
# The package versions in the generated status file come from whatever the
# mirror serves; the test reads the expected versions back from the fixture's
# status file, so regenerating does not require editing the test.
set -eu

PKGS="base-files zlib1g libbz2-1.0 liblzma5"
OUT="$(cd "$(dirname "$0")" && pwd)/debian-layer.tar.gz"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"

# As root, apt warns that the download is unsandboxed; that is harmless.
apt-get download $PKGS >/dev/null

rootfs="$work/rootfs"
mkdir -p "$rootfs/var/lib/dpkg"
status="$rootfs/var/lib/dpkg/status"
: >"$status"
for p in $PKGS; do
	deb=$(ls "${p}"_*.deb)
	dpkg-deb -x "$deb" "$rootfs"
	# Status goes right after Package, as dpkg writes it.
	dpkg-deb -f "$deb" | awk 'NR==1 {print; print "Status: install ok installed"; next} {print}' >>"$status"
	echo >>"$status"
done

rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/locale" \
	"$rootfs/usr/share/common-licenses" "$rootfs/usr/share/base-files" "$rootfs/usr/share/lintian"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00Z' \
	--format=gnu -C "$rootfs" -cf - . | gzip -n -9 >"$OUT"
ls -l "$OUT"
