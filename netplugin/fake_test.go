package netplugin

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// dumpPlugin writes the fake plugin "bdump": it records stdin and CNI_*
// environment per command and container in outDir, answers ADD with a
// dual-stack result (IPv6 listed first), and fails GC as outDir/gc-mode
// says ("unsupported" or "fail").
func dumpPlugin(t *testing.T, binDir, outDir, version string) {
	t.Helper()
	writeFile(t, filepath.Join(binDir, "bdump"), `#!/bin/sh
out="`+outDir+`/$CNI_COMMAND-$CNI_CONTAINERID"
cat > "$out.json"
env | grep '^CNI_' > "$out.env"
case "$CNI_COMMAND" in
ADD)
  echo '{"cniVersion":"`+version+`","interfaces":[{"name":"veth0"},{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],'\
'"ips":[{"address":"fd00::3/64","interface":1},{"address":"10.1.2.3/24","interface":1},{"address":"192.168.9.1/24","interface":0}]}'
  ;;
GC)
  case "$(cat "`+outDir+`/gc-mode" 2>/dev/null)" in
  unsupported) echo '{"cniVersion":"`+version+`","code":4,"msg":"unknown CNI_COMMAND: GC"}'; exit 1;;
  fail) echo '{"cniVersion":"`+version+`","code":999,"msg":"gc broke"}'; exit 1;;
  esac
  ;;
esac
exit 0
`, 0o755)
}

type dumpEnv struct {
	binDir, outDir, confDir, cacheDir string
}

func newDumpEnv(t *testing.T, version, pluginExtra string) dumpEnv {
	t.Helper()
	e := dumpEnv{binDir: t.TempDir(), outDir: t.TempDir(), confDir: t.TempDir(), cacheDir: t.TempDir()}
	dumpPlugin(t, e.binDir, e.outDir, version)
	writeFile(t, filepath.Join(e.confDir, "10-dump.conflist"), `{"cniVersion":"`+version+`","name":"dumpnet","plugins":[`+
		`{"type":"bdump","capabilities":{"portMappings":true,"bandwidth":true,"dns":true,"cgroupPath":true}`+pluginExtra+`}]}`, 0o600)
	return e
}

func (e dumpEnv) stdin(t *testing.T, cmd, id string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.outDir, cmd+"-"+id+".json"))
	if err != nil {
		t.Fatalf("plugin did not record %s for %q: %v", cmd, id, err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e dumpEnv) env(t *testing.T, cmd, id string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.outDir, cmd+"-"+id+".env"))
	if err != nil {
		t.Fatalf("plugin did not record %s env for %q: %v", cmd, id, err)
	}
	return string(data)
}

// jsonEqual compares a decoded value with what want encodes to.
func jsonEqual(t *testing.T, got any, want string) bool {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(got, w)
}

