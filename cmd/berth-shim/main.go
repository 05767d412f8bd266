// Command berth-shim is the per-container shim: it owns one container's
// stdio, log and exit status and serves berth.shim.v1.Shim over ttrpc.
//
//	berth-shim start  --id ID --socket SOCK --state-dir DIR
//	berth-shim serve  --id ID --socket SOCK --state-dir DIR   (internal)
//	berth-shim delete --id ID --socket SOCK --state-dir DIR --runtime BIN --runtime-root ROOT
//
// start re-executes the binary as serve, detached in its own session, and
// exits once serve listens, so the serving shim is reparented to init and
// outlives berthd. delete cleans up after a shim that died.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/process"
	"github.com/berth-runtime/berth/shim/runtime"
	"github.com/berth-runtime/berth/shim/task"
)

// readyFd is the inherited pipe serve reports readiness on (ExtraFiles[0]).
const readyFd = 3

// readyMsg is what serve writes on readyFd once it listens; anything else
// is an error message.
const readyMsg = "ok"

type flags struct {
	id, socket, stateDir, runtime, runtimeRoot string
}

func parseFlags(name string, args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.id, "id", "", "container id")
	fs.StringVar(&f.socket, "socket", "", "ttrpc socket path")
	fs.StringVar(&f.stateDir, "state-dir", "", "shim state directory")
	fs.StringVar(&f.runtime, "runtime", "runc", "OCI runtime binary (delete)")
	fs.StringVar(&f.runtimeRoot, "runtime-root", "", "OCI runtime root (delete)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.id == "" || f.socket == "" || f.stateDir == "" {
		return f, errors.New("--id, --socket and --state-dir are required")
	}
	return f, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: berth-shim start|serve|delete --id ID --socket SOCK --state-dir DIR")
		os.Exit(2)
	}
	cmd := os.Args[1]
	f, err := parseFlags(cmd, os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-shim:", err)
		os.Exit(2)
	}
	switch cmd {
	case "start":
		err = start(f, os.Args[2:])
	case "serve":
		err = serve(f)
	case "delete":
		err = deleteDead(f)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-shim "+cmd+":", err)
		os.Exit(1)
	}
}

// start spawns `serve` detached and waits for it to listen.
func start(f flags, args []string) error {
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create readiness pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{"serve"}, args...)...)
	cmd.Dir = f.stateDir
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		return fmt.Errorf("spawn shim: %w", err)
	}
	_ = r.SetReadDeadline(time.Now().Add(30 * time.Second))
	msg, readErr := io.ReadAll(io.LimitReader(r, 64*1024))
	if strings.TrimSpace(string(msg)) == readyMsg {
		// serve keeps running; releasing it leaves it to init.
		_ = cmd.Process.Release()
		return nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(msg) == 0 && readErr != nil {
		return fmt.Errorf("shim did not become ready: %w", readErr)
	}
	return fmt.Errorf("shim failed: %s", strings.TrimSpace(string(msg)))
}

