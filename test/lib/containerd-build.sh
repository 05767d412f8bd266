#!/bin/bash
# containerd-build.sh [VERSION]: builds containerd and its runc shim from the
# Go module proxy once, into a cache that every suite comparing berth with
# containerd 2.x shares (the migration tests, the full-node bench, node
# conformance, the node VM), and prints the directory holding the three
# binaries (ctr too: containerd's CRI cannot restore a checkpoint, only its
# own client API can, which the migration tests drive through ctr). The build takes minutes and the result never changes for a
# version, so it is kept across runs; a partial build is never left under
# the final name.
set -euo pipefail
version=${1:-${CONTAINERD_VERSION:-v2.4.2}}
cache=${BERTH_CONTAINERD_CACHE:-/var/cache/berth}
dir=$cache/containerd-$version
if [ ! -x "$dir/containerd" ] || [ ! -x "$dir/containerd-shim-runc-v2" ] || [ ! -x "$dir/ctr" ]; then
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.containerd-$version.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "building containerd $version into $dir" >&2
	(cd "$tmp" && CGO_ENABLED=0 GOBIN=$tmp GOFLAGS=-mod=mod ${GO:-go} install \
		-tags "no_btrfs no_devmapper no_zfs" \
		"github.com/containerd/containerd/v2/cmd/containerd@$version" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$version" \
		"github.com/containerd/containerd/v2/cmd/ctr@$version") >&2
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi
echo "$dir"