func TestCapabilityArgsAndResult(t *testing.T) {
	e := newDumpEnv(t, "1.0.0", "")
	m := newManager(t, Options{ConfDir: e.confDir, CacheDir: e.cacheDir, BinDirs: []string{e.binDir}})
	netns := filepath.Join(t.TempDir(), "not-a-netns")
	writeFile(t, netns, "", 0o600)
	p := PodNetwork{
		ID: "cap1", Name: "web", Namespace: "prod", UID: "u-1", NetNS: netns,
		PortMappings: []PortMapping{
			{Protocol: "TCP", ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1"},
			{Protocol: "UDP", ContainerPort: 53, HostPort: 5353},
			{Protocol: "", ContainerPort: 9000, HostPort: 9000},
			{Protocol: "SCTP", ContainerPort: 7000, HostPort: 0}, // no host port: not mapped
		},
		IngressBandwidth: 1000000, EgressBandwidth: 2000000,
		DNS:        &DNS{Servers: []string{"10.96.0.10"}, Searches: []string{"prod.svc.cluster.local"}, Options: []string{"ndots:5"}},
		CgroupPath: "/kubepods/pod-u-1",
	}
	res, err := m.Setup(context.Background(), p)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if got := ipStrings(res.IPs); !reflect.DeepEqual(got, []string{"10.1.2.3", "fd00::3"}) || res.Interface != "eth0" {
		t.Errorf("result %v on %q, want [10.1.2.3 fd00::3] on eth0 (IPv4 first, host side dropped)", got, res.Interface)
	}
	if _, err := m.Setup(context.Background(), p); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Setup: %v, want already exists", err)
	}
	if _, err := os.Stat(filepath.Join(e.outDir, "DEL-cap1.json")); err == nil {
		t.Error("second Setup ran DEL on the working attachment")
	}
	wantRC := `{
		"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"},
		                {"hostPort":5353,"containerPort":53,"protocol":"udp"},
		                {"hostPort":9000,"containerPort":9000,"protocol":"tcp"}],
		"bandwidth":{"ingressRate":1000000,"ingressBurst":4294967295,"egressRate":2000000,"egressBurst":4294967295},
		"dns":{"servers":["10.96.0.10"],"searches":["prod.svc.cluster.local"],"options":["ndots:5"]},
		"cgroupPath":"/kubepods/pod-u-1"}`
	add := e.stdin(t, "ADD", "cap1")
	if !jsonEqual(t, add["runtimeConfig"], wantRC) {
		t.Errorf("ADD runtimeConfig = %v", add["runtimeConfig"])
	}
	env := e.env(t, "ADD", "cap1")
	for _, want := range []string{
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=cap1;K8S_POD_UID=u-1\n",
		"CNI_IFNAME=eth0\n", "CNI_NETNS=" + netns + "\n", "CNI_CONTAINERID=cap1\n",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("ADD env lacks %q:\n%s", want, env)
		}
	}

	// A new config must not change what DEL runs: it uses the cached one.
	writeFile(t, filepath.Join(e.confDir, "00-other.conflist"), `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bdump"}]}`, 0o600)
	m.reload(context.Background())
	if err := m.Teardown(context.Background(), p); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	del := e.stdin(t, "DEL", "cap1")
	if del["name"] != "dumpnet" || del["prevResult"] == nil || !jsonEqual(t, del["runtimeConfig"], wantRC) {
		t.Errorf("DEL stdin lacks cached network, prevResult or runtimeConfig: %v", del)
	}
	// Not a netns any more (a plain file): DEL gets no netns rather than a bad one.
	if env := e.env(t, "DEL", "cap1"); !strings.Contains(env, "CNI_NETNS=\n") && strings.Contains(env, "CNI_NETNS=") {
		t.Errorf("DEL got a netns that is not one:\n%s", env)
	}
	if err := os.Remove(filepath.Join(e.outDir, "DEL-cap1.json")); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(context.Background(), p); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.outDir, "DEL-cap1.json")); err == nil {
		t.Error("second Teardown ran DEL again although nothing was attached")
	}
	assertNoAttachments(t, e.cacheDir)
}

func TestSetupTimeout(t *testing.T) {
	binDir, confDir := t.TempDir(), t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell waits for its child sleep: only a kill of the whole process
	// group lets Setup return on time.
	writeFile(t, filepath.Join(binDir, "bsleep"), `#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then echo $$ > "`+pidFile+`"; sleep 60; fi
exit 0
`, 0o755)
	writeFile(t, filepath.Join(confDir, "10-sleep.conflist"), `{"cniVersion":"1.0.0","name":"sleepnet","plugins":[{"type":"bsleep"}]}`, 0o600)
	m := newManager(t, Options{ConfDir: confDir, BinDirs: []string{binDir}, PluginTimeout: time.Second})
	start := time.Now()
	_, err := m.Setup(context.Background(), PodNetwork{ID: "slow", NetNS: "/nonexistent"})
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Setup error %v, want deadline exceeded", err)
	}
	if elapsed > 4*time.Second {
		t.Errorf("Setup took %v with a 1s plugin timeout", elapsed)
	}
	data, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid <= 0 {
		t.Fatalf("bad pid %q", data)
	}
	if !waitFor(2*time.Second, func() bool { return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH) }) {
		t.Errorf("plugin process group %d still alive", pid)
	}
}

