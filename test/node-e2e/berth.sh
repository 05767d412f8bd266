#!/usr/bin/env bash
# make node-e2e: the upstream node conformance suite (run.sh) against a
# real bin/berthd on a private root, socket, CNI bridge and the
# conformance kit's mirror tree. Exits non-zero when a spec outside the
# skip list fails or the run leaves anything behind. Reports (the suite's
# log, kubelet.log, berthd.log, results.txt, summary.txt) go to
# REPORT_DIR, default test/node-e2e/report/berth.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
BERTH_BIN=${BERTH_BIN:-$top/bin}
export REPORT_DIR=${REPORT_DIR:-$here/report/berth}
. "$top/test/lib/daemon.sh"

certs=$("$shared/conformance/setup" | tail -n 1) || { echo "conformance kit setup failed"; exit 2; }
# The suite's preconfigured RuntimeClass handler (PodOverhead, RuntimeClass
# specs) is runc under another name, as upstream's node e2e jobs set it;
# naming a handler replaces the default set, so runc is listed too.
runc=/usr/local/lib/berth/runc
[ -x "$runc" ] || runc=$(command -v runc)
export BERTH_EXTRA_CONFIG="[runtime.handlers.runc]
binary = \"$runc\"
[runtime.handlers.test-handler]
binary = \"$runc\""
subnet=10.238.0.0/24
kubepods_note
berth_start nodee2e "$subnet" "$certs" || exit 2
trap 'berth_cleanup' EXIT
"$here/run.sh" "unix://$BERTH_SOCK"
rc=$?
berth_remove_all
berth_stop
kubepods_remove
mkdir -p "$REPORT_DIR"
cp "$BERTH_DIR/berthd.log" "$REPORT_DIR/berthd.log" 2>/dev/null
if [ "$rc" -ne 0 ]; then
	# What a failed CI run cannot be asked afterwards: berthd's warnings
	# and the state of the pods' network on that machine.
	echo "berthd's warnings and errors (times and IDs elided; log $REPORT_DIR/berthd.log):"
	grep -E 'level=(WARN|ERROR)' "$BERTH_DIR/berthd.log" | cut -d' ' -f2- |
		sed -E 's/ (request_id|duration|sandbox_id|container_id|pod_uid)=[^ ]+//g; s/[0-9a-f]{64}/ID/g' | cut -c1-200 |
		sort | uniq -c | sort -rn | head -12
	echo "network: $(ip -br addr show dev "$BERTH_BRIDGE" 2>&1); route to a pod: $(ip route get "${subnet%.*}.2" 2>&1 | head -1)"
	echo "network: FORWARD policy $(iptables -S FORWARD 2>/dev/null | head -1), bridge-nf-call-iptables $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo absent), ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
fi
if ! berth_leaks; then
	rc=1
fi
exit $rc
