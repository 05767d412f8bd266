#!/usr/bin/env bash
# build.sh [VERSION]: builds the unmodified upstream node e2e suite
# (k8s.io/kubernetes/test/e2e_node, a `go test -c` binary with etcd and
# kube-apiserver linked in), the ginkgo CLI that runs it in parallel, and
# the Go programs of the suite's test images (agnhost, nonewprivs' nnp),
# from the Go module proxy, once per version, into a cache shared by every
# run, and prints that directory. The suite looks for `kubelet` next to its
# own binary, so the kubelet kit's kubelet (same release) is copied beside
# it.
#
# k8s.io/kubernetes cannot be built from its own go.mod (it replaces every
# staging module with ./staging/...), so the build module starts from the
# kubelet kit's build/go.mod, which pins each staging module to its
# published v0.x.y, and adds the suite's test dependencies with `go get -t`.
# The suite takes about 20 minutes on 2 cores and 3.6 GB of memory; no
# partial output is ever left under a final name.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
kit_mod=$shared/kubelet/build
version=${1:-${NODE_E2E_VERSION:-$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3; exit}' "$kit_mod/go.mod")}}
cache=${BERTH_NODE_E2E_CACHE:-/var/cache/berth/node-e2e}
dir=$cache/$version
kubelet=${KUBELET:-/usr/local/bin/kubelet}
GO=${GO:-go}

log() { printf '[node-e2e build] %s\n' "$*" >&2; }

mkdir -p "$dir"
exec 8>"$cache/.build.lock"
flock 8

# The build module: the kit's pins, the suite's test dependencies added.
mod=$dir/mod
if [ ! -f "$mod/go.mod" ]; then
	rm -rf "$mod.tmp"
	mkdir -p "$mod.tmp"
	sed -e 's/^module .*/module node-e2e-build/' -e '/^tool /d' "$kit_mod/go.mod" >"$mod.tmp/go.mod"
	cp "$kit_mod/go.sum" "$mod.tmp/go.sum"
	if ! grep -q "k8s.io/kubernetes $version" "$mod.tmp/go.mod"; then
		echo "node-e2e build: the kubelet kit pins $(grep 'k8s.io/kubernetes v' "$kit_mod/go.mod"), not $version" >&2
		exit 1
	fi
	(cd "$mod.tmp" && GOFLAGS=-mod=mod $GO get -t "k8s.io/kubernetes/test/e2e_node@$version" \
		"k8s.io/kubernetes/test/images/agnhost@$version" "k8s.io/kubernetes/test/images/nonewprivs@$version") >&2
	mv "$mod.tmp" "$mod"
fi

minor=${version#v1.}
minor=${minor%%.*}
ld="-s -w"
for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ld+=" -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
	ld+=" -X $vpkg.gitTreeState=clean"
done

# build OUT CMD...: runs CMD (writing $out.tmp) in the module unless OUT exists.
build() {
	local out=$1
	shift
	[ -x "$dir/$out" ] && return 0
	log "building $out ($version)"
	local t0
	t0=$(date +%s)
	(cd "$mod" && "$@") >&2
	mv "$dir/$out.tmp" "$dir/$out"
	log "built $out in $(($(date +%s) - t0))s"
}
# The same flags as the kit's kubelet build, so the packages both link
# come from the Go build cache.
build e2e_node.test env CGO_ENABLED=0 $GO test -c -vet=off -trimpath -ldflags "$ld" -o "$dir/e2e_node.test.tmp" k8s.io/kubernetes/test/e2e_node
build agnhost env CGO_ENABLED=0 $GO build -trimpath -ldflags "$ld" -o "$dir/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
build nnp env CGO_ENABLED=0 $GO build -trimpath -o "$dir/nnp.tmp" k8s.io/kubernetes/test/images/nonewprivs
build ginkgo env CGO_ENABLED=0 GOFLAGS=-mod=mod $GO build -trimpath -o "$dir/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
# agnhost's porter serves TLS with the certificate its image ships.
src=$(cd "$mod" && $GO list -m -f '{{.Dir}}' k8s.io/kubernetes)
for f in localhost.crt localhost.key; do
	[ -f "$dir/$f" ] || install -m 0644 "$src/test/images/agnhost/porter/$f" "$dir/$f"
done

# The kubelet of the same release, beside the suite; refreshed when the
# kit's changes.
if [ ! -x "$kubelet" ]; then
	"$shared/kubelet/setup" >&2
fi
have=$("$kubelet" --version | awk '{print $2}')
if [ "$have" != "$version" ]; then
	echo "node-e2e build: $kubelet is $have, the suite is $version" >&2
	exit 1
fi
if ! cmp -s "$kubelet" "$dir/kubelet"; then
	install -m 0755 "$kubelet" "$dir/kubelet.tmp"
	mv "$dir/kubelet.tmp" "$dir/kubelet"
fi
echo "$dir"
