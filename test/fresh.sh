#!/bin/bash
# fresh.sh: the README's two commands as on a fresh machine. Everything
# setup builds or installs outside the checkout (runc, CRIU, the kits'
# binaries, images and mirror tree, the default CNI config, the node VM
# image, the containerd build the migration tests run) is moved aside
# first, so a stale install can no longer hide a broken setup step; then a
# clean clone of HEAD, with the shared kits beside it as CI lays them out,
# runs `make run` until berthd serves, and `CI=true bash .ci/run`.
# What was moved aside is left in $ASIDE (printed) for the operator to
# delete or put back; the clone is removed unless .ci/run failed, and the
# state `make run` created (/run/berth, /var/lib/berth) is removed.
#
# Usage: test/fresh.sh   (as root; `make test-fresh`)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "${SHARED:-$top/../shared}" && pwd)
ASIDE=${ASIDE:-/var/tmp/berth-fresh-aside.$(date +%Y%m%d-%H%M%S)}
ARTEFACTS=(
	/usr/local/lib/berth /usr/local/sbin/criu /usr/local/sbin/criu.broken
	/usr/local/bin/crictl /usr/local/bin/critest /usr/local/bin/kubelet
	/etc/cni/net.d/10-berth.conflist /etc/cri-conformance /var/lib/cri-conformance
	/var/cache/berth-nodevm /var/cache/berth
)

[ "$(id -u)" = 0 ] || { echo "fresh: run as root" >&2; exit 1; }
if pgrep -x berthd >/dev/null; then
	echo "fresh: a berthd is running; stop it first" >&2
	exit 1
fi
# The kit's registry serves from /var/lib/cri-conformance: stop it first.
"$shared/conformance/registry" stop >/dev/null 2>&1 || true
mkdir -p "$ASIDE"
for p in "${ARTEFACTS[@]}"; do
	[ -e "$p" ] || continue
	mkdir -p "$ASIDE$(dirname "$p")"
	mv "$p" "$ASIDE$p"
	echo "fresh: moved $p aside"
done
echo "fresh: everything moved aside is under $ASIDE"

work=$(mktemp -d /tmp/berth-fresh.XXXXXX)
git clone -q "$top" "$work/main"
cp -a "$shared" "$work/shared"
chmod -R a-w "$work/shared"
cd "$work/main"

# `make run` serves with the embedded defaults, on the node's own state
# and root; whatever of them this run creates, it removes again.
made=()
for d in /run/berth /var/lib/berth; do
	[ -e "$d" ] || made+=("$d")
done

echo "fresh: make run (until berthd serves)"
log=$work/make-run.log
setsid make run >"$log" 2>&1 &
runpid=$!
sock=/run/berth/berth.sock
for _ in $(seq 1 1800); do
	[ -S "$sock" ] && break
	kill -0 "$runpid" 2>/dev/null || { tail -30 "$log"; echo "fresh: make run exited before serving" >&2; exit 1; }
	sleep 1
done
[ -S "$sock" ] || { tail -30 "$log"; echo "fresh: berthd not serving after 30 min" >&2; exit 1; }
ok=0
for _ in $(seq 1 60); do
	if python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$sock" 2>/dev/null; then
		ok=1
		break
	fi
	sleep 1
done
kill -TERM -- "-$runpid" 2>/dev/null || true
wait "$runpid" 2>/dev/null || true
[ "$ok" = 1 ] || { tail -30 "$log"; echo "fresh: berthd did not answer" >&2; exit 1; }
grep -E '^(setup|criu):' "$log" || true
echo "fresh: make run served on $sock"
# A berthd that ran no pod leaves no mount (netns pins are bind mounts).
if grep -qE ' /(run|var/lib)/berth[/ ]' /proc/self/mountinfo; then
	grep -E ' /(run|var/lib)/berth[/ ]' /proc/self/mountinfo >&2
	echo "fresh: berthd left mounts behind" >&2
	exit 1
fi
for d in "${made[@]}"; do
	rm -rf "$d"
done

echo "fresh: CI=true bash .ci/run (log: $work/ci.log)"
rc=0
CI=true bash .ci/run </dev/null >"$work/ci.log" 2>&1 || rc=$?
grep -E '^(ok|FAIL|--- FAIL|setup:|criu:|[0-9]+ passed)' "$work/ci.log" || true
if [ "$rc" = 0 ]; then
	# The clone is a whole source tree (sandbox/netns/ included): left in
	# /tmp it reads as berth state. Kept only to look into a failure.
	chmod -R u+w "$work"
	rm -rf "$work"
	echo "fresh: .ci/run passed"
else
	echo "fresh: .ci/run exited $rc; clone and ci.log kept in $work"
fi
exit "$rc"
