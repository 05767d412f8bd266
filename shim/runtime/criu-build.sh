#!/bin/bash
# criu-build.sh builds and installs the CRIU that berth's checkpoint and
# restore use (runc drives it). Debian 12's CRIU 3.17 fails on current
# kernels ("Unexpected rt vDSO area bounds" in `criu check`); CRIU 4.1
# works. Debian 13's binary package needs a newer libc than bookworm's, so
# this builds Debian's own 4.1.1 source package against bookworm's
# libraries instead. Idempotent: it does nothing when the installed CRIU is
# already 4.1.x.
#
# Usage: criu-build.sh [PREFIX]   (default /usr/local; installs PREFIX/sbin/criu)
set -euo pipefail

PREFIX=${1:-/usr/local}
VERSION=4.1.1
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ORIG=criu_${VERSION}.orig.tar.xz
ORIG_SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
DEBIAN=criu_${VERSION}-1.debian.tar.xz
DEBIAN_SHA256=103855d69544c3417abdb5b309c1773db98af2293c4dc48bba39e244b85c778e
DEPS=(gcc make pkg-config python3 python3-protobuf libprotobuf-dev libprotobuf-c-dev
	protobuf-c-compiler protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev
	libgnutls28-dev libnftables-dev libaio-dev uuid-dev curl xz-utils iptables)

if "$PREFIX/sbin/criu" --version 2>/dev/null | grep -q '^Version: 4\.1'; then
	exit 0
fi

missing=()
for p in "${DEPS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "criu: installing build dependencies: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
echo "criu: building CRIU $VERSION from Debian's source package into $PREFIX"
curl -fsSL -o "$ORIG" "$MIRROR/pool/main/c/criu/$ORIG"
echo "$ORIG_SHA256  $ORIG" | sha256sum -c --quiet -
tar -xf "$ORIG"
src=$tmp/criu-$VERSION
# Debian's packaging (its patches) when the mirror serves it; the upstream
# source alone builds a working criu too.
if curl -fsSL -o "$DEBIAN" "$MIRROR/pool/main/c/criu/$DEBIAN" &&
	echo "$DEBIAN_SHA256  $DEBIAN" | sha256sum -c --quiet -; then
	tar -xf "$DEBIAN" -C "$src"
else
	echo "criu: $DEBIAN unavailable, building the upstream source without Debian's patches"
fi
# Debian's own patches (quilt series), applied in order.
if [ -f "$src/debian/patches/series" ]; then
	while read -r patch _; do
		case "$patch" in '' | '#'*) continue ;; esac
		patch -d "$src" -p1 -s <"$src/debian/patches/$patch"
	done <"$src/debian/patches/series"
fi
# Docs need asciidoc/xmlto; berth only needs the binary.
make -C "$src" -j"$(nproc)" criu >"$tmp/build.log" 2>&1 || {
	tail -40 "$tmp/build.log"
	exit 1
}
install -d "$PREFIX/sbin"
install -m 0755 "$src/criu/criu" "$PREFIX/sbin/criu.tmp"
mv "$PREFIX/sbin/criu.tmp" "$PREFIX/sbin/criu"
"$PREFIX/sbin/criu" --version
