package client

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// reapWhenExited reaps cmd's process once it exits and closes the channel
// it returns then. os.Process.Wait would hold an OS thread in waitid for
// the child's whole life: berthd is the parent of every shim it spawned,
// so that was one thread per container (427 threads at 250 pods in the
// full-node bench, their stacks and kernel tasks memory berthd need not
// hold). A pidfd is pollable and becomes readable when its process exits,
// so the goroutine parks in the runtime's netpoller instead, and reaps
// only then. Where the pidfd cannot be polled, Wait is used.
func reapWhenExited(cmd *exec.Cmd) <-chan struct{} {
	exited := make(chan struct{})
	f, err := pollablePidfd(cmd.Process.Pid)
	if err != nil {
		go func() { _ = cmd.Wait(); close(exited) }()
		return exited
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		go func() { _ = cmd.Wait(); close(exited) }()
		return exited
	}
	go func() {
		defer close(exited)
		var reaped bool
		err := rc.Read(func(fd uintptr) bool {
			reaped = reapPidfd(int(fd))
			return reaped
		})
		_ = f.Close()
		if err != nil && !reaped {
			// Not pollable after all: block a thread, as Wait would.
			_ = cmd.Wait()
			return
		}
		// Closes the pidfd os.Process keeps; the process is gone.
		_ = cmd.Process.Release()
	}()
	return exited
}

// pollablePidfd opens a non-blocking pidfd for pid that the netpoller
// watches (os.NewFile registers a non-blocking descriptor with it).
func pollablePidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), nil
}

// reapPidfd reaps the process behind pidfd if it exited and says whether
// there is nothing left to wait for: reaped now, or not a child to wait
// for (reaped already). With WNOHANG and nothing to report, the kernel
// leaves si_signo 0.
func reapPidfd(pidfd int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
	switch {
	case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
		return false
	case err != nil:
		return true
	}
	return info.Signo != 0
}
