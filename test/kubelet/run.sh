#!/usr/bin/env bash
# make kubelet-e2e: a real kubelet (standalone, static pods) drives a real
# berthd through the kubelet kit's pod lifecycle checks, then berth's own
# scenarios under test/kubelet. Exits non-zero when a check fails or the run
# leaves anything behind.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
BERTH_BIN=${BERTH_BIN:-$top/bin}
. "$top/test/lib/daemon.sh"

certs=$("$shared/conformance/setup" | tail -n 1) || { echo "conformance kit setup failed"; exit 1; }
"$shared/kubelet/setup" >/dev/null || { echo "kubelet kit setup failed"; exit 1; }
# One kubelet per host: it owns fixed paths (device-plugin socket,
# /var/log/containers) and ports, so concurrent runs wait for each other.
exec 9>/tmp/berth-kubelet.lock
flock 9
kubepods_note
berth_start kube 10.237.0.0/24 "$certs" || exit 1
trap 'berth_cleanup' EXIT
"$shared/kubelet/e2e" "unix://$BERTH_SOCK"
rc=$?
berth_remove_all
berth_stop
if ! berth_leaks; then
  rc=1
fi
if [ $rc -ne 0 ]; then
  echo "berthd log: last lines follow"
  tail -60 "$BERTH_DIR/berthd.log"
fi
# berth's own scenarios (test/kubelet/*_test.go): they start their own
# berthd and kubelet, still under the lock taken above.
echo "berth kubelet scenarios (go test ./test/kubelet)"
if ! (cd "$top" && BERTH_KUBELET_E2E=1 BERTH_BIN_DIR="$BERTH_BIN" BERTH_CERTS_D="$certs" \
    ${GO:-go} test -count=1 -timeout 15m -v ./test/kubelet); then
  rc=1
fi
kubepods_remove
exit $rc
