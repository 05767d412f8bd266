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
berth_start nodee2e 10.238.0.0/24 "$certs" || exit 2
trap 'berth_cleanup' EXIT
"$here/run.sh" "unix://$BERTH_SOCK"
rc=$?
berth_remove_all
berth_stop
mkdir -p "$REPORT_DIR"
cp "$BERTH_DIR/berthd.log" "$REPORT_DIR/berthd.log" 2>/dev/null
if ! berth_leaks; then
	rc=1
fi
exit $rc
