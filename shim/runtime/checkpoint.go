package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
)

// CheckpointOpts are the arguments of Checkpoint.
type CheckpointOpts struct {
	// ImagePath receives the CRIU images; WorkPath CRIU's dump.log.
	ImagePath string
	WorkPath  string
	// LeaveRunning keeps the container running after the dump.
	LeaveRunning bool
	// TCPEstablished dumps established TCP connections; without it CRIU
	// refuses to dump a process that has one.
	TCPEstablished bool
	FileLocks      bool
	ExtUnixSk      bool
}

// Checkpoint runs `RUNTIME checkpoint`. A failure carries the errors CRIU
// logged, which say far more than the runtime's own message.
func (r *Runtime) Checkpoint(ctx context.Context, id string, o CheckpointOpts) error {
	if o.ImagePath == "" || o.WorkPath == "" {
		return fmt.Errorf("checkpoint container %q: image and work paths required: %w", id, errdefs.ErrInvalidArgument)
	}
	args := []string{"checkpoint", "--image-path", o.ImagePath, "--work-path", o.WorkPath}
	args = appendFlags(args, map[string]bool{
		"--leave-running":   o.LeaveRunning,
		"--tcp-established": o.TCPEstablished,
		"--file-locks":      o.FileLocks,
		"--ext-unix-sk":     o.ExtUnixSk,
	})
	args = append(args, id)
	cmd := r.command(args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := r.run(ctx, cmd, &stderr); err != nil {
		return fmt.Errorf("checkpoint container %q: %w", id, criuError(err, filepath.Join(o.WorkPath, "dump.log")))
	}
	return nil
}

// RestoreOpts are the arguments of Restore.
type RestoreOpts struct {
	Bundle    string
	PidFile   string
	ImagePath string
	// WorkPath receives CRIU's restore.log.
	WorkPath       string
	TCPEstablished bool
	FileLocks      bool
	ExtUnixSk      bool
	// Stdio the restored process gets in place of the pipes it had when it
	// was dumped (the runtime hands them to CRIU as inherited fds).
	Stdin, Stdout, Stderr *os.File
}

// Restore runs `RUNTIME restore --detach`: it returns once the restored
// process runs, a child of the subreaper.
func (r *Runtime) Restore(ctx context.Context, id string, o RestoreOpts) error {
	if o.ImagePath == "" || o.WorkPath == "" || o.Bundle == "" {
		return fmt.Errorf("restore container %q: bundle, image and work paths required: %w", id, errdefs.ErrInvalidArgument)
	}
	args := []string{"restore", "--detach", "--bundle", o.Bundle, "--image-path", o.ImagePath, "--work-path", o.WorkPath}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	args = appendFlags(args, map[string]bool{
		"--tcp-established": o.TCPEstablished,
		"--file-locks":      o.FileLocks,
		"--ext-unix-sk":     o.ExtUnixSk,
	})
	args = append(args, id)
	cmd := r.command(args...)
	// Restored processes get their own session from the images; only runc
	// and CRIU share this group, which a deadline kills.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("restore container %q: %w", id, err)
	}
	defer devNull.Close()
	// Never a buffer for stderr when it is the container's: a pipe the
	// restored process holds would keep the copy waiting for its exit.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	var stderr *bytes.Buffer
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	} else {
		stderr = &bytes.Buffer{}
		cmd.Stderr = stderr
	}
	if err := r.run(ctx, cmd, stderr); err != nil {
		return fmt.Errorf("restore container %q: %w", id, criuError(err, filepath.Join(o.WorkPath, "restore.log")))
	}
	return nil
}

// Pause runs `RUNTIME pause`.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	if err := r.simple(ctx, "pause", id); err != nil {
		return fmt.Errorf("pause container %q: %w", id, err)
	}
	return nil
}

// Resume runs `RUNTIME resume`.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	if err := r.simple(ctx, "resume", id); err != nil {
		return fmt.Errorf("resume container %q: %w", id, err)
	}
	return nil
}

func appendFlags(args []string, flags map[string]bool) []string {
	// Fixed order keeps the command line reproducible in logs and tests.
	for _, f := range []string{"--leave-running", "--tcp-established", "--file-locks", "--ext-unix-sk"} {
		if flags[f] {
			args = append(args, f)
		}
	}
	return args
}

// CRIUError is a checkpoint or restore that CRIU refused or failed. Lines
// holds CRIU's own error lines from its log; it unwraps to the runtime's
// error and to a failed precondition, since what CRIU refuses is a property
// of the container (a connection, a device, a kernel feature), not of the
// request.
type CRIUError struct {
	Err   error
	Lines []string
}

func (e *CRIUError) Error() string {
	if len(e.Lines) == 0 {
		return e.Err.Error()
	}
	return e.Err.Error() + "; criu: " + strings.Join(e.Lines, "; ")
}

// Unwrap exposes both the runtime error and the errdefs class.
func (e *CRIUError) Unwrap() []error { return []error{e.Err, errdefs.ErrFailedPrecondition} }

// criuError attaches CRIU's logged errors (at most the last five) to err.
func criuError(err error, logPath string) error {
	lines := criuLogErrors(logPath, 5)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Not the container's fault: the caller's bound ran out.
		if len(lines) == 0 {
			return err
		}
		return fmt.Errorf("%w; criu: %s", err, strings.Join(lines, "; "))
	}
	if len(lines) == 0 && errdefs.IsNotFound(err) {
		return err
	}
	return &CRIUError{Err: err, Lines: lines}
}

// criuLogErrors returns the last max "Error" lines of a CRIU log.
func criuLogErrors(path string, max int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "Error (")
		if i < 0 {
			continue
		}
		out = append(out, strings.TrimSpace(line[i:]))
		if len(out) > max {
			out = out[1:]
		}
	}
	return out
}