// A plugin that leaves a child holding its stdout and exits 0 has
// succeeded: its answer is read once it exits. With os/exec's pipes and a
// WaitDelay the call failed after the delay with what was read by then
// (the first 512 bytes, when berthd was too busy to read on).
func TestSetupStrayChildHoldsStdout(t *testing.T) {
	binDir, confDir := t.TempDir(), t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The answer is longer than bytes.Buffer's first read (512 bytes).
	var ips []string
	for i := range 20 {
		ips = append(ips, `{"address":"10.1.2.`+strconv.Itoa(i+2)+`/24","interface":1}`)
	}
	writeFile(t, filepath.Join(binDir, "bstray"), `#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  sleep 30 &
  echo $! > "`+pidFile+`"
  echo '{"cniVersion":"1.0.0","interfaces":[{"name":"veth0"},{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],"ips":[`+strings.Join(ips, ",")+`]}'
fi
exit 0
`, 0o755)
	writeFile(t, filepath.Join(confDir, "10-stray.conflist"), `{"cniVersion":"1.0.0","name":"straynet","plugins":[{"type":"bstray"}]}`, 0o600)
	m := newManager(t, Options{ConfDir: confDir, CacheDir: t.TempDir(), BinDirs: []string{binDir}, PluginTimeout: time.Minute})
	t.Cleanup(func() {
		if data, err := os.ReadFile(pidFile); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	res, err := m.Setup(context.Background(), PodNetwork{ID: "stray", NetNS: "/nonexistent"})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if len(res.IPs) != 20 {
		t.Errorf("Setup got %d IPs, want 20: %v", len(res.IPs), res.IPs)
	}
}

// A plugin that fails without a CNI error on stdout is reported with how
// it ended and its stderr.
func TestPluginFailureWithoutCNIError(t *testing.T) {
	binDir, confDir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(binDir, "bbroken"), `#!/bin/sh
cat >/dev/null
echo '{"cniVersion":"1.0.0","interf'
echo 'bridge exploded' >&2
exit 3
`, 0o755)
	writeFile(t, filepath.Join(confDir, "10-broken.conflist"), `{"cniVersion":"1.0.0","name":"brokennet","plugins":[{"type":"bbroken"}]}`, 0o600)
	m := newManager(t, Options{ConfDir: confDir, CacheDir: t.TempDir(), BinDirs: []string{binDir}})
	_, err := m.Setup(context.Background(), PodNetwork{ID: "broken", NetNS: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "bridge exploded") {
		t.Errorf("Setup error %v, want the exit status and the plugin's stderr", err)
	}
}

func TestGCVersion11(t *testing.T) {
	e := newDumpEnv(t, "1.1.0", "")
	m := newManager(t, Options{ConfDir: e.confDir, CacheDir: e.cacheDir, BinDirs: []string{e.binDir}})
	for _, id := range []string{"keep", "drop"} {
		if _, err := m.Setup(context.Background(), PodNetwork{ID: id, NetNS: "/nonexistent"}); err != nil {
			t.Fatalf("Setup %s: %v", id, err)
		}
	}
	if err := m.GC(context.Background(), []string{"keep"}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.stdin(t, "DEL", "drop") // the stale attachment got its DEL
	if _, err := os.Stat(filepath.Join(e.outDir, "DEL-keep.json")); err == nil {
		t.Error("GC deleted the kept attachment")
	}
	gc := e.stdin(t, "GC", "")
	if !jsonEqual(t, gc["cni.dev/valid-attachments"], `[{"containerID":"keep","ifname":"eth0"}]`) {
		t.Errorf("GC valid attachments = %v", gc["cni.dev/valid-attachments"])
	}

	writeFile(t, filepath.Join(e.outDir, "gc-mode"), "unsupported", 0o600)
	if err := m.GC(context.Background(), []string{"keep"}); err != nil {
		t.Errorf("GC with a plugin that lacks GC: %v, want tolerated", err)
	}
	writeFile(t, filepath.Join(e.outDir, "gc-mode"), "fail", 0o600)
	if err := m.GC(context.Background(), []string{"keep"}); err == nil || !strings.Contains(err.Error(), "gc broke") {
		t.Errorf("GC with a failing plugin: %v, want its error", err)
	}
	if err := m.Teardown(context.Background(), PodNetwork{ID: "keep"}); err != nil {
		t.Fatal(err)
	}
	assertNoAttachments(t, e.cacheDir)
}
