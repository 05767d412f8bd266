#!/usr/bin/env bash
# record.sh REPORT_DIR DOC: rewrites the generated sections of DOC
# (docs/conformance.md) from a critest report the conformance kit wrote
# (summary.txt, results.txt): the run's facts and totals between the
# "conformance-run" markers, every spec's result between the
# "conformance-specs" markers. Everything outside the markers is
# hand-written and kept. run.sh calls it after a full run; BERTH_BIN,
# CRITEST and BERTH_COMMIT (default: git describe) name what ran.
set -euo pipefail
report=$1 doc=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
for f in summary.txt results.txt; do
  [ -s "$report/$f" ] || { echo "record: no $report/$f" >&2; exit 1; }
done
for m in run specs; do
  for e in BEGIN END; do
    grep -q "^<!-- $e conformance-$m[: ]" "$doc" || { echo "record: $doc lacks its <!-- $e conformance-$m --> marker" >&2; exit 1; }
  done
done

commit=${BERTH_COMMIT:-$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)}
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-Linux}" || echo Linux)
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then cg="cgroup v2"
elif [ -d /sys/fs/cgroup/unified ]; then cg="cgroup v1 hybrid"
else cg="cgroup v1"; fi
critest=${CRITEST:-${BIN_DIR:-/usr/local/bin}/critest}
cv=$("$critest" -version 2>/dev/null | awk '/critest version/{print $3}' || true)
# The default handler's runtime, from the config berthd ran with (its
# embedded defaults: run.sh's config sets no handlers).
handler="" rv=""
if [ -x "${BERTH_BIN:-$top/bin}/berthd" ]; then
  read -r handler bin < <("${BERTH_BIN:-$top/bin}/berthd" config default | awk -F"'" '
    /^default_handler = / {h = $2}
    /^\[runtime\.handlers\./ {sec = $0; sub(/^\[runtime\.handlers\./, "", sec); sub(/\]$/, "", sec)}
    /^binary = / {b[sec] = $2}
    END {print h, b[h]}') || true
  if [ -n "${bin:-}" ]; then rv=$("$bin" --version 2>/dev/null | head -1 | sed 's/ version / /' || true); fi
fi
day=$(date -u -r "$report/summary.txt" +%Y-%m-%d)
wall=$(sed -n 's/.*wall time \([0-9ms]*\).*/\1/p' "$report/summary.txt" | head -1)
totals=$(grep -m1 '^total:' "$report/summary.txt" || true)
failed=$(grep '^FAIL' "$report/summary.txt" || true)

run=$(mktemp) specs=$(mktemp) out=$(mktemp)
trap 'rm -f "$run" "$specs" "$out"' EXIT
{
  echo "Recorded by \`make conformance\` on $day, berth \`$commit\`, on $os, kernel"
  echo "$(uname -r), $cg, $(nproc) cores; critest \`${cv:-unknown}\` (${wall:-?} wall time), default"
  echo "handler \`${handler:-unknown}\`: ${rv:-version unknown}."
  echo
  echo '```'
  echo "${totals:-totals missing from summary.txt}"
  if [ -n "$failed" ]; then echo "$failed"; fi
  echo '```'
} > "$run"
{ echo '```'; cat "$report/results.txt"; echo '```'; } > "$specs"

awk -v run="$run" -v specs="$specs" '
  function emit(f,  l) { while ((getline l < f) > 0) print l; close(f) }
  /^<!-- BEGIN conformance-(run|specs)[: ]/ { print; skip = 1; emit($0 ~ /conformance-run/ ? run : specs); next }
  /^<!-- END conformance-(run|specs)[: ]/ { skip = 0 }
  !skip { print }
' "$doc" > "$out"
cat "$out" > "$doc"
echo "record: $doc rewritten from $report"
