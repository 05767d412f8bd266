package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/sandbox/netns"
	"github.com/berth-runtime/berth/shim/api"
)

// startInfra starts berth-pause as PID 1 of a new PID namespace. It forks
// from a locked OS thread that has joined the pod's net, IPC and UTS pins,
// so the whole infra process (every thread) starts inside them without any
// namespace code in berth-pause; the thread is discarded afterwards.
func (c *Controller) startInfra(p Pod, uids, gids []syscall.SysProcIDMap) (int, uint64, error) {
	if _, err := os.Stat(c.pausePath); err != nil {
		return 0, 0, fmt.Errorf("pause binary %q: %w", c.pausePath, errdefs.ErrFailedPrecondition)
	}
	cmd := exec.Command(c.pausePath)
	// The pod dir as working directory names the pod's infra process even
	// when a crash kept its pid from being recorded (killUnrecordedInfra).
	cmd.Dir = p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID,
		Setsid:     true,
	}
	if len(uids) > 0 {
		// A user namespace made in the same clone owns the PID namespace.
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings, cmd.SysProcAttr.GidMappings = uids, gids
	}
	err := netns.OnDisposableThread(func() error {
		if err := joinNamespaces(p); err != nil {
			return err
		}
		return cmd.Start()
	})
	if err != nil {
		return 0, 0, err
	}
	pid := cmd.Process.Pid
	// The child is not reaped until the reaper below runs, so its pid cannot
	// be reused before its start time is read.
	st, err := api.ReadProcStat(pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, 0, fmt.Errorf("read infra start time: %w", err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.reaped[pid] = done
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		delete(c.reaped, pid)
		c.mu.Unlock()
		close(done)
		c.log.Info("infra process exited", "sandbox_id", p.ID, "pid", pid, "status", err)
	}()
	return pid, st.StartTime, nil
}

func joinNamespaces(p Pod) error {
	for _, ns := range []struct {
		path string
		kind int
	}{{p.NetNS, unix.CLONE_NEWNET}, {p.IPCNS, unix.CLONE_NEWIPC}, {p.UTSNS, unix.CLONE_NEWUTS}} {
		if ns.path == "" {
			continue
		}
		fd, err := unix.Open(ns.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open namespace %q: %w", ns.path, err)
		}
		err = unix.Setns(fd, ns.kind)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("join namespace %q: %w", ns.path, err)
		}
	}
	return nil
}

// Stop kills the infra process with SIGKILL after checking, through a
// pidfd, that the pid still names the process Create started (same start
// time), and waits for it to exit. CRI requires StopPodSandbox to be
// idempotent: no infra, or one already gone, is success.
func (c *Controller) Stop(ctx context.Context, p Pod) error {
	if p.InfraPID <= 0 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(p.InfraPID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open infra pid %d of sandbox %q: %w", p.InfraPID, p.ID, err)
	}
	defer unix.Close(pidfd)
	// Checked after the pidfd is open: from here on the pidfd names this
	// very process even if the pid were reused.
	st, err := api.ReadProcStat(p.InfraPID)
	if err != nil || st.StartTime != p.InfraStartTime {
		return nil
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill infra of sandbox %q: %w", p.ID, err)
	}
	if err := waitPidfd(ctx, pidfd); err != nil {
		return fmt.Errorf("wait for infra of sandbox %q: %w", p.ID, err)
	}
	c.mu.Lock()
	done := c.reaped[p.InfraPID]
	c.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("reap infra of sandbox %q: %w", p.ID, ctx.Err())
		}
	}
	c.log.Info("infra process stopped", "sandbox_id", p.ID, "pid", p.InfraPID)
	return nil
}

// waitPidfd returns once the process behind pidfd has exited.
func waitPidfd(ctx context.Context, pidfd int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// InfraAlive reports whether the infra process recorded in p still runs:
// same pid and same start time, and not a zombie.
func (c *Controller) InfraAlive(p Pod) bool {
	if p.InfraPID <= 0 {
		return false
	}
	st, err := api.ReadProcStat(p.InfraPID)
	if err != nil {
		return false
	}
	return st.StartTime == p.InfraStartTime && !st.Gone()
}

// PidNSPath is the PID namespace containers of a pod with a shared PID
// namespace join, or "" when the pod has no infra process.
func (c *Controller) PidNSPath(p Pod) string {
	if p.InfraPID <= 0 {
		return ""
	}
	return "/proc/" + strconv.Itoa(p.InfraPID) + "/ns/pid"
}
