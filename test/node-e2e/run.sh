#!/usr/bin/env bash
# run.sh ENDPOINT: the upstream node conformance suite (e2e_node v1.37.2,
# focus [NodeConformance]) against any CRI endpoint, e.g.
# unix:///run/containerd/containerd.sock. The suite starts etcd and
# kube-apiserver in process and a real kubelet registered with them, which
# drives the runtime through pods created over the API.
#
# The runtime must already pull through the conformance kit's mirror tree
# (its registry config_path = the path `../shared/conformance/setup`
# prints) and have a CNI network; this script builds (build.sh) and pushes
# (nodee2e images) the suite's images to the kit's loopback registry under
# their upstream names, runs the suite with the checked-in skip list, and
# prints one FAIL line per failed spec and last `N passed, N failed, N
# skipped`, the same for every runtime. Exit status 0 when nothing failed.
#
# Env: REPORT_DIR (default ./node-e2e-report), NODE_E2E_FOCUS (a regexp;
# default the whole [NodeConformance] focus), NODE_E2E_EXCLUDE (a regexp
# of specs left out of the focus, default upstream's), NODE_E2E_PROCS (ginkgo
# processes, default 4), NODE_E2E_TIMEOUT (default 2h), NODE_NAME,
# SKIP_LIST (default skip.txt beside this script), REGISTRY_ADDR.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
endpoint=${1:?usage: run.sh ENDPOINT}
REPORT_DIR=${REPORT_DIR:-$PWD/node-e2e-report}
focus=${NODE_E2E_FOCUS:-'\[NodeConformance\]'}
# What upstream's node conformance jobs leave out of the focus
# (pull-kubernetes-node-e2e-containerd): flaky specs, slow ones, and the
# serial ones, which restart kubelet or need the node alone. Empty runs them.
exclude=${NODE_E2E_EXCLUDE-'\[Flaky\]|\[Slow\]|\[Serial\]'}
procs=${NODE_E2E_PROCS:-4}
timeout=${NODE_E2E_TIMEOUT:-2h}
node=${NODE_NAME:-node-e2e}
skips=${SKIP_LIST:-$here/skip.txt}
export REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
GO=${GO:-go}

log() { printf '[node-e2e] %s\n' "$*" >&2; }

bin=$("$here/build.sh") || { log "build failed"; exit 2; }
"$shared/conformance/setup" >/dev/null || { log "conformance kit setup failed"; exit 2; }
tool=$(mktemp -d /tmp/node-e2e-tool.XXXXXX)
trap 'rm -rf "$tool"' EXIT
(cd "$top" && $GO build -o "$tool/nodee2e" ./test/node-e2e/nodee2e) || { log "nodee2e build failed"; exit 2; }
pause=${BERTH_BIN:-$top/bin}/berth-pause
if [ ! -x "$pause" ]; then
	(cd "$top" && $GO build -o "$tool/berth-pause" ./cmd/berth-pause) || { log "no pause binary"; exit 2; }
	pause=$tool/berth-pause
fi
(cd "$top" && CGO_ENABLED=0 $GO build -trimpath -o "$tool/nmeter" ./test/node-e2e/nmeter) || { log "nmeter build failed"; exit 2; }
log "images: building and pushing to $REGISTRY_ADDR"
"$tool/nodee2e" images -registry "$REGISTRY_ADDR" -bin "$bin" -debs "$(dirname "$bin")/debs" -pause "$pause" -nmeter "$tool/nmeter" ||
	{ log "image build failed"; exit 2; }
# Entries "when:CONDITION spec # reason" apply only on a host where the
# condition holds (the host lacks what the spec needs, whatever the
# runtime); the others always. The run uses the list that applies here.
conds=" "
[ -e /sys/fs/cgroup/cgroup.controllers ] || conds+="cgroup-v1 "
if ip link add "nde2e$$" type dummy 2>/dev/null; then
	ip link del "nde2e$$"
else
	conds+="no-dummy-link "
fi
awk -v conds="$conds" '
	/^when:/ { c = substr($1, 6); if (index(conds, " " c " ") == 0) next; sub(/^when:[^ ]+ +/, "") }
	{ print }' "$skips" >"$tool/skip.txt"
skips=$tool/skip.txt
log "host conditions:${conds% }"
skip_re=$("$tool/nodee2e" skip-regex "$skips") || exit 2
[ -n "$exclude" ] && skip_re="$exclude${skip_re:+|$skip_re}"

# One kubelet per host: it owns /var/lib/kubelet, its ports and
# /var/log/containers, so this waits for the kubelet kit's runs and theirs
# for it.
exec 9>/tmp/berth-kubelet.lock
flock 9

rm -rf "$REPORT_DIR"
mkdir -p "$REPORT_DIR"
# kubelet makes its root dir a shared mount by binding it onto itself; a
# bind the suite's kubelet made is undone after it.
kubelet_root_mounted=0
mountpoint -q /var/lib/kubelet && kubelet_root_mounted=1
# The suite writes the kubelet's config, static pod dir and API token file
# into its working directory, which ginkgo makes the directory of the
# binary it is given: links in a fresh work dir keep them out of the
# cache (the suite looks for kubelet beside the path it was started as).
work=$(mktemp -d /tmp/node-e2e-work.XXXXXX)
trap 'rm -rf "$tool" "$work"' EXIT
ln -s "$bin/e2e_node.test" "$bin/kubelet" "$work/"

