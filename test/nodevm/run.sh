#!/usr/bin/env bash
# run.sh: boot the Debian 12 node VM (build-image.sh) under qemu (TCG, 2
# vCPUs, 2 GiB) and run berth there as an operator would: make install's
# layout, the shipped systemd unit, cgroup_driver "systemd", the crictl
# lifecycle, and critest through the conformance kit's registry on the
# host's loopback, reached from the guest as 10.0.2.2.
#
# Usage: run.sh [ci|full|PARTS...]   (as root, after make build setup-runc)
#   ci     env unit lifecycle leakcheck, then critest focused on the AppArmor specs
#   full   env unit lifecycle leakcheck, the kubelet kit (kubelet with
#          --cgroup-driver=systemd), then the whole critest suite
#   PARTS  any of env unit lifecycle leakcheck kubelet critest crun containerd
#          (env and unit always run first). crun: critest with berth's crun
#          handler; containerd: berth stopped, critest against containerd 2.4
#          (NODEVM_CONTAINERD: a directory with containerd and
#          containerd-shim-runc-v2, static builds; default: built once
#          from the Go module proxy, NODEVM_CONTAINERD_VERSION, v2.4.2)
# Env: NODEVM_CRITEST_FOCUS / NODEVM_CRITEST_SKIP (ginkgo regexps),
#      NODEVM_CRITEST_ARGS (more critest flags, e.g. -runtime-handler=crun),
#      NODEVM_TIMEOUT (qemu wall-clock limit, seconds), NODEVM_OUT (results
#      dir, default test/nodevm/out), NODEVM_IMAGE (an image directory to
#      boot instead of build-image.sh's), NODEVM_QEMU (the qemu binary),
#      CONFORMANCE_KIT, BERTH_BIN.
# Prints the serial console, then PASS|FAIL|SKIP per critest spec and the
# kit's summary line; exits non-zero when a part failed or critest failed
# outside the kit's expected-failures.txt.
set -uo pipefail
# The whole script is one function, read before it runs: editing this file
# while a run is in progress cannot change the run.
main() {
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
kit=${CONFORMANCE_KIT:-$top/../shared/conformance}
BERTH_BIN=${BERTH_BIN:-$top/bin}
RUNC=${NODEVM_RUNC:-/usr/local/lib/berth/runc}
OUT=${NODEVM_OUT:-$here/out}
log() { echo "[nodevm] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

mode=${1:-ci}
case "$mode" in
  ci)   parts="env unit lifecycle leakcheck critest"; focus=${NODEVM_CRITEST_FOCUS:-AppArmor}; timeout=${NODEVM_TIMEOUT:-1200} ;;
  full) parts="env unit lifecycle leakcheck kubelet critest"; focus=${NODEVM_CRITEST_FOCUS:-}; timeout=${NODEVM_TIMEOUT:-5400} ;;
  *)    parts="env unit $(printf '%s\n' "$@" | grep -vx 'env\|unit' | tr '\n' ' ')"; focus=${NODEVM_CRITEST_FOCUS:-}; timeout=${NODEVM_TIMEOUT:-5400} ;;
esac
for p in $parts; do case $p in env|unit|lifecycle|leakcheck|kubelet|critest|crun|containerd) ;; *) die "unknown part $p" ;; esac; done
has() { [[ " $parts " == *" $1 "* ]]; }
GO=${GO:-go}
CONTAINERD_VERSION=${NODEVM_CONTAINERD_VERSION:-v2.4.2}
kkit=${KUBELET_KIT:-$top/../shared/kubelet}

for p in qemu-system-x86 e2fsprogs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && continue
  log "installing $p"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null || die "apt-get install $p"
done
for b in berthd berth-shim berth-pause; do [ -x "$BERTH_BIN/$b" ] || die "no $BERTH_BIN/$b (make build)"; done
[ -x "$RUNC" ] || die "no $RUNC (make setup-runc)"

T0=$(date +%s)
stamp() { echo "$(( $(date +%s) - T0 ))"; }

# 1. the node image (cached)
if [ -n "${NODEVM_IMAGE:-}" ]; then
  img=$NODEVM_IMAGE   # an image directory given as is (root.img, vmlinuz, initrd)
else
  img=$("$here/build-image.sh" | tail -n 1) || die "image build failed"
fi
t_image=$(stamp)

