#!/bin/bash
# criu-build.sh installs a CRIU that works on this machine, for berth's
# checkpoint and restore (runc drives it). "Works" is proven by function,
# not by a version string or `criu check`: PROBE dumps and restores a
# throwaway process within a bound. CRIU 4.1.1 passes `criu check` on
# kernel 6.18 and then hangs in every dump; Debian 12's 3.17 fails there;
# Debian 13's binaries need a newer libc than bookworm's. So CRIU is built
# from the upstream source tarballs Debian's pool serves (pinned by
# SHA-256), newest first, and the first build that passes the probe is
# installed.
#
# An installed CRIU that passes the probe is kept. One that fails it is
# replaced; when no candidate works (the mirror stopped serving them, or
# none runs on this kernel), a failing one is moved aside to criu.broken
# and setup goes on: berthd then reports CheckpointRestoreReady=false with
# the reason, and the checkpoint RPCs answer FailedPrecondition.
#
# Usage: criu-build.sh PREFIX PROBE...
#   installs PREFIX/sbin/criu; PROBE... is a command that takes a CRIU
#   path as its last argument (e.g. `bin/berthd criu probe`).
set -euo pipefail

PREFIX=${1:?usage: criu-build.sh PREFIX PROBE...}
shift
PROBE=("$@")
((${#PROBE[@]})) || { echo "usage: criu-build.sh PREFIX PROBE..." >&2; exit 2; }
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# version  sha256 of criu_<version>.orig.tar.xz (upstream's release tarball)
CANDIDATES=(
	"4.2.1 29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9"
	"4.1.1 f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe"
)
DEPS=(gcc make pkg-config python3 python3-protobuf libprotobuf-dev libprotobuf-c-dev
	protobuf-c-compiler protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev
	libgnutls28-dev libnftables-dev libaio-dev uuid-dev curl xz-utils iptables)
DEST=$PREFIX/sbin/criu

probe() {
	local out
	if out=$("${PROBE[@]}" "$1" 2>&1); then
		echo "criu: $out"
		return 0
	fi
	echo "criu: $1 fails the dump/restore probe: $out"
	return 1
}

if [ -x "$DEST" ]; then
	probe "$DEST" && exit 0
	echo "criu: replacing $DEST"
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
for c in "${CANDIDATES[@]}"; do
	read -r version sha <<<"$c"
	orig=criu_${version}.orig.tar.xz
	echo "criu: building CRIU $version from $orig"
	if ! curl -fsSL --retry 2 -o "$tmp/$orig" "$MIRROR/pool/main/c/criu/$orig"; then
		echo "criu: $orig is not served by $MIRROR; next candidate"
		continue
	fi
	if ! echo "$sha  $tmp/$orig" | sha256sum -c --quiet - >/dev/null 2>&1; then
		echo "criu: $orig does not match its pinned SHA-256; next candidate"
		continue
	fi
	src=$tmp/criu-$version
	tar -xf "$tmp/$orig" -C "$tmp"
	# Docs need asciidoc/xmlto; berth only needs the binary.
	if ! make -C "$src" -j"$(nproc)" criu >"$tmp/build-$version.log" 2>&1; then
		tail -20 "$tmp/build-$version.log"
		echo "criu: CRIU $version does not build here; next candidate"
		continue
	fi
	probe "$src/criu/criu" || continue
	install -d "$PREFIX/sbin"
	install -m 0755 "$src/criu/criu" "$DEST.tmp"
	mv "$DEST.tmp" "$DEST"
	echo "criu: installed CRIU $version as $DEST"
	exit 0
done

if [ -e "$DEST" ]; then
	mv "$DEST" "$DEST.broken"
	echo "criu: moved the failing $DEST aside to $DEST.broken"
fi
echo "criu: WARNING: no CRIU that works here could be installed; berthd will report" \
	"CheckpointRestoreReady=false and refuse checkpoint/restore with FailedPrecondition"
