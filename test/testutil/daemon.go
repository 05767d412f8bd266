package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// DaemonOptions configure StartDaemon.
type DaemonOptions struct {
	Binaries Binaries
	// InsecureHosts are registry hosts reached over plain HTTP.
	InsecureHosts []string
	// ExtraTOML is appended to the generated config; it may only add tables
	// (or keys of tables it opens itself).
	ExtraTOML string
	// RuntimeTOML adds keys to the generated config's [runtime] table.
	RuntimeTOML string
	// CNIConfList is the one network config berthd finds in its own CNI
	// conf dir (<dir>/cni); empty means LoopbackCNI, so pods get a network
	// namespace with only lo, up, and nothing outside the machine is touched.
	CNIConfList string
	// CNIBinDirs are searched for plugins; nil means /usr/lib/cni and
	// /opt/cni/bin (Debian's containernetworking-plugins).
	CNIBinDirs []string
	// RPCTimeout bounds each cri-client call; 0 means 30s.
	RPCTimeout time.Duration
	// Env is added to berthd's environment (NOTIFY_SOCKET=...).
	Env []string
	// NRITOML adds keys to the generated config's [nri] table, which
	// already puts the socket and plugin dirs in the daemon's dir.
	NRITOML string
}

// LoopbackCNI is a CNI network with the loopback plugin only.
const LoopbackCNI = `{"cniVersion": "1.0.0", "name": "berth-e2e-lo", "plugins": [{"type": "loopback"}]}`

// Daemon is a berthd process on a temporary root, state dir and socket.
type Daemon struct {
	Dir          string // short temp dir holding everything below
	Root         string
	State        string
	Socket       string
	ConfigPath   string
	LogPath      string // berthd's stderr, kept across restarts
	CgroupParent string // the config's cgroup_parent, unique per daemon
	CNIConfDir   string
	RuncRoot     string // --root of the runc handler
	// NRISocket, NRIPluginDir and NRIConfDir are the daemon's own NRI
	// socket and pre-registered plugin dirs; HooksDir its hooks_dir.
	NRISocket    string
	NRIPluginDir string
	NRIConfDir   string
	HooksDir     string

	// Runtime and Images are kubelet's own CRI clients.
	Runtime internalapi.RuntimeService
	Images  internalapi.ImageManagerService
	// RuntimeClient and ImageClient are raw gRPC clients, for streaming RPCs
	// and for checking status codes without any client-side wrapping.
	RuntimeClient runtimeapi.RuntimeServiceClient
	ImageClient   runtimeapi.ImageServiceClient

	opts   DaemonOptions
	conn   *grpc.ClientConn
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // berthd's exit; valid once exited is closed
}

// StartDaemon writes a config under a fresh short temp dir, starts berthd and
// waits until it answers Version. Cleanup stops it, force-removes whatever it
// left, dumps its log when t failed and removes the temp dir.
func StartDaemon(t testing.TB, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := NewDaemon(opts)
	if err != nil {
		t.Fatalf("prepare berthd: %v", err)
	}
	t.Cleanup(func() { d.cleanup(t) })
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(64<<10))
	}
	return d
}

// StartDaemonPrepared starts d, made by NewDaemon and changed by the
// test before its start, with StartDaemon's cleanup.
func StartDaemonPrepared(t testing.TB, d *Daemon) *Daemon {
	t.Helper()
	t.Cleanup(func() { d.cleanup(t) })
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(64<<10))
	}
	return d
}