# 2. the conformance kit: crictl, critest, the loopback registry
. "$kit/lib/common.sh"
"$kit/setup" >/dev/null 2>&1 || die "conformance kit setup failed"
port=${REGISTRY_ADDR##*:}
reg=10.0.2.2:$port
# The kubelet kit: its setup builds kubelet on the host (skipped when
# installed); the guest runs that static binary and the kit's e2e script.
if has kubelet; then
  "$kkit/setup" >/dev/null 2>&1 || die "kubelet kit setup failed"
  KUBELET_BIN=${KUBELET:-$BIN_DIR/kubelet}   # BIN_DIR: the kits' (lib/common.sh)
  [ -x "$KUBELET_BIN" ] || die "no kubelet at $KUBELET_BIN"
fi
t_kit=$(stamp)

# 3. the payload: make install's layout staged with DESTDIR, what make
#    setup adds on a node (runc, the default CNI network), the kit's tools,
#    a config for a systemd node, a mirror tree for the guest, the guest
#    script. Built per run; never written by the guest.
work=$(mktemp -d /var/tmp/berth-nodevm.XXXXXX)
qpid=
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
pl=$work/payload; inst=$pl/install
mkdir -p "$pl/nodevm"
make -s -C "$top" install DESTDIR="$inst" BIN="$BERTH_BIN" >/dev/null || die "make install DESTDIR failed"
install -D -m 0755 "$RUNC" "$inst/usr/local/lib/berth/runc"
install -D -m 0644 "$top/netplugin/10-berth.conflist" "$inst/etc/cni/net.d/10-berth.conflist"
install -D -m 0755 "$BIN_DIR/crictl" "$inst/usr/local/bin/crictl"
install -D -m 0755 "$BIN_DIR/critest" "$inst/usr/local/bin/critest"
# The node's config: kubelet's default driver on a systemd host.
sed -i "s|^cgroup_driver = .*|cgroup_driver = 'systemd'|" "$inst/etc/berth/config.toml"
grep -q "^cgroup_driver = 'systemd'" "$inst/etc/berth/config.toml" || die "could not set cgroup_driver in the staged config"
# The kit's mirror tree, with the registry as the guest reaches it.
for h in $MIRRORED_HOSTS "$reg"; do
  mkdir -p "$inst/etc/berth/certs.d/$h"
  printf '# node VM mirror: every pull goes to the host'"'"'s loopback registry\nserver = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
    "$reg" "$reg" > "$inst/etc/berth/certs.d/$h/hosts.toml"
done
install -m 0755 "$here/guest.sh" "$pl/nodevm/guest.sh"
# Test tools built here, static: podresize (UpdatePodSandboxResources,
# which crictl lacks) and testutil's tests (the e2e leak checker, run on
# the guest's cgroup v2 as a positive control).
CGO_ENABLED=0 "$GO" build -trimpath -o "$pl/nodevm/podresize" "$here/podresize" || die "build podresize"
has leakcheck && { CGO_ENABLED=0 "$GO" test -c -trimpath -o "$pl/nodevm/testutil.test" "$top/test/testutil" || die "build testutil.test"; }
if has containerd && [ -z "${NODEVM_CONTAINERD:-}" ]; then
  # containerd 2.4 from the Go module proxy, static, built once into the
  # cache the other containerd comparisons share.
  NODEVM_CONTAINERD=$(GO=$GO bash "$top/test/lib/containerd-build.sh" "$CONTAINERD_VERSION") || die "containerd build"
fi
if has containerd; then
  mkdir -p "$pl/containerd"
  for b in containerd containerd-shim-runc-v2; do
    install -m 0755 "${NODEVM_CONTAINERD:?NODEVM_CONTAINERD names the containerd build}/$b" "$pl/containerd/$b" || die "no $b in $NODEVM_CONTAINERD"
  done
fi
if has kubelet; then
  mkdir -p "$pl/kubelet"
  cp -a "$kkit/e2e" "$kkit/pods" "$pl/kubelet/"
  # Probes get 10 s instead of kubelet's default 1 s: under emulation an
  # exec probe (runc exec of three processes) takes longer than 1 s on
  # its own, so the sidecar's readiness probe always timed out.
  sed -i 's/^\( *\)periodSeconds: \(.*\)$/\1periodSeconds: \2\n\1timeoutSeconds: 10/' "$pl/kubelet/pods/"*.yaml
  install -m 0755 "$KUBELET_BIN" "$pl/kubelet/kubelet"
fi
echo "$parts" > "$pl/nodevm/parts"
echo "$reg" > "$pl/nodevm/registry"
: > "$pl/nodevm/critest-args"
[ -n "$focus" ] && echo "-ginkgo.focus=$focus" >> "$pl/nodevm/critest-args"
[ -n "${NODEVM_CRITEST_SKIP:-}" ] && echo "-ginkgo.skip=$NODEVM_CRITEST_SKIP" >> "$pl/nodevm/critest-args"
for a in ${NODEVM_CRITEST_ARGS:-}; do echo "$a" >> "$pl/nodevm/critest-args"; done
mb=$(( $(du -sm "$pl" | cut -f1) + 64 ))
mkfs.ext4 -q -F -L berthpay -d "$pl" "$work/payload.img" "${mb}M" >/dev/null || die "payload image"
mkfs.ext4 -q -F -L berthres "$work/results.img" 512M >/dev/null || die "results image"
t_payload=$(stamp)

# 4. boot. The root image is opened with snapshot=on: the cached image is
#    never written. User-mode networking only: the guest's gateway
#    10.0.2.2 is the host's 127.0.0.1; guest.sh drops everything else.
mkdir -p "$OUT"; rm -rf "${OUT:?}"/*
: > "$OUT/console.log"   # before tail -f below looks for it
log "booting $img (parts: $parts${focus:+, critest focus '$focus'}; limit ${timeout}s)"
"${NODEVM_QEMU:-qemu-system-x86_64}" -accel tcg,thread=multi -smp 2 -m 2048 -nographic -no-reboot \
  -kernel "$img/vmlinuz" -initrd "$img/initrd" \
  -append "root=/dev/vda rw console=ttyS0 apparmor=1 security=apparmor systemd.unified_cgroup_hierarchy=1 quiet systemd.show_status=0" \
  -drive "file=$img/root.img,format=raw,if=virtio,snapshot=on" \
  -drive "file=$work/payload.img,format=raw,if=virtio,readonly=on" \
  -drive "file=$work/results.img,format=raw,if=virtio" \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile= \
  < /dev/null > "$OUT/console.log" 2>&1 &
qpid=$!
tail -n +1 --pid="$qpid" -f "$OUT/console.log" &
tpid=$!
# The hard limit: qemu is killed at $timeout, or 120 s after the guest's
# launcher reported the end of guest.sh without the guest powering off.
waited=0; done_at=
while kill -0 "$qpid" 2>/dev/null; do
  sleep 2; waited=$((waited + 2))
  if [ -z "$done_at" ] && grep -q '^nodevm: guest.sh exited' "$OUT/console.log"; then done_at=$waited; fi
  if [ "$waited" -ge "$timeout" ] || { [ -n "$done_at" ] && [ $((waited - done_at)) -ge 120 ]; }; then
    log "guest still running after ${waited}s: killing qemu"
    kill "$qpid"; sleep 2; kill -9 "$qpid" 2>/dev/null
    break
  fi
done
wait "$qpid" 2>/dev/null; qpid=
wait "$tpid" 2>/dev/null
t_vm=$(stamp)

# 5. results back from the results disk
debugfs -R "rdump / $OUT" "$work/results.img" >/dev/null 2>&1 || log "could not read the results disk"
rc=$(cat "$OUT/exit-code" 2>/dev/null || echo none)
status=0
[ "$rc" = 0 ] || { log "guest.sh exit code: $rc"; status=1; }
for c in critest crun containerd; do
  has $c || continue
  if [ -s "$OUT/$c/junit.xml" ]; then
    expect=()
    [ -f "$kit/expected-failures.txt" ] && expect=(--expect "$kit/expected-failures.txt")
    python3 "$kit/lib/junit-summary.py" "$OUT/$c/junit.xml" --results "$OUT/$c/results.txt" \
      --failures "$OUT/$c/failures.txt" "${expect[@]}" > "$OUT/$c/summary.txt"
    crc=$?
    echo "--- critest ($c)"
    cat "$OUT/$c/results.txt"
    cat "$OUT/$c/summary.txt"
    # Only berth's own default run gates the exit status; crun and containerd are measurements.
    [ $crc -eq 0 ] || [ "$c" != critest ] || status=1
  else
    log "no critest report for $c"; status=1
  fi
done
if has kubelet; then
  if [ -s "$OUT/kubelet/e2e.txt" ]; then
    echo "--- kubelet kit (kubelet --cgroup-driver=systemd) in the guest"
    cat "$OUT/kubelet/e2e.txt"
  else
    log "no kubelet kit report"; status=1
  fi
fi
{
  echo "image $t_image s (cached or built), kit $((t_kit - t_image)) s, payload $((t_payload - t_kit)) s, vm $((t_vm - t_payload)) s, total $t_vm s"
  [ -f "$OUT/parts.txt" ] && awk '{printf "part %s: exit %s, %ss\n", $1, $2, $3}' "$OUT/parts.txt"
} | tee "$OUT/timings.txt"
log "results in $OUT"
exit $status
}
main "$@"
