package e2e

// Operating berthd (issue 9): the metrics endpoint, SIGUSR1 dumps, SIGHUP
// reloads, SIGTERM that finishes in-flight calls and leaves containers
// running, and `make install` / `make uninstall` under a DESTDIR.

import (
	"context"
	"debug/elf"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// waitLog waits until berthd's log, after offset, matches re and returns
// the first submatch (or the whole match).
func waitLog(t *testing.T, d *testutil.Daemon, offset int, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(d.LogPath)
		if err == nil && len(data) > offset {
			if m := re.FindSubmatch(data[offset:]); m != nil {
				return string(m[len(m)-1])
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("berthd log never matched %q within %s; tail:\n%s", re, timeout, d.LogTail(8<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func logLen(t *testing.T, d *testutil.Daemon) int {
	t.Helper()
	st, err := os.Stat(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Size())
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape metrics: %d, %v", resp.StatusCode, err)
	}
	return string(body)
}

// TestOpsMetrics checks that the endpoint, on loopback, serves request,
// object, shim, pull and Go runtime series after some CRI calls.
func TestOpsMetrics(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		ExtraTOML: "\n[metrics]\naddress = \"127.0.0.1:0\"\n",
	})
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNoLeaks(t, d)
	})
	addr := waitLog(t, d, 0, regexp.MustCompile(`metrics endpoint serving.*address=(127\.0\.0\.1:\d+)`), 10*time.Second)

	ctx := context.Background()
	pod := podConfig(t, d, "metrics")
	podID := runPod(t, d, pod)
	runCtr(t, d, podID, pod, shConfig("sleeper", "sleep 1000"))
	if _, err := d.RuntimeClient.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "0123456789abcdef"}); code(err).String() != "NotFound" {
		t.Fatalf("ContainerStatus of a missing container: %v, want NotFound", err)
	}

	body := scrape(t, addr)
	for _, want := range []string{
		`berth_cri_requests_total{code="OK",method="RunPodSandbox"} 1`,
		`berth_cri_requests_total{code="OK",method="StartContainer"} 1`,
		`berth_cri_requests_total{code="NotFound",method="ContainerStatus"} 1`,
		`berth_cri_request_duration_seconds_count{code="OK",method="CreateContainer"} 1`,
		`berth_pod_sandboxes{state="READY"} 1`,
		`berth_containers{state="RUNNING"} 1`,
		`berth_shims 1`,
		`berth_image_pulls_total{result="success"} 1`,
		`berth_image_pull_duration_seconds_count{result="success"} 1`,
		`go_goroutines `,
		`berth_process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^berth_image_pull_bytes_total (\S+)$`).FindStringSubmatch(body); m == nil || m[1] == "0" {
		t.Errorf("pull bytes not counted: %v", m)
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// TestOpsSignals sends SIGUSR1 (a goroutine dump in the log dir) and
// SIGHUP (log level applied, a restart-only key reported as not applied).
func TestOpsSignals(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	t.Cleanup(func() { testutil.AssertNoLeaks(t, d) })
	ctx := context.Background()

	off := logLen(t, d)
	if err := syscall.Kill(d.Pid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	dump := waitLog(t, d, off, regexp.MustCompile(`goroutine stacks dumped.*path=(\S+)`), 10*time.Second)
	if filepath.Dir(dump) != filepath.Join(d.State, "logs") {
		t.Errorf("dump written to %s, want <state>/logs", dump)
	}
	data, err := os.ReadFile(dump)
	if err != nil || !strings.Contains(string(data), "goroutine ") || !strings.Contains(string(data), "grpc") {
		t.Errorf("dump %s: %v; want goroutine stacks including the gRPC server's:\n%.1000s", dump, err, data)
	}

	// The harness runs berthd at debug: a Version call logs "request done".
	orig, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(d.ConfigPath, orig, 0o600) })
	if _, err := d.Runtime.Version(ctx, ""); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, off, regexp.MustCompile(`request done.*method=Version`), 5*time.Second)

	next := strings.Replace(string(orig), `level = "debug"`, `level = "info"`, 1) + "\n[metrics]\naddress = \"127.0.0.1:0\"\n"
	if err := os.WriteFile(d.ConfigPath, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	off = logLen(t, d)
	if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, d, off, regexp.MustCompile(`(config reloaded.*)`), 10*time.Second)
	if !strings.Contains(line, "applied=[log.level]") || !strings.Contains(line, "not_applied_restart_needed=[metrics.address]") {
		t.Errorf("reload line %q: want log.level applied and metrics.address reported as needing a restart", line)
	}
	off = logLen(t, d)
	if _, err := d.Runtime.Version(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// A warn-level line after the Version call proves the log is flushed up
	// to it: send SIGHUP with a broken file.
	if err := os.WriteFile(d.ConfigPath, []byte("[log]\nlevel = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, off, regexp.MustCompile(`config reload failed`), 10*time.Second)
	if after, _ := os.ReadFile(d.LogPath); strings.Contains(string(after[off:]), "request done") {
		t.Errorf("debug lines still logged after the level went to info:\n%s", after[off:])
	}
	if !d.Running() {
		t.Fatalf("berthd died on a signal: %v", d.ExitErr())
	}
}

// TestOpsGracefulStop sends SIGTERM while a StopContainer call waits out
// its timeout: the call completes, berthd exits cleanly, the other
// container keeps running, and after a restart both are known.
func TestOpsGracefulStop(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	t.Cleanup(func() {
		if d.Running() {
			removeAllPods(t, d)
			testutil.AssertNoLeaks(t, d)
		}
	})
	ctx := context.Background()
	pod := podConfig(t, d, "graceful")
	podID := runPod(t, d, pod)
	keeper := runCtr(t, d, podID, pod, shConfig("keeper", "while true; do echo tick; sleep 0.1; done"))
	stubborn := runCtr(t, d, podID, pod, shConfig("stubborn", "trap '' TERM; while true; do sleep 0.2; done"))
	keeperBefore := ctrStatus(t, d, keeper)

	const stopTimeout = 4
	stopped := make(chan error, 1)
	start := time.Now()
	rc := d.RuntimeClient
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := rc.StopContainer(cctx, &runtimeapi.StopContainerRequest{ContainerId: stubborn, Timeout: stopTimeout})
		stopped <- err
	}()
	time.Sleep(time.Second) // the call is waiting for the stubborn container
	if err := syscall.Kill(d.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("in-flight StopContainer cut off by SIGTERM: %v", err)
	}
	if took := time.Since(start); took < stopTimeout*time.Second {
		t.Errorf("StopContainer returned after %s, before its %ds timeout", took, stopTimeout)
	}
	deadline := time.Now().Add(15 * time.Second)
	for d.Running() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if d.Running() {
		t.Fatal("berthd still runs 15s after SIGTERM")
	}
	if err := d.ExitErr(); err != nil {
		t.Errorf("berthd exit after SIGTERM: %v, want a clean exit", err)
	}
	_ = d.Stop() // drop the clients of the dead daemon

	size := logSize(t, keeperBefore.LogPath)
	time.Sleep(500 * time.Millisecond)
	if grown := logSize(t, keeperBefore.LogPath); grown <= size {
		t.Errorf("the running container stopped while berthd was down (%d -> %d bytes)", size, grown)
	}
	d.Restart(t)
	st := ctrStatus(t, d, keeper)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != keeperBefore.StartedAt {
		t.Errorf("keeper after restart: %s started %d (before %d), want RUNNING, same start", st.State, st.StartedAt, keeperBefore.StartedAt)
	}
	if st := ctrStatus(t, d, stubborn); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Errorf("stubborn after restart: %s exit %d, want EXITED 137 (killed after the timeout)", st.State, st.ExitCode)
	}
}

