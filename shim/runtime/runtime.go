// Package runtime drives an OCI runtime through the runc command line
// (runc, crun or any binary with the same CLI). It owns argument building
// and the translation of the runtime's error text into errdefs errors; it
// never waits for processes itself, because the shim is a subreaper whose
// single reaper collects every child (see Monitor).
package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Monitor starts commands and reports their exit status. The shim's reaper
// implements it: a command's exit is collected by the reaper's wait4(-1)
// loop, so exec.Cmd.Wait must never be the one to reap it.
type Monitor interface {
	// Start starts cmd and returns a channel that receives its exit status
	// exactly once.
	Start(cmd *exec.Cmd) (<-chan int, error)
}

// Runtime is one OCI runtime binary with its state root.
type Runtime struct {
	// Binary is the runtime executable, a path or a name looked up in PATH.
	Binary string
	// Root is the runtime's state directory (--root); empty uses its default.
	Root string
	// LogPath receives the runtime's own JSON log for create (--log), the
	// only way to get its error text while its stderr is the container's.
	LogPath string
	Monitor Monitor
	Logger  *slog.Logger
	// CriuPath is the CRIU binary for checkpoint and restore. runc finds
	// CRIU only through PATH, so its directory goes first there.
	CriuPath string
	// SystemdCgroup passes --systemd-cgroup: the container's cgroupsPath is
	// a systemd "slice:prefix:name" (see SystemdCgroupsPath).
	SystemdCgroup bool
}

// CreateOpts are the arguments of Create.
type CreateOpts struct {
	Bundle  string
	PidFile string
	// ConsoleSocket, when set, makes the runtime send the PTY master there.
	ConsoleSocket string
	// Stdio the container inherits from the runtime (create is always
	// detached). Nil means /dev/null.
	Stdin, Stdout, Stderr *os.File
}

func (r *Runtime) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

func (r *Runtime) command(args ...string) *exec.Cmd {
	var global []string
	if r.Root != "" {
		global = append(global, "--root", r.Root)
	}
	if r.SystemdCgroup {
		global = append(global, "--systemd-cgroup")
	}
	cmd := exec.Command(r.Binary, append(global, args...)...)
	if r.CriuPath != "" {
		cmd.Env = withPathFirst(os.Environ(), filepath.Dir(r.CriuPath))
	}
	return cmd
}

// withPathFirst returns env with dir at the front of PATH.
func withPathFirst(env []string, dir string) []string {
	out := make([]string, 0, len(env)+1)
	path := "PATH=" + dir
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			if v != "" {
				path += ":" + v
			}
			continue
		}
		out = append(out, e)
	}
	return append(out, path)
}

// run starts cmd through the monitor and waits for it; stderr text becomes
// the error.
func (r *Runtime) run(ctx context.Context, cmd *exec.Cmd, stderr *bytes.Buffer) error {
	ch, err := r.Monitor.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", r.Binary, err)
	}
	var status int
	select {
	case status = <-ch:
	case <-ctx.Done():
		if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
			// A group of its own (checkpoint, restore): the runtime and the
			// CRIU it forked die together, so a hung CRIU holds no traced
			// task and no frozen cgroup past the caller's bound.
			_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
			select {
			case <-ch:
				_ = cmd.Wait()
			case <-time.After(groupKillWait):
				go func() { <-ch; _ = cmd.Wait() }()
			}
			return fmt.Errorf("%s %s: killed with its process group: %w", r.Binary, cmd.Args[len(cmd.Args)-1], ctx.Err())
		}
		// The runtime keeps running; its exit is still reaped. Waiting here
		// beyond the caller's deadline would only hold the request.
		go func() { <-ch; _ = cmd.Wait() }()
		return fmt.Errorf("%s %s: %w", r.Binary, cmd.Args[len(cmd.Args)-1], ctx.Err())
	}
	// The reaper already collected the process; Wait only flushes the
	// stderr copy and returns ECHILD, which is expected.
	_ = cmd.Wait()
	if status != 0 {
		msg := ""
		if stderr != nil {
			msg = strings.TrimSpace(stderr.String())
		}
		return runtimeError(r.Binary, cmd.Args, status, msg)
	}
	return nil
}

// Create runs `RUNTIME create`.
func (r *Runtime) Create(ctx context.Context, id string, o CreateOpts) error {
	args := []string{}
	if r.LogPath != "" {
		// Truncate so the last error read back is this create's.
		if err := os.WriteFile(r.LogPath, nil, 0o600); err != nil {
			return fmt.Errorf("reset runtime log: %w", err)
		}
		args = append(args, "--log", r.LogPath, "--log-format", "json")
	}
	args = append(args, "create", "--bundle", o.Bundle)
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	args = append(args, id)
	cmd := r.command(args...)
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	var stderr *bytes.Buffer
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	} else {
		stderr = &bytes.Buffer{}
		cmd.Stderr = stderr
	}
	err := r.run(ctx, cmd, stderr)
	if err != nil && stderr == nil && r.LogPath != "" {
		if msg := lastLogError(r.LogPath); msg != "" {
			var status int
			var re *Error
			if errors.As(err, &re) {
				status = re.Status
			}
			err = runtimeError(r.Binary, cmd.Args, status, msg)
		}
	}
	if err != nil {
		return fmt.Errorf("create container %q: %w", id, err)
	}
	return nil
}

