#!/usr/bin/env bash
# make kubelet-e2e: a real kubelet (standalone, static pods) drives a real
# berthd through the kubelet kit's pod lifecycle checks (with the generic
# PLEG, then with EventedPLEG), then berth's own
# scenarios under test/kubelet. Exits non-zero when a check fails or the run
# leaves anything behind.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
shared=${SHARED_DIR:-$top/../shared}
BERTH_BIN=${BERTH_BIN:-$top/bin}
. "$top/test/lib/daemon.sh"

# evented_pleg_check reads a kubelet log of a run with EventedPLEG: the
# events stream must have been used and never failed.
evented_pleg_check() {
  local log=$1 used bad
  [ -f "$log" ] || { echo "FAIL evented-pleg: no kubelet log at $log"; return 1; }
  used=$(grep -c 'Evented PLEG: requested pod relist after container termination' "$log")
  bad=$(grep -E 'Evented PLEG: (failed to get container events|disabling container-termination|received ContainerEventResponse with nil)' "$log" | head -5)
  if [ "$used" -eq 0 ] || [ -n "$bad" ]; then
    echo "FAIL evented-pleg: $used relists asked for from berth's container events${bad:+; stream errors:}"
    [ -n "$bad" ] && echo "$bad"
    return 1
  fi
  echo "PASS evented-pleg: $used relists asked for from berth's container events, no stream error"
}

certs=$("$shared/conformance/setup" | tail -n 1) || { echo "conformance kit setup failed"; exit 1; }
"$shared/kubelet/setup" >/dev/null || { echo "kubelet kit setup failed"; exit 1; }
# One kubelet per host: it owns fixed paths (device-plugin socket,
# /var/log/containers) and ports, so concurrent runs wait for each other.
exec 9>/tmp/berth-kubelet.lock
flock 9
kubepods_note
berth_start kube 10.237.0.0/24 "$certs" || exit 1
# The EventedPLEG run keeps its kit work dir for the log check; an
# interrupted run must not leave it behind.
evented=
trap 'berth_cleanup; [ -z "$evented" ] || rm -rf --one-file-system "$evented"' EXIT
"$shared/kubelet/e2e" "unix://$BERTH_SOCK"
rc=$?
# The same checks with kubelet's Evented PLEG (issue 24). The kit passes
# even when kubelet gives up on the event stream (it still relists every
# second), so kubelet's log must also show berth's events used: a relist
# asked for when a container ended, and no stream error or fallback.
evented=$(mktemp -d /tmp/berth-evented.XXXXXX)
echo "kubelet kit with EventedPLEG=true"
if ! WORK_DIR=$evented KEEP=1 KUBELET_V=4 KUBELET_FEATURE_GATES=EventedPLEG=true \
    "$shared/kubelet/e2e" "unix://$BERTH_SOCK"; then
  rc=1
fi
if ! evented_pleg_check "$evented"/kubelet-e2e.*/kubelet.log; then
  rc=1
fi
rm -rf --one-file-system "$evented"
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
