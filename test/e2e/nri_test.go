package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// buildNRIPlugin builds test/nriplugin, the sample plugins' stand-in
// built on the NRI module's stub, into dir.
func buildNRIPlugin(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "nriplugin")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/berth-runtime/berth/test/nriplugin").CombinedOutput()
	if err != nil {
		t.Fatalf("build nriplugin: %v\n%s", err, out)
	}
	return bin
}

// startNRIDaemon starts berthd with the plugins pre-registered (copied
// into its plugin dir as IDX-NAME) and its metrics on a loopback port.
func startNRIDaemon(t *testing.T, bin string, nriTOML string, preregistered ...string) *testutil.Daemon {
	t.Helper()
	d, err := testutil.NewDaemon(testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		NRITOML: nriTOML, ExtraTOML: "\n[metrics]\naddress = \"127.0.0.1:0\"\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d.NRIPluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range preregistered {
		if err := os.WriteFile(filepath.Join(d.NRIPluginDir, fmt.Sprintf("%02d-%s", 10*(i+1), name)), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testutil.StartDaemonPrepared(t, d)
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNoLeaks(t, d)
	})
	return d
}

// metricsText scrapes the daemon's /metrics.
func metricsText(t *testing.T, d *testutil.Daemon) string {
	t.Helper()
	m := regexp.MustCompile(`metrics endpoint serving.* address=(\S+)`).FindStringSubmatch(d.LogTail(1 << 20))
	if m == nil {
		t.Fatal("no metrics address in berthd's log")
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// The device injector, ulimit adjuster and hook injector, started by
// berthd from its plugin dir, adjust a real container; metrics and logs
// name them.
func TestNRIPreRegisteredPlugins(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	bin := buildNRIPlugin(t, t.TempDir())
	d := startNRIDaemon(t, bin, "", "device-injector", "ulimit-adjuster", "hook-injector")
	marker := filepath.Join(d.Dir, "hook-state.json")

	pod := podConfig(t, d, "nri")
	podID := runPod(t, d, pod)
	cfg := shConfig("app", "sleep 600")
	cfg.Annotations = map[string]string{
		"devices.noderesource.dev/container.app": `[{"path":"/dev/nri-null","type":"c","major":1,"minor":3,"file_mode":438}]`,
		"ulimits.noderesource.dev/container.app": `[{"type":"RLIMIT_NOFILE","hard":4321,"soft":1234}]`,
		"hooks.berth.test/container.app":         marker,
	}
	id := runCtr(t, d, podID, pod, cfg)

	if got := execOut(t, d, id, "sh", "-c", "test -c /dev/nri-null && echo > /dev/nri-null && echo ok"); got != "ok" {
		t.Errorf("injected device: %q", got)
	}
	if got := execOut(t, d, id, "sh", "-c", "ulimit -n; ulimit -Hn"); got != "1234\n4321" {
		t.Errorf("ulimits = %q, want 1234 and 4321", got)
	}
	state, err := os.ReadFile(marker)
	if err != nil || !strings.Contains(string(state), id) {
		t.Errorf("injected createRuntime hook did not run for %s: %q, %v", id, state, err)
	}
	logs := d.LogTail(1 << 20)
	line := regexp.MustCompile(`NRI plugins adjusted container.*container_id=` + id + `.*adjusted="\[([a-z_ ]*)\]"`).FindStringSubmatch(logs)
	if line == nil {
		t.Errorf("berthd's log does not say what plugins adjusted in %s", id)
	} else {
		for _, want := range []string{"devices", "hooks", "rlimits"} {
			if !slices.Contains(strings.Fields(line[1]), want) {
				t.Errorf("log says plugins adjusted %q, without %s", line[1], want)
			}
		}
	}
	metrics := metricsText(t, d)
	for _, want := range []string{
		"berth_nri_plugins 3",
		`berth_nri_plugin_adjustments_total{event="CreateContainer",kind="adjust",plugin="10-device-injector"} 1`,
		`berth_nri_plugin_adjustments_total{event="CreateContainer",kind="adjust",plugin="20-ulimit-adjuster"} 1`,
		`berth_nri_plugin_adjustments_total{event="CreateContainer",kind="adjust",plugin="30-hook-injector"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// An external plugin connects to the socket, is told of the running
// container, and updates its resources on its own.
func TestNRIExternalPluginUpdatesResources(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	bin := buildNRIPlugin(t, t.TempDir())
	d := startNRIDaemon(t, bin, "")
	pod := podConfig(t, d, "nri-upd")
	podID := runPod(t, d, pod)
	// Running before the plugin connects: it must learn of it in sync.
	before := runCtr(t, d, podID, pod, shConfig("before", "sleep 600"))

	plugin := exec.Command(bin, "-name", "resource-updater", "-idx", "50", "-socket", d.NRISocket)
	plugin.Stderr = os.Stderr
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plugin.Process.Kill(); _ = plugin.Wait() }()
	waitMetric(t, d, "berth_nri_plugins 1")

	cfg := shConfig("app", "sleep 600")
	cfg.Annotations = map[string]string{"cpushares.berth.test/container.app": "1536"}
	id := runCtr(t, d, podID, pod, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for ctrStatus(t, d, id).GetResources().GetLinux().GetCpuShares() != 1536 {
		if time.Now().After(deadline) {
			t.Fatalf("resources of %s never updated by the plugin: %v", id, ctrStatus(t, d, id).GetResources())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The runtime applied it: cgroup v2 has shares as cpu.weight, v1 as
	// cpu.shares.
	if w := execOut(t, d, id, "sh", "-c", "cat /sys/fs/cgroup/cpu.weight 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.shares"); w != "60" && w != "1536" {
		t.Errorf("cgroup says %q, want weight 60 or shares 1536", w)
	}
	if got := ctrStatus(t, d, before).GetResources().GetLinux().GetCpuShares(); got == 1536 {
		t.Errorf("the update reached another container")
	}
}

// waitMetric polls /metrics until it holds line.
func waitMetric(t *testing.T, d *testutil.Daemon, line string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(metricsText(t, d), line) {
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %q", line)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A plugin killed while it holds a CreateContainer does not hang the
// call or berthd; one that stops answering is dropped after
// plugin_request_timeout.
func TestNRIPluginKilledMidCall(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	dir := t.TempDir()
	bin := buildNRIPlugin(t, dir)
	d := startNRIDaemon(t, bin, "plugin_request_timeout = \"30s\"\n")
	marker := filepath.Join(dir, "blocked")
	plugin := exec.Command(bin, "-name", "hang", "-idx", "90", "-socket", d.NRISocket, "-marker", marker)
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plugin.Process.Kill(); _ = plugin.Wait() }()
	waitMetric(t, d, "berth_nri_plugins 1")

	pod := podConfig(t, d, "nri-kill")
	podID := runPod(t, d, pod)
	ensureImage(t, d, images.Busybox.Ref)
	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg := shConfig("app", "sleep 600")
		id, err := d.Runtime.CreateContainer(context.Background(), podID, cfg, pod)
		done <- result{id, err}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plugin never got the CreateContainer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := plugin.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("CreateContainer after the plugin died: %v", r.err)
		}
		startCtr(t, d, r.id)
	case <-time.After(15 * time.Second):
		t.Fatal("CreateContainer still waits on a dead plugin")
	}
	waitMetric(t, d, "berth_nri_plugins 0")
	if !d.Running() {
		t.Fatalf("berthd died: %v", d.ExitErr())
	}
}

// A pre-registered plugin that stops answering holds a CRI call no longer
// than plugin_request_timeout.
func TestNRIStuckPluginBounded(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	bin := buildNRIPlugin(t, t.TempDir())
	d := startNRIDaemon(t, bin, "plugin_request_timeout = \"1s\"\n", "hang")
	pod := podConfig(t, d, "nri-stuck")
	podID := runPod(t, d, pod)
	start := time.Now()
	id := runCtr(t, d, podID, pod, shConfig("app", "sleep 600"))
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("create and start took %s with a stuck plugin (timeout 1s)", el)
	}
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second)
}
