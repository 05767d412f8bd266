package e2e

// What operators of containerd and CRI-O rely on (issue 22): config
// drop-ins, systemd readiness, node-level registry credentials, and image
// import into a running berthd.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestConfigDropIns starts berthd with drop-ins in config.d beside its
// config: verbose Status shows the merged config and the files it came
// from, config check lists them, and SIGHUP re-reads them.
func TestConfigDropIns(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins})
	dir := filepath.Join(d.Dir, "config.d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("20-timeout.toml", "[cni]\nplugin_timeout = \"77s\"\n")
	write("10-pinned.toml", "[registry]\npinned_images = [\"example.test/pinned:1\"]\n[cni]\nplugin_timeout = \"55s\"\n")

	out, err := exec.Command(bins.Berthd, "config", "check", d.ConfigPath).CombinedOutput()
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	for _, f := range []string{d.ConfigPath, "10-pinned.toml: ok", "20-timeout.toml: ok"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("config check output does not list %q:\n%s", f, out)
		}
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	resp, err := d.Runtime.Status(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Files    []string `json:"files"`
		CNI      struct{ PluginTimeout string }
		Registry struct{ PinnedImages, InsecureHosts []string }
		Root     string
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["config"]), &cfg); err != nil {
		t.Fatalf("verbose Status config: %v\n%s", err, resp.GetInfo()["config"])
	}
	if cfg.CNI.PluginTimeout != "77s" {
		t.Errorf("cni.plugin_timeout = %q, want the last drop-in's 77s", cfg.CNI.PluginTimeout)
	}
	if !slices.Equal(cfg.Registry.PinnedImages, []string{"example.test/pinned:1"}) || cfg.Root != d.Root {
		t.Errorf("merged config lost keys: pinned %v root %q", cfg.Registry.PinnedImages, cfg.Root)
	}
	want := []string{d.ConfigPath, filepath.Join(dir, "10-pinned.toml"), filepath.Join(dir, "20-timeout.toml")}
	if !slices.Equal(cfg.Files, want) {
		t.Errorf("config files = %v, want %v", cfg.Files, want)
	}

	// A drop-in written later is read by SIGHUP like the main file.
	write("30-level.toml", "[log]\nlevel = \"info\"\n")
	off := logLen(t, d)
	if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, d, off, regexp.MustCompile(`(config reloaded.*)`), 10*time.Second)
	if !strings.Contains(line, "applied=[log.level]") {
		t.Errorf("reload did not apply the drop-in's log.level: %s", line)
	}
}

// TestSystemdNotify starts berthd as systemd would for Type=notify, with
// NOTIFY_SOCKET and WATCHDOG_USEC: READY=1 comes once the CRI socket
// answers, WATCHDOG=1 keeps coming, STOPPING=1 comes on SIGTERM, and no
// shim, runtime or container inherits the socket.
func TestSystemdNotify(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	dir, err := os.MkdirTemp("/tmp", "bn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		Env: []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"},
	})
	type note struct {
		state    string
		answered error // Version on the CRI socket right when READY=1 came
	}
	notes := make(chan note, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			nt := note{state: string(buf[:n])}
			if strings.HasPrefix(nt.state, "READY=1") {
				nt.answered = versionNow(d.Socket)
			}
			notes <- nt
		}
	}()
	next := func(prefix string) note {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case nt := <-notes:
				if strings.HasPrefix(nt.state, prefix) {
					return nt
				}
			case <-deadline:
				t.Fatalf("no %s notification within 30s; log:\n%s", prefix, d.LogTail(8<<10))
			}
		}
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	ready := next("READY=1")
	if ready.answered != nil {
		t.Errorf("READY=1 sent before the CRI socket answered: %v", ready.answered)
	}
	if !strings.Contains(ready.state, "STATUS=") {
		t.Errorf("READY=1 carries no STATUS: %q", ready.state)
	}
	for range 2 {
		next("WATCHDOG=1")
	}

	cfg := podConfig(t, d, "notify")
	pod := runPod(t, d, cfg)
	runCtr(t, d, pod, cfg, shConfig("sleeper", "sleep 60"))
	if pids := pidsWithEnv(t, "NOTIFY_SOCKET="+sock); len(pids) != 1 || pids[0] != d.Pid() {
		t.Errorf("processes with berthd's NOTIFY_SOCKET: %v, want berthd (%d) alone", pids, d.Pid())
	}
	removePod(t, d, pod)

	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	next("STOPPING=1")
}