// Start runs `RUNTIME start`.
func (r *Runtime) Start(ctx context.Context, id string) error {
	if err := r.simple(ctx, "start", id); err != nil {
		return fmt.Errorf("start container %q: %w", id, err)
	}
	return nil
}

// Kill runs `RUNTIME kill [--all] ID SIGNAL`.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	args = append(args, id, strconv.Itoa(int(sig)))
	if err := r.simple(ctx, args...); err != nil {
		return fmt.Errorf("kill container %q with signal %d: %w", id, sig, err)
	}
	return nil
}

// Delete runs `RUNTIME delete [--force] ID`. A container the runtime does not
// know is already deleted, so that is success.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	args = append(args, id)
	err := r.simple(ctx, args...)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %q: %w", id, err)
	}
	return nil
}

// State is the part of `RUNTIME state` output the shim uses.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

// State runs `RUNTIME state ID`.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	cmd := r.command("state", id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := r.run(ctx, cmd, &stderr); err != nil {
		return State{}, fmt.Errorf("state of container %q: %w", id, err)
	}
	var st State
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		return State{}, fmt.Errorf("parse state of container %q: %w", id, err)
	}
	return st, nil
}

func (r *Runtime) simple(ctx context.Context, args ...string) error {
	cmd := r.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := r.run(ctx, cmd, &stderr)
	if err != nil {
		r.logger().Debug("runtime command failed", "args", args, "error", err)
	}
	return err
}

// Error is a runtime command that exited non-zero. It unwraps to an errdefs
// class derived from the runtime's message.
type Error struct {
	Args    []string
	Status  int
	Message string
	class   error
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no error output"
	}
	return fmt.Sprintf("%s exited with status %d: %s", strings.Join(e.Args, " "), e.Status, msg)
}

func (e *Error) Unwrap() error { return e.class }

// runtimeError classifies the runtime's message. The runc CLI reports
// conditions only as text, so this is the one place that reads it; crun
// uses the same phrases.
func runtimeError(binary string, args []string, status int, msg string) error {
	var class error = errdefs.ErrUnknown
	switch {
	case strings.Contains(msg, "does not exist"):
		class = errdefs.ErrNotFound
	case strings.Contains(msg, "not running"), strings.Contains(msg, "process already finished"):
		// Killing a process that already exited.
		class = errdefs.ErrNotFound
	case strings.Contains(msg, "already exists"):
		class = errdefs.ErrAlreadyExists
	case strings.Contains(msg, "cannot start"), strings.Contains(msg, "cannot delete"):
		class = errdefs.ErrFailedPrecondition
	}
	a := append([]string{binary}, args[1:]...)
	return &Error{Args: a, Status: status, Message: msg, class: class}
}

// lastLogError returns the message of the last error-level entry of a
// runtime JSON log, or "" if there is none.
func lastLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return last
}

// ExecMonitor runs commands with plain exec.Cmd.Wait, for callers that are
// not subreapers with a reaper loop (the shim's delete command).
type ExecMonitor struct{}

// Start starts cmd and waits for it in the background.
func (ExecMonitor) Start(cmd *exec.Cmd) (<-chan int, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		status := 0
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			status = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		case err != nil:
			status = -1
		}
		ch <- status
	}()
	return ch, nil
}

// Update runs `RUNTIME update --resources - ID` with resources (the JSON of
// an OCI LinuxResources) on its stdin.
func (r *Runtime) Update(ctx context.Context, id string, resources []byte) error {
	cmd := r.command("update", "--resources", "-", id)
	cmd.Stdin = bytes.NewReader(resources)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := r.run(ctx, cmd, &stderr); err != nil {
		return fmt.Errorf("update container %q: %w", id, err)
	}
	return nil
}

// ExecOpts are the arguments of Exec.
type ExecOpts struct {
	// ProcessFile is the JSON of the OCI process to run.
	ProcessFile string
	PidFile     string
	// LogPath receives the runtime's JSON log for this exec: its stderr is
	// the process's, so errors are read back from there.
	LogPath string
	// ConsoleSocket, when set, makes the runtime send the PTY master there.
	ConsoleSocket string
	// Stdio the process inherits; nil means /dev/null.
	Stdin, Stdout, Stderr *os.File
}

// Exec runs `RUNTIME exec --detach --process FILE ID`: it returns once the
// process runs, leaving it a child of the subreaper.
func (r *Runtime) Exec(ctx context.Context, id string, o ExecOpts) error {
	var args []string
	if o.LogPath != "" {
		args = append(args, "--log", o.LogPath, "--log-format", "json")
	}
	args = append(args, "exec", "--detach", "--process", o.ProcessFile, "--pid-file", o.PidFile)
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	args = append(args, id)
	cmd := r.command(args...)
	// Never a buffer: the process inherits the runtime's stdio, and a pipe
	// it holds would keep the copy (and so run) waiting for its exit. The
	// runtime's errors come from its log instead.
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("exec in container %q: %w", id, err)
	}
	defer devNull.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	}
	err = r.run(ctx, cmd, nil)
	if err != nil && o.LogPath != "" {
		if msg := lastLogError(o.LogPath); msg != "" {
			var status int
			var re *Error
			if errors.As(err, &re) {
				status = re.Status
			}
			err = runtimeError(r.Binary, cmd.Args, status, msg)
		}
	}
	if err != nil {
		return fmt.Errorf("exec in container %q: %w", id, err)
	}
	return nil
}