// NewDaemon prepares the temp dir and config of a daemon without starting it.
func NewDaemon(opts DaemonOptions) (*Daemon, error) {
	if opts.RPCTimeout == 0 {
		opts.RPCTimeout = 30 * time.Second
	}
	if opts.CNIConfList == "" {
		opts.CNIConfList = LoopbackCNI
	}
	if opts.CNIBinDirs == nil {
		opts.CNIBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	dir, err := os.MkdirTemp("/tmp", "be")
	if err != nil {
		return nil, fmt.Errorf("make daemon dir: %w", err)
	}
	d := &Daemon{
		Dir:          dir,
		Root:         filepath.Join(dir, "root"),
		State:        filepath.Join(dir, "run"),
		Socket:       filepath.Join(dir, "berth.sock"),
		ConfigPath:   filepath.Join(dir, "config.toml"),
		LogPath:      filepath.Join(dir, "berthd.log"),
		CgroupParent: "/berth-e2e-" + randomHex(4),
		opts:         opts,
	}
	d.RuncRoot = filepath.Join(d.State, "runc")
	d.CNIConfDir = filepath.Join(dir, "cni")
	d.NRISocket = filepath.Join(dir, "nri.sock")
	d.NRIPluginDir = filepath.Join(dir, "nri", "plugins")
	d.NRIConfDir = filepath.Join(dir, "nri", "conf.d")
	d.HooksDir = filepath.Join(dir, "hooks.d")
	if err := os.Mkdir(d.CNIConfDir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("make cni conf dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.CNIConfDir, "10-e2e.conflist"), []byte(opts.CNIConfList), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("write cni config: %w", err)
	}
	if err := os.WriteFile(d.ConfigPath, []byte(d.configTOML()), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("write config: %w", err)
	}
	return d, nil
}

func quoteAll(ss []string) string {
	q := make([]string, 0, len(ss))
	for _, s := range ss {
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}

func (d *Daemon) configTOML() string {
	return fmt.Sprintf(`root = %q
state = %q
cgroup_parent = %q

[grpc]
address = %q

[log]
level = "debug"

[runtime]
shim_path = %q
pause_path = %q
hooks_dir = [%q]
%s

[nri]
socket_path = %q
plugin_path = %q
plugin_config_path = %q
%s

[registry]
insecure_hosts = [%s]

[cni]
conf_dir = %q
bin_dirs = [%s]
%s`, d.Root, d.State, d.CgroupParent, d.Socket, d.opts.Binaries.Shim, d.opts.Binaries.Pause, d.HooksDir, d.opts.RuntimeTOML,
		d.NRISocket, d.NRIPluginDir, d.NRIConfDir, d.opts.NRITOML,
		quoteAll(d.opts.InsecureHosts), d.CNIConfDir, quoteAll(d.opts.CNIBinDirs), d.opts.ExtraTOML)
}

// PodLogDir returns (and creates, as kubelet does) a log directory for a pod.
func (d *Daemon) PodLogDir(t testing.TB, pod string) string {
	t.Helper()
	p := filepath.Join(d.Dir, "logs", pod)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatalf("make pod log dir: %v", err)
	}
	return p
}

// Start runs berthd and connects the clients; berthd must not be running.
func (d *Daemon) Start() error {
	if d.Running() {
		return errors.New("berthd is already running")
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open berthd log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== testutil: starting berthd at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.opts.Binaries.Berthd, "--config", d.ConfigPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(d.opts.Env) > 0 {
		cmd.Env = append(os.Environ(), d.opts.Env...)
	}
	// berthd must not outlive a test binary that crashed; its shims do, by
	// design, and the leak check finds them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec berthd: %w", err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		d.err = cmd.Wait()
		close(exited)
	}(d.exited)
	if err := d.connect(); err != nil {
		d.kill()
		return err
	}
	return nil
}

// connect waits up to 30s for the socket to accept connections and answer
// Version, then builds the clients. The gRPC client is made only once the
// socket accepts, so its reconnect backoff never delays the test.
func (d *Daemon) connect() error {
	deadline := time.Now().Add(30 * time.Second)
	endpoint := "unix://" + d.Socket
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("berthd exited before serving: %v", d.err)
		default:
		}
		c, err := net.DialTimeout("unix", d.Socket, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("berthd did not listen on %s within 30s: %w", d.Socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("grpc client: %w", err)
	}
	rc := runtimeapi.NewRuntimeServiceClient(conn)
	vctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline)+time.Second)
	_, err = rc.Version(vctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("berthd does not answer Version on %s: %w", d.Socket, err)
	}
	ctx := context.Background()
	rs, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(d.opts.RPCTimeout).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("cri-client runtime service: %w", err)
	}
	is, err := remote.NewRemoteImageServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(d.opts.RPCTimeout).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		_ = conn.Close()
		_ = rs.Close(ctx)
		return fmt.Errorf("cri-client image service: %w", err)
	}
	d.conn, d.Runtime, d.Images = conn, rs, is
	d.RuntimeClient, d.ImageClient = rc, runtimeapi.NewImageServiceClient(conn)
	return nil
}

func (d *Daemon) disconnect() {
	ctx := context.Background()
	if d.Runtime != nil {
		_ = d.Runtime.Close(ctx)
	}
	if d.Images != nil {
		_ = d.Images.Close(ctx)
	}
	if d.conn != nil {
		_ = d.conn.Close()
	}
	d.Runtime, d.Images, d.conn, d.RuntimeClient, d.ImageClient = nil, nil, nil, nil, nil
}

// Running reports whether the berthd process is alive.
func (d *Daemon) Running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// ExitErr is how berthd exited (nil while it runs or after a clean exit).
func (d *Daemon) ExitErr() error {
	if d.cmd == nil || d.Running() {
		return nil
	}
	return d.err
}

// Pid is berthd's process id (0 when it never started).
func (d *Daemon) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill9 sends SIGKILL to berthd and waits for it to die.
func (d *Daemon) Kill9(t testing.TB) {
	t.Helper()
	if !d.Running() {
		t.Fatalf("Kill9: berthd is not running")
	}
	d.disconnect()
	d.kill()
}

func (d *Daemon) kill() {
	if !d.Running() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// Stop sends SIGTERM and waits up to 15s; it returns berthd's exit error
// (nil for a clean exit) or an error if it had to be killed.
func (d *Daemon) Stop() error {
	d.disconnect()
	if !d.Running() {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return d.err
	case <-time.After(15 * time.Second):
		d.kill()
		return errors.New("berthd ignored SIGTERM for 15s; killed")
	}
}

// Restart stops berthd if it still runs (SIGTERM), starts it again with the
// same config and reconnects the clients.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if d.Running() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop berthd for restart: %v", err)
		}
	}
	if err := d.Start(); err != nil {
		t.Fatalf("restart berthd: %v\n%s", err, d.LogTail(64<<10))
	}
}

// LogTail returns the last n bytes of berthd's log.
func (d *Daemon) LogTail(n int64) string {
	f, err := os.Open(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(no berthd log: %v)", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func (d *Daemon) cleanup(t testing.TB) {
	if err := d.Stop(); err != nil {
		t.Errorf("stop berthd: %v", err)
	}
	forceCleanup(t, d.scope(), true)
	if t.Failed() {
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("berthd-%s-%s.log", sanitize(t.Name()), filepath.Base(d.Dir)))
		if data, err := os.ReadFile(d.LogPath); err == nil && os.WriteFile(keep, data, 0o644) == nil {
			t.Logf("berthd log kept at %s; its tail:\n%s", keep, d.LogTail(32<<10))
		} else {
			t.Logf("berthd log tail:\n%s", d.LogTail(32<<10))
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("remove daemon dir: %v", err)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
