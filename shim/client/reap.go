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
	go func() {
		defer close(exited)
		if !reapPolled(cmd.Process.Pid) {
			_ = cmd.Wait() // blocks a thread until the exit
			return
		}
		// Closes the pidfd os.Process keeps; the process is gone.
		_ = cmd.Process.Release()
	}()
	return exited
}

// reapPolled waits in the netpoller for pid to exit and reaps it. It
// returns false, having reaped nothing, where that cannot be done: no
// pollable pidfd, or a waitid failure other than "not a child".
func reapPolled(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	// os.NewFile registers a non-blocking descriptor with the netpoller.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var done bool
	var waitErr error
	err = rc.Read(func(fd uintptr) bool {
		done, waitErr = reapPidfd(int(fd))
		// An unexpected failure ends the polling: the pidfd may stay
		// readable, and polling again would spin.
		return done || waitErr != nil
	})
	return err == nil && done
}

// reapPidfd reaps the process behind pidfd if it exited. done says there
// is nothing left to wait for: reaped now, or not a child to wait for
// (reaped already). With WNOHANG and nothing to report, the kernel leaves
// si_signo 0; a non-blocking pidfd of a running process gives EAGAIN.
func reapPidfd(pidfd int) (done bool, err error) {
	var info unix.Siginfo
	err = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
	switch {
	case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
		return false, nil
	case errors.Is(err, unix.ECHILD):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("waitid pidfd %d: %w", pidfd, err)
	}
	return info.Signo != 0, nil
}
