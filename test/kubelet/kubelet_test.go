package kubelet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

const (
	kubeletPort = 10250
	healthzPort = 10248
	nodeName    = "berth-kubelet"
)

// kubelet is a standalone kubelet (no API server: static pods only) on a
// work dir of its own, configured as ../shared/kubelet/e2e does.
type kubelet struct {
	dir       string // work dir: config, root dir, manifests, pod logs, log
	manifests string // staticPodPath
	logPath   string // stdout+stderr of every kubelet run, appended
	endpoint  string // unix://<berthd socket>
	cmd       *exec.Cmd
	exited    chan struct{}
	starts    []time.Time // when each kubelet run started
	stops     []time.Time // when each was told to stop
	client    *http.Client
}

func newKubelet(t *testing.T, endpoint string) *kubelet {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bkl")
	if err != nil {
		t.Fatalf("kubelet work dir: %v", err)
	}
	k := &kubelet{
		dir:       dir,
		manifests: filepath.Join(dir, "manifests"),
		logPath:   filepath.Join(dir, "kubelet.log"),
		endpoint:  endpoint,
		client: &http.Client{
			Timeout: 30 * time.Second,
			// Self-signed serving cert, loopback only.
			Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Proxy: nil},
		},
	}
	for _, d := range []string{k.manifests, filepath.Join(dir, "root"), filepath.Join(dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("kubelet dir: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(k.config()), 0o644); err != nil {
		t.Fatalf("kubelet config: %v", err)
	}
	return k
}

// config is the kit's, with the manifests re-read every 2s instead of 5s
// to keep the run short and restarts backed off for at most 2s.
func (k *kubelet) config() string {
	return testutil.KubeletConfig{
		Endpoint: k.endpoint, Manifests: k.manifests, PodLogsDir: filepath.Join(k.dir, "pod-logs"),
		Port: kubeletPort, Healthz: healthzPort,
		Extra: []string{
			"fileCheckFrequency: 2s",
			"syncFrequency: 10s",
			"crashLoopBackOff:",
			"  maxContainerRestartPeriod: 2s",
		},
	}.YAML()
}

// start runs kubelet and waits until its healthz and /pods answer.
func (k *kubelet) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("kubelet log: %v", err)
	}
	defer logf.Close()
	cmd := exec.Command(kubeBin, "--config="+filepath.Join(k.dir, "kubelet.yaml"),
		"--root-dir="+filepath.Join(k.dir, "root"), "--cert-dir="+filepath.Join(k.dir, "root", "pki"),
		"--hostname-override="+nodeName, "--v=2")
	cmd.Stdout, cmd.Stderr = logf, logf
	// A crashed test binary must not leave kubelet holding the host's
	// kubelet ports and deleting pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kubelet: %v", err)
	}
	k.cmd, k.exited = cmd, make(chan struct{})
	k.starts = append(k.starts, time.Now())
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, k.exited)
	deadline := time.Now().Add(60 * time.Second)
	for !k.healthy() {
		if !k.running() || time.Now().After(deadline) {
			t.Fatalf("kubelet not healthy within 60s; log tail:\n%s", k.logTail(4096))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (k *kubelet) healthy() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthzPort))
	if err != nil {
		return false
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		return false
	}
	_, err = k.pods()
	return err == nil
}

func (k *kubelet) running() bool {
	if k.cmd == nil {
		return false
	}
	select {
	case <-k.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 15s.
func (k *kubelet) stop() {
	if !k.running() {
		return
	}
	k.stops = append(k.stops, time.Now())
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(15 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

// remove unmounts what kubelet left under its root dir and deletes the
// work dir (the log is copied out first when keep names a path).
func (k *kubelet) remove(t *testing.T, keep string) {
	k.stop()
	if keep != "" {
		if data, err := os.ReadFile(k.logPath); err == nil {
			_ = os.WriteFile(keep, data, 0o644)
		}
	}
	if out, err := exec.Command("sh", "-c",
		`findmnt -rn -o TARGET | grep "^$1/" | sort -r | xargs -r umount -l`, "sh", k.dir).CombinedOutput(); err != nil {
		t.Logf("unmount kubelet dirs: %v: %s", err, out)
	}
	if err := os.RemoveAll(k.dir); err != nil {
		t.Errorf("remove kubelet work dir: %v", err)
	}
}

func (k *kubelet) logTail(n int64) string {
	b, _ := os.ReadFile(k.logPath)
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// put writes a static pod manifest atomically (kubelet ignores dot files).
func (k *kubelet) put(t *testing.T, p pod) {
	t.Helper()
	data, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		t.Fatalf("marshal pod %s: %v", p.Metadata.Name, err)
	}
	tmp := filepath.Join(k.manifests, "."+p.Metadata.Name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatalf("write manifest: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(k.manifests, p.Metadata.Name+".json")); err != nil {
		t.Fatalf("install manifest: %v", err)
	}
}

// del removes the manifest of the pod named name (kubelet then stops it).
func (k *kubelet) del(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.manifests, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("remove manifest %s: %v", name, err)
	}
}

func (k *kubelet) get(path string) ([]byte, error) {
	return k.do(http.MethodGet, path)
}

func (k *kubelet) do(method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method,
		fmt.Sprintf("https://127.0.0.1:%d%s", kubeletPort, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// pods is kubelet's /pods view.
func (k *kubelet) pods() ([]podStatus, error) {
	b, err := k.get("/pods")
	if err != nil {
		return nil, err
	}
	var l struct {
		Kind  string      `json:"kind"`
		Items []podStatus `json:"items"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("decode /pods: %w", err)
	}
	if l.Kind != "PodList" {
		return nil, fmt.Errorf("/pods returned kind %q", l.Kind)
	}
	return l.Items, nil
}

// pod is the status of the static pod named name (<name>-<node>) in ns.
func (k *kubelet) pod(ns, name string) (podStatus, bool) {
	pods, err := k.pods()
	if err != nil {
		return podStatus{}, false
	}
	for _, p := range pods {
		if p.Metadata.Namespace == ns && p.Metadata.Name == full(name) {
			return p, true
		}
	}
	return podStatus{}, false
}

// run executes cmd (no argument may contain a space: kubelet splits the
// command on spaces) through kubelet's /run endpoint, i.e. CRI ExecSync.
func (k *kubelet) run(ns, name, ctr string, cmd ...string) (string, error) {
	b, err := k.do(http.MethodPost, fmt.Sprintf("/run/%s/%s/%s?cmd=%s", ns, full(name), ctr,
		url.QueryEscape(strings.Join(cmd, " "))))
	return string(b), err
}

// logs is kubelet's /containerLogs for one container.
func (k *kubelet) logs(ns, name, ctr string) (string, error) {
	b, err := k.get(fmt.Sprintf("/containerLogs/%s/%s/%s", ns, full(name), ctr))
	return string(b), err
}

// full is the name kubelet gives a static pod.
func full(name string) string { return name + "-" + nodeName }

// waitFor polls cond every 500ms until it holds or timeout passes; it
// returns how long it took, or an error naming what was awaited.
func waitFor(timeout time.Duration, what string, cond func() bool) (time.Duration, error) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("%s: not within %s", what, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(start), nil
}
