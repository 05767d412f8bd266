#!/usr/bin/env bash
# make conformance: the CRI validation suite (critest) against a real berthd
# with the conformance kit's mirror tree and a CNI bridge of its own; a full
# run rewrites docs/conformance.md's generated sections (record.sh). Exits
# non-zero when a spec fails that is not in the kit's expected-failures.txt,
# or when the run leaves anything behind.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
kit=${CONFORMANCE_KIT:-$top/../shared/conformance}
BERTH_BIN=${BERTH_BIN:-$top/bin}
. "$top/test/lib/daemon.sh"

certs=$("$kit/setup" | tail -n 1) || { echo "conformance kit setup failed"; exit 1; }
berth_start crit 10.236.0.0/24 "$certs" || exit 1
trap 'berth_cleanup' EXIT
export REPORT_DIR=${REPORT_DIR:-$top/test/conformance/report}
# -nri-socket: critest's NRI specs connect their own plugins to berthd's.
"$kit/critest" "unix://$BERTH_SOCK" --expect "$kit/expected-failures.txt" -nri-socket "$BERTH_NRI_SOCK" "$@"
rc=$?
# A full run (no focus or skip flags) refreshes docs/conformance.md.
if [ $# -eq 0 ] && [ -s "$REPORT_DIR/results.txt" ]; then
  BERTH_BIN=$BERTH_BIN "$top/test/conformance/record.sh" "$REPORT_DIR" "$top/docs/conformance.md" ||
    echo "conformance: docs/conformance.md not refreshed"
fi
berth_remove_all
berth_stop
if ! berth_leaks; then
  rc=1
fi
if [ $rc -ne 0 ]; then
  echo "berthd log: $BERTH_DIR/berthd.log (last lines follow)"
  tail -40 "$BERTH_DIR/berthd.log"
fi
exit $rc
