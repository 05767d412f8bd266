# Shell helpers for suites that drive a real berthd from outside Go (the
# conformance kit, the kubelet kit): start berthd on a private root, state,
# socket, CNI bridge and cgroup parent; stop it; and check that nothing was
# left behind. Source it; it defines functions only.

# berth_start NAME SUBNET CERTS_D: starts bin/berthd and sets BERTH_DIR,
# BERTH_SOCK, BERTH_PID, BERTH_BRIDGE, BERTH_CGROUP, and BERTH_NRI_SOCK,
# its own NRI socket (so the node's /var/run/nri/nri.sock is left alone).
# BERTH_EXTRA_CONFIG is appended to its config file.
berth_start() {
  local name=$1 subnet=$2 certs=$3
  BERTH_DIR=$(mktemp -d "/tmp/berth-$name.XXXXXX")
  # 0711 as /run is: user namespace containers reach their rootfs as the
  # mapped root (berthd reports user namespaces unsupported otherwise).
  chmod 711 "$BERTH_DIR"
  BERTH_SOCK=$BERTH_DIR/berth.sock
  BERTH_NRI_SOCK=$BERTH_DIR/nri.sock
  BERTH_BRIDGE=b$name$RANDOM
  BERTH_BRIDGE=${BERTH_BRIDGE:0:15}
  BERTH_CGROUP=/berth-$name
  mkdir -p "$BERTH_DIR/cni"
  cat > "$BERTH_DIR/cni/10-$name.conflist" <<JSON
{"cniVersion":"1.0.0","name":"berth-$name","plugins":[
 {"type":"bridge","bridge":"$BERTH_BRIDGE","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$subnet"}]],"dataDir":"$BERTH_DIR/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}
JSON
  cat > "$BERTH_DIR/config.toml" <<TOML
root = "$BERTH_DIR/root"
state = "$BERTH_DIR/run"
cgroup_parent = "$BERTH_CGROUP"
[grpc]
address = "$BERTH_SOCK"
[runtime]
hooks_dir = ["$BERTH_DIR/hooks.d"]
[nri]
socket_path = "$BERTH_NRI_SOCK"
plugin_path = "$BERTH_DIR/nri/plugins"
plugin_config_path = "$BERTH_DIR/nri/conf.d"
[registry]
config_path = "$certs"
[cni]
conf_dir = "$BERTH_DIR/cni"
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
${BERTH_EXTRA_CONFIG:-}
TOML
  "$BERTH_BIN/berthd" --config "$BERTH_DIR/config.toml" > "$BERTH_DIR/berthd.log" 2>&1 &
  BERTH_PID=$!
  local i
  for i in $(seq 1 100); do
    [ -S "$BERTH_SOCK" ] && return 0
    kill -0 "$BERTH_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "berthd did not start; its log:" >&2
  cat "$BERTH_DIR/berthd.log" >&2
  return 1
}

# berth_remove_all removes every pod the daemon still has (what a suite
# left behind counts as a failure in berth_leaks, not here). crictl's
# default 2s timeout cancels a stop on a loaded machine half way, which
# leaves the pod behind; a minute per call does not.
berth_remove_all() {
  local p c="crictl --timeout 60s --runtime-endpoint unix://$BERTH_SOCK"
  for p in $($c pods -q 2>/dev/null); do
    $c stopp "$p" >/dev/null 2>&1
    $c rmp -f "$p" >/dev/null 2>&1
  done
}

berth_stop() {
  [ -n "${BERTH_PID:-}" ] || return 0
  kill -TERM "$BERTH_PID" 2>/dev/null
  wait "$BERTH_PID" 2>/dev/null
  BERTH_PID=
}

# berth_leaks prints what the run left behind and returns 1 if anything:
# mounts, netns pins, shims, infra processes, veths on the bridge, cgroups.
berth_leaks() {
  local left="" x
  x=$(awk -v d="$BERTH_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)
  [ -n "$x" ] && left+=$'\nmounts:\n'"$x"
  x=$(ls "$BERTH_DIR/run/netns" "$BERTH_DIR/run/ipcns" "$BERTH_DIR/run/utsns" 2>/dev/null | grep -v ':$' | grep -v '^$')
  [ -n "$x" ] && left+=$'\nnamespace pins:\n'"$x"
  x=$(for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -q -- "$BERTH_DIR/run"; then
          echo "${p#/proc/}: $(tr '\0' ' ' 2>/dev/null < "$p/cmdline")"; fi
      done)
  [ -n "$x" ] && left+=$'\nprocesses:\n'"$x"
  x=$(ip -o link show master "$BERTH_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}')
  [ -n "$x" ] && left+=$'\nveths on '"$BERTH_BRIDGE"$':\n'"$x"
  x=$(find /sys/fs/cgroup/*"$BERTH_CGROUP" -mindepth 1 -type d 2>/dev/null | head)
  [ -n "$x" ] && left+=$'\ncgroups:\n'"$x"
  x=$(ls "$BERTH_DIR/ipam"/*/ 2>/dev/null | grep -E '^[0-9a-f.:]+$' | grep -v -E '^last_reserved')
  [ -n "$x" ] && left+=$'\nIPAM addresses:\n'"$x"
  if [ -n "$left" ]; then
    echo "LEAK: the run left behind:$left"
    return 1
  fi
  echo "no leaks: no mounts, pins, processes, veths, cgroups or addresses left"
}

# berth_cleanup removes the environment whatever state it is in.
berth_cleanup() {
  berth_stop
  local m
  for m in $(awk -v d="$BERTH_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null
  done
  ip link del "$BERTH_BRIDGE" 2>/dev/null
  find /sys/fs/cgroup/*"$BERTH_CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null
  rm -rf "$BERTH_DIR"
}

# kubepods_note records the kubepods cgroup trees that exist before a run
# starts a kubelet, which makes them (one per v1 controller, or v2's);
# kubepods_remove removes those the run made, once its pods are gone. A
# cgroup still holding a process stays: rmdir refuses it.
kubepods_note() {
  KUBEPODS_BEFORE=$(ls -d /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods 2>/dev/null)
}

kubepods_remove() {
  local d
  for d in $(ls -d /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods 2>/dev/null); do
    grep -qxF "$d" <<<"${KUBEPODS_BEFORE:-}" && continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}