// serve is the long-lived shim. Errors before readiness go to the pipe.
func serve(f flags) error {
	// The readiness pipe must not leak into the runtime processes.
	unix.CloseOnExec(readyFd)
	ready := os.NewFile(readyFd, "ready")
	fail := func(err error) error {
		if ready != nil {
			_, _ = fmt.Fprint(ready, err.Error())
			_ = ready.Close()
		}
		return err
	}
	logFile, err := os.OpenFile(f.stateDir+"/shim.log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fail(fmt.Errorf("open shim log: %w", err))
	}
	defer logFile.Close()
	log := slog.New(slog.NewJSONHandler(logFile, nil)).With("container_id", f.id)

	logSignals(log)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("become child subreaper: %w", err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaper := process.NewReaper(log)
	go reaper.Run(ctx)

	if err := api.WriteShimPid(f.stateDir, os.Getpid()); err != nil {
		return fail(err)
	}
	l, err := listen(f.socket)
	if err != nil {
		return fail(err)
	}
	tracker := newConnTracker(ttrpc.UnixSocketRequireSameUser())
	defer os.Remove(f.socket)

	srv, err := ttrpc.NewServer(
		ttrpc.WithServerHandshaker(tracker),
		ttrpc.WithUnaryServerInterceptor(task.ErrorInterceptor),
	)
	if err != nil {
		_ = l.Close()
		return fail(fmt.Errorf("create ttrpc server: %w", err))
	}
	stop := make(chan struct{})
	svc := task.New(task.Options{
		ID: f.id, StateDir: f.stateDir, Reaper: reaper, Logger: log,
		OnShutdown: func() { close(stop) },
	})
	api.RegisterShimService(srv, svc)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	if _, err := fmt.Fprint(ready, readyMsg); err != nil {
		log.Warn("report readiness", "error", err)
	}
	_ = ready.Close()
	ready = nil
	log.Info("shim serving", "socket", f.socket, "pid", os.Getpid())

	select {
	case <-stop:
		// berthd closes its connection once the Shutdown reply arrived;
		// leaving then, not on ttrpc's 200 ms idle poll, is what lets
		// RemoveContainer find the shim gone instead of cleaning up after
		// it. A client that never closes is waited for only so long.
		select {
		case <-tracker.idle():
		case <-time.After(2 * time.Second):
			log.Warn("exiting with a client still connected")
		}
	case err := <-served:
		log.Error("ttrpc server stopped", "error", err)
	}
	_ = srv.Close()
	log.Info("shim exiting")
	return nil
}

// connTracker counts the connections the server accepted that are still
// open, so the shim can exit the moment its last client hung up. It is the
// server's handshaker (wrapping the credentials check) because ttrpc's
// credentials check needs the raw *net.UnixConn a listener wrapper hides.
type connTracker struct {
	inner ttrpc.Handshaker
	mu    sync.Mutex
	open  int
	empty chan struct{} // closed while open == 0; guarded by mu
}

func newConnTracker(inner ttrpc.Handshaker) *connTracker {
	t := &connTracker{inner: inner, empty: make(chan struct{})}
	close(t.empty)
	return t
}

func (t *connTracker) Handshake(ctx context.Context, conn net.Conn) (net.Conn, any, error) {
	c, info, err := t.inner.Handshake(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	t.mu.Lock()
	if t.open == 0 {
		t.empty = make(chan struct{})
	}
	t.open++
	t.mu.Unlock()
	return &trackedConn{Conn: c, t: t}, info, nil
}

// idle returns a channel closed while no accepted connection is open.
func (t *connTracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.empty
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		c.t.open--
		if c.t.open == 0 {
			close(c.t.empty)
		}
		c.t.mu.Unlock()
	})
	return err
}

// logSignals catches (not ignores: ignored dispositions survive exec into
// the runtime and the container) the signals that would end the shim with
// its starter's session; they are only logged.
func logSignals(log *slog.Logger) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	go func() {
		for s := range sigs {
			log.Info("ignoring signal", "signal", s.String())
		}
	}()
}

// listen creates the socket with mode 0600, replacing a stale one.
func listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	return l, nil
}

// deleteDead cleans up after a shim that died: kill it if it somehow still
// lives, force-delete the container, remove the socket and record an exit
// if the shim never wrote one.
func deleteDead(f flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	killShim(f.stateDir)
	rt := &runtime.Runtime{Binary: f.runtime, Root: f.runtimeRoot, Monitor: runtime.ExecMonitor{}}
	if err := rt.Delete(ctx, f.id, true); err != nil {
		return err
	}
	if err := os.Remove(f.socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove socket: %w", err)
	}
	if _, err := os.Stat(f.stateDir); errors.Is(err, fs.ErrNotExist) {
		return nil // berthd already removed it: nothing to record into
	}
	if _, err := api.ReadExitFile(f.stateDir); err == nil || !errdefs.IsNotFound(err) {
		return nil
	}
	return api.WriteExitFile(f.stateDir, api.ExitFile{
		ExitStatus: 128 + int32(syscall.SIGKILL),
		ExitedAt:   time.Now().UnixNano(),
		Reason:     "shim died; exit status unknown",
	})
}

// killShim SIGKILLs the recorded shim if it is still the same process.
func killShim(stateDir string) {
	pid, start, err := api.ReadShimPid(stateDir)
	if err != nil {
		return
	}
	if now, err := api.ProcessStartTime(pid); err != nil || now != start {
		return
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}
