#!/usr/bin/env bash
# containerd.sh: the same node conformance run (run.sh, same skip list,
# same images through the same mirror tree) against containerd 2.4.x built
# from the Go module proxy (test/lib/containerd-build.sh), with runc 1.5.2
# and a private root, socket and CNI bridge: the comparison that
# docs/node-conformance.md records. REPORT_DIR defaults to
# test/node-e2e/report/containerd.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
export REPORT_DIR=${REPORT_DIR:-$here/report/containerd}
runc=/usr/local/lib/berth/runc
[ -x "$runc" ] || runc=$(command -v runc)

ctrd=$("$top/test/lib/containerd-build.sh") || { echo "containerd build failed"; exit 2; }
certs=$("$shared/conformance/setup" | tail -n 1) || { echo "conformance kit setup failed"; exit 2; }
dir=$(mktemp -d /tmp/containerd-nodee2e.XXXXXX)
bridge=cnodee2e$RANDOM
bridge=${bridge:0:15}
mkdir -p "$dir/cni"
cat >"$dir/cni/10-nodee2e.conflist" <<JSON
{"cniVersion":"1.0.0","name":"containerd-nodee2e","plugins":[
 {"type":"bridge","bridge":"$bridge","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.239.0.0/24"}]],"dataDir":"$dir/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}
JSON
cat >"$dir/config.toml" <<TOML
version = 3
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.cri.v1.runtime"]
  # Without CAP_SYS_RESOURCE (this VM) the pause container's -998 fails.
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "$runc"
  SystemdCgroup = false
# The suite's preconfigured RuntimeClass handler (PodOverhead, RuntimeClass
# specs), runc under another name, as upstream's node e2e jobs set it.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.test-handler]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.test-handler.options]
  BinaryName = "$runc"
  SystemdCgroup = false
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
  conf_dir = "$dir/cni"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "$certs"
[plugins."io.containerd.transfer.v1.local"]
  config_path = "$certs"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.k8s.io/pause:3.10.1"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
TOML
PATH=$ctrd:$PATH "$ctrd/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
pid=$!
cleanup() {
	crictl --timeout 60s --runtime-endpoint "unix://$dir/containerd.sock" rmp -af >/dev/null 2>&1
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	# containerd leaves its shims' mounts and the pod netns pins.
	for m in $(awk -v d="$dir" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null
	done
	ip link del "$bridge" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	[ -S "$dir/containerd.sock" ] && break
	sleep 0.1
done
"$here/run.sh" "unix://$dir/containerd.sock"
rc=$?
mkdir -p "$REPORT_DIR"
cp "$dir/containerd.log" "$REPORT_DIR/containerd.log"
exit $rc