// TestOpsMakeInstall runs `make install` and `make uninstall` into a
// DESTDIR and checks the layout, the unit's key settings and the config.
func TestOpsMakeInstall(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make not installed")
	}
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	t.Parallel()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "root")
	runMake := func(target string) string {
		t.Helper()
		cmd := exec.Command(makeBin, "-C", repo, target, "DESTDIR="+dest, "BIN="+filepath.Join(tmp, "bin"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	runMake("install")

	for _, b := range []string{"berthd", "berth-shim", "berth-pause"} {
		st, err := os.Stat(filepath.Join(dest, "usr/local/bin", b))
		if err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s not installed executable: %v", b, err)
		}
	}
	// One shim runs per container; libc in it costs each ~100 KiB.
	if interp := elfInterpreter(t, filepath.Join(dest, "usr/local/bin/berth-shim")); interp != "" {
		t.Errorf("berth-shim is linked dynamically (interpreter %s), want static (CGO_ENABLED=0)", interp)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/berth.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStart=/usr/local/bin/berthd --config /etc/berth/config.toml\n",
		"\nType=notify\n", "\nNotifyAccess=main\n", "\nDelegate=yes\n", "\nKillMode=process\n", "\nRestart=on-failure\n", "\nLimitNOFILE=",
		"Documentation=file:///usr/local/share/doc/berth/operator-guide.md",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(string(unit), "@") {
		t.Errorf("unit has an unexpanded placeholder:\n%s", unit)
	}
	cfg := filepath.Join(dest, "etc/berth/config.toml")
	berthd := filepath.Join(dest, "usr/local/bin/berthd")
	if out, err := exec.Command(berthd, "config", "check", cfg).CombinedOutput(); err != nil {
		t.Errorf("installed config does not check: %v\n%s", err, out)
	}
	for _, doc := range []string{"operator-guide.md", "cri-rpcs.md", "config-reference.md"} {
		if _, err := os.Stat(filepath.Join(dest, "usr/local/share/doc/berth", doc)); err != nil {
			t.Errorf("doc %s not installed: %v", doc, err)
		}
	}

	// A second install keeps an edited config.
	edited := []byte("[log]\nlevel = \"debug\"\n")
	if err := os.WriteFile(cfg, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	runMake("install")
	if got, _ := os.ReadFile(cfg); string(got) != string(edited) {
		t.Errorf("install overwrote an edited config: %q", got)
	}
	runMake("uninstall")
	if got, _ := os.ReadFile(cfg); string(got) != string(edited) {
		t.Errorf("uninstall removed an edited config")
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}

	// Install then uninstall with the default config leaves nothing.
	runMake("install")
	runMake("uninstall")
	var left []string
	_ = filepath.WalkDir(dest, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest))
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("uninstall left files behind: %v", left)
	}
}

// elfInterpreter is the dynamic loader the ELF binary at path names, ""
// for a static binary.
func elfInterpreter(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}