# Off systemd the suite must not find systemd-run (it would start kubelet
# as a transient unit), so PATH gets /usr/bin's entries but that one.
path=$PATH
if [ ! -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
	mkdir "$work/path"
	ln -s /usr/bin/* "$work/path/"
	rm "$work/path/systemd-run"
	path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:$work/path
	[ -d /usr/local/go/bin ] && path+=:/usr/local/go/bin
fi

# Kubelet flags: the suite's kubelet, off systemd, would move every process
# of the host's root cgroup into /system and itself into /kubelet; a shared
# node keeps its processes where they are.
kflags="--system-cgroups= --kubelet-cgroups= --runtime-cgroups="
# Container and pod stats from the runtime itself (the CRI's
# ListPodSandboxStats, ListPodSandboxMetrics and ListMetricDescriptors,
# which berth and containerd 2.x both implement) instead of cAdvisor's:
# cAdvisor labels a container with its pod only through a plugin for its
# runtime at that runtime's default socket (containerd's, CRI-O's), which
# berth has none of and which these runs' private containerd socket
# defeats. Given to the suite rather than only in kubelet-config.yaml, as
# upstream's CRI-stats jobs do: the suite passes it on to kubelet, and its
# specs that depend on it see it (ContainerMetrics, which reads cAdvisor's
# own metrics, skips; ResourceMetrics leaves out cAdvisor's swap gauge).
gates="PodAndContainerStatsFromCRI=true"
log "running e2e_node $(basename "$bin") against $endpoint: focus $focus, excluding ${exclude:-nothing}, $procs processes, skip list $(grep -cv '^\(#\|$\)' "$skips") entries"
t0=$(date +%s)
(cd "$work" && PATH=$path "$bin/ginkgo" --procs="$procs" --timeout="$timeout" \
	--focus="$focus" --skip="$skip_re" --no-color --json-report=report.json --output-dir="$REPORT_DIR" \
	"$work/e2e_node.test" -- \
	--container-runtime-endpoint="$endpoint" --image-service-endpoint="$endpoint" \
	--prepull-images=false --node-name="$node" --report-dir="$REPORT_DIR" --feature-gates="$gates" \
	--kubelet-config-file="$here/kubelet-config.yaml" --kubelet-flags="$kflags" \
	--v=2 >"$REPORT_DIR/e2e.log" 2>&1)
rc=$?
log "suite exited $rc after $(($(date +%s) - t0))s; log $REPORT_DIR/e2e.log"
# The suite stops its kubelet without waiting for the pods of specs that
# end last, whose volumes (tmpfs for secrets, configMaps, projected
# volumes) stay mounted under /var/lib/kubelet/pods until a kubelet starts
# again (seen once: a projected-configMap spec's three). No kubelet runs
# while this holds the lock.
for m in $(awk 'index($5, "/var/lib/kubelet/pods/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
	umount "$m" 2>/dev/null || umount -l "$m"
done
if [ "$kubelet_root_mounted" = 0 ] && mountpoint -q /var/lib/kubelet; then
	umount /var/lib/kubelet 2>/dev/null || umount -l /var/lib/kubelet
fi
flock -u 9
# The suite starts kubelet once: if it dies, every later spec times out
# against a dead node, and only its log says why.
if grep -q '^panic: ' "$REPORT_DIR/kubelet.log" 2>/dev/null; then
	log "kubelet crashed during the run; its panic (whole log $REPORT_DIR/kubelet.log):"
	grep -A 12 '^panic: ' "$REPORT_DIR/kubelet.log" | head -30
fi
if [ ! -s "$REPORT_DIR/report.json" ]; then
	tail -40 "$REPORT_DIR/e2e.log"
	log "no report: the suite did not run"
	exit 1
fi
"$tool/nodee2e" summary -report "$REPORT_DIR/report.json" -focus "$focus" -exclude "$exclude" -skips "$skips" -out "$REPORT_DIR"
src=$?
# A CI run keeps only this output: what kubelet saw when its probes and
# hooks failed tells a pod network that does not answer (timeouts, no
# route) from servers that do not (refused, status codes). The specs that
# expect failing probes add their own lines.
if [ "$src" -ne 0 ] && [ -s "$REPORT_DIR/kubelet.log" ]; then
	log "kubelet's probe and hook failures by reason (addresses and numbers elided):"
	grep -iE '"probe failed"|"[^"]*hook[^"]* failed' "$REPORT_DIR/kubelet.log" |
		grep -oE '(output|err|error)=.*' | cut -c1-200 |
		sed -E 's/[0-9]+(\.[0-9]+){3}(:[0-9]+)?/ADDR/g; s/[0-9]+/N/g' |
		sort | uniq -c | sort -rn | head -12
fi
if [ "$src" -eq 0 ] && [ "$rc" -ne 0 ]; then
	# No spec failed, yet the suite did: its setup, flags or teardown.
	tail -20 "$REPORT_DIR/e2e.log"
	log "the suite failed outside its specs (exit $rc)"
	exit 1
fi
exit "$src"