// versionNow asks the CRI socket for Version without waiting for it.
func versionNow(socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

// pidsWithEnv lists the processes whose initial environment holds kv.
func pidsWithEnv(t *testing.T, kv string) []int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/environ")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // gone, or a kernel thread
		}
		if slices.Contains(strings.Split(string(data), "\x00"), kv) {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPullNodeCredentials pulls a private image with no credentials in the
// CRI request: berthd takes them from the node's auth file (named in a
// config drop-in), first through a credential helper the test writes, then
// from an auths entry; the mirror listed first in hosts.toml never sees
// them, and without an entry the pull is Unauthenticated.
func TestPullNodeCredentials(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	const user, pass = "node-puller", "e2e-node-pw"
	_, mirror, upHost, mirrorHost := privateBehindMirror(t, user, pass)
	img, err := testutil.NewImage(testutil.ImageSpec{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := testutil.PushTo(context.Background(), upHost+"/team/node-private:1", img, http.DefaultTransport,
		&authn.Basic{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}

	// The credential helper, found in berthd's PATH as docker would.
	helperDir := t.TempDir()
	asked := filepath.Join(helperDir, "asked")
	helper := fmt.Sprintf(`#!/bin/sh
[ "$1" = get ] || exit 2
read -r server || true
echo "$server" >> %q
[ "$server" = %q ] || { echo "credentials not found in native keychain"; exit 1; }
printf '{"ServerURL":"%%s","Username":%q,"Secret":%q}' "$server"
`, asked, upHost, user, pass)
	if err := os.WriteFile(filepath.Join(helperDir, "docker-credential-e2e"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{
		Binaries: bins, Env: []string{"PATH=" + helperDir + ":" + os.Getenv("PATH")},
	})
	certs := t.TempDir()
	if err := d.SetRegistryConfigPath(certs); err != nil {
		t.Fatal(err)
	}
	writeHostsTOML(t, certs, upHost, fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upHost, mirrorHost))
	authFile := filepath.Join(d.Dir, "auth.json")
	if err := os.Mkdir(filepath.Join(d.Dir, "config.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "config.d", "50-auth.toml"), fmt.Appendf(nil, "[registry]\nauth_file = %q\n", authFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	writeAuth := func(v any) {
		t.Helper()
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(authFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	writeAuth(map[string]any{"credHelpers": map[string]string{upHost: "e2e"}})
	if ref, _, err := pullCode(t, d, p.Ref, nil); err != nil || ref != p.ConfigDigest.String() {
		t.Fatalf("pull with a credential helper: %q, %v", ref, err)
	}
	if data, _ := os.ReadFile(asked); !strings.Contains(string(data), upHost) {
		t.Errorf("the helper was asked for %q, want %s", data, upHost)
	}
	removeImage(t, d, p.Ref)

	// The file is read at every pull: no restart.
	writeAuth(map[string]any{"auths": map[string]any{"http://" + upHost: map[string]string{"auth": basicAuth(user, pass)}}})
	if ref, _, err := pullCode(t, d, p.Ref, nil); err != nil || ref != p.ConfigDigest.String() {
		t.Fatalf("pull with an auths entry: %q, %v", ref, err)
	}
	removeImage(t, d, p.Ref)

	writeAuth(map[string]any{"auths": map[string]any{mirrorHost + "-other": map[string]string{"auth": basicAuth(user, pass)}}})
	if _, code, err := pullCode(t, d, p.Ref, nil); code != codes.Unauthenticated {
		t.Errorf("pull with no entry for the registry: code %v, want Unauthenticated: %v", code, err)
	}

	mirror.assertNoCredentials(t)
	assertNoSecrets(t, d, pass, basicAuth(user, pass))
	testutil.AssertNoLeaks(t, d)
}
