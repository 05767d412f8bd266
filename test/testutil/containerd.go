package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// ContainerdVersion is the containerd the comparison tests run beside
// berthd, built from the Go module proxy by test/lib/containerd-build.sh.
const ContainerdVersion = "v2.4.2"

var (
	containerdOnce sync.Once
	containerdDir  string
	containerdErr  error
)

// ContainerdBinDir is the directory holding containerd, its runc shim and
// ctr, built by test/lib/containerd-build.sh into its cache when absent.
// A build that fails skips t, unless CI=true: CI must run the tests that
// need containerd, so there it fails t.
func ContainerdBinDir(t testing.TB) string {
	t.Helper()
	containerdOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			containerdErr = err
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(root, "test", "lib", "containerd-build.sh"), ContainerdVersion)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			containerdErr = fmt.Errorf("test/lib/containerd-build.sh %s: %w: %s", ContainerdVersion, err, lastLines(stderr.String(), 20))
			return
		}
		containerdDir = strings.TrimSpace(string(out))
	})
	if containerdErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("containerd %s is needed and could not be built: %v", ContainerdVersion, containerdErr)
		}
		t.Skipf("containerd %s is not built and building it failed (set CI=true to make this fatal): %v", ContainerdVersion, containerdErr)
	}
	return containerdDir
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ContainerdOptions configure StartContainerd.
type ContainerdOptions struct {
	// BinDir holds containerd, containerd-shim-runc-v2 and ctr.
	BinDir string
	// Runc is the OCI runtime binary of the runc handler.
	Runc string
	// SandboxImage is the pause image, pulled from PlainHTTPHosts.
	SandboxImage string
	// PlainHTTPHosts are registry hosts reached over plain HTTP (a
	// certs.d hosts.toml each, as an operator writes them).
	PlainHTTPHosts []string
	// CNIConfList is the one network config in containerd's conf dir.
	CNIConfList string
}

// Containerd is a containerd 2.x process with the CRI plugin on its own
// root, state, sockets, runc root, cgroup parent and CNI config.
type Containerd struct {
	Dir          string
	Socket       string
	CgroupParent string // for the pods the test creates
	RuncRoot     string

	Runtime       internalapi.RuntimeService
	Images        internalapi.ImageManagerService
	RuntimeClient runtimeapi.RuntimeServiceClient

	opts    ContainerdOptions
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// StartContainerd starts containerd and waits until its CRI answers.
// Cleanup stops it, removes what it and its shims left and fails t for
// anything that had to be removed by force.
func StartContainerd(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		Dir: dir, Socket: filepath.Join(dir, "c.sock"), RuncRoot: filepath.Join(dir, "runc"),
		CgroupParent: "/berth-e2e-ctd-" + randomHex(4), opts: opts, logPath: filepath.Join(dir, "containerd.log"),
	}
	t.Cleanup(func() { c.cleanup(t) })
	if err := c.writeFiles(); err != nil {
		t.Fatalf("prepare containerd: %v", err)
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(opts.BinDir, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// The shim is found on PATH, and CRIU too (containerd's CRI looks
	// for it there before it checkpoints; runc runs it from there).
	// containerd unpacks a checkpoint image for a restore into
	// MkdirTemp($XDG_RUNTIME_DIR) and never removes it: keep it in Dir.
	xdg := filepath.Join(dir, "xdg")
	if err := os.MkdirAll(xdg, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "PATH="+c.path(), "XDG_RUNTIME_DIR="+xdg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(c.exited) }()
	if err := c.connect(); err != nil {
		t.Fatalf("containerd: %v\n%s", err, c.LogTail())
	}
	return c
}

func (c *Containerd) config() string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q

[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %q
        Root = %q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
    conf_dir = %q
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, c.Socket+".ttrpc",
		c.opts.SandboxImage, filepath.Join(c.Dir, "certs.d"), c.opts.Runc, c.RuncRoot, filepath.Join(c.Dir, "cni"))
}

// path is containerd's PATH: its shim, then Runc as "runc" (what a
// container restored through containerd's own API runs, with no runtime
// options naming a binary), then CRIU's and the system's directories.
func (c *Containerd) path() string {
	return c.opts.BinDir + ":" + filepath.Join(c.Dir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

func (c *Containerd) writeFiles() error {
	if err := os.MkdirAll(filepath.Join(c.Dir, "bin"), 0o755); err != nil {
		return err
	}
	runc, err := exec.LookPath(c.opts.Runc)
	if err != nil {
		return err
	}
	if err := os.Symlink(runc, filepath.Join(c.Dir, "bin", "runc")); err != nil {
		return err
	}
	for _, h := range c.opts.PlainHTTPHosts {
		d := filepath.Join(c.Dir, "certs.d", h)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "http://"+h, "http://"+h)
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "cni"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "cni", "10-e2e.conflist"), []byte(c.opts.CNIConfList), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, "config.toml"), []byte(c.config()), 0o600)
}

func (c *Containerd) connect() error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.exited:
			return errors.New("containerd exited before serving")
		default:
		}
		if conn, err := net.DialTimeout("unix", c.Socket, time.Second); err == nil {
			_ = conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not listen on %s within 60s", c.Socket)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := context.Background()
	endpoint := "unix://" + c.Socket
	rs, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(2 * time.Minute).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		return fmt.Errorf("cri-client runtime service: %w", err)
	}
	is, err := remote.NewRemoteImageServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(2 * time.Minute).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		_ = rs.Close(ctx)
		return fmt.Errorf("cri-client image service: %w", err)
	}
	c.Runtime, c.Images = rs, is
	// The CRI plugin registers after the socket listens: wait for it.
	for {
		st, err := rs.Status(ctx, false)
		if err == nil && st.GetStatus() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd's CRI does not answer Status: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ctr runs containerd's ctr against this containerd in CRI's namespace.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--address", c.Socket, "--namespace", "k8s.io"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.opts.BinDir, "ctr"), full...)
	cmd.Env = append(os.Environ(), "PATH="+c.path())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// LogTail is the end of containerd's log.
func (c *Containerd) LogTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 32<<10 {
		b = b[len(b)-32<<10:]
	}
	return string(b)
}

func (c *Containerd) scope() scope {
	return scope{dir: c.Dir, state: filepath.Join(c.Dir, "state", "io.containerd.grpc.v1.cri"), cgroupParent: c.CgroupParent, runcRoot: filepath.Join(c.RuncRoot, "k8s.io")}
}

// cleanup stops containerd and fails t for every shim, container, mount,
// namespace pin or cgroup that outlived it and its pods' removal.
func (c *Containerd) cleanup(t testing.TB) {
	if c.Runtime != nil {
		_ = c.Runtime.Close(context.Background())
	}
	if c.Images != nil {
		_ = c.Images.Close(context.Background())
	}
	if c.cmd != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	s := c.scope()
	var leaks []string
	for deadline := time.Now().Add(3 * time.Second); ; {
		if leaks = findLeaks(s); len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range leaks {
		t.Errorf("containerd leak: %s", l)
	}
	forceCleanup(t, s, true)
	if t.Failed() {
		t.Logf("containerd log tail:\n%s", c.LogTail())
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Errorf("remove containerd dir: %v", err)
	}
}
