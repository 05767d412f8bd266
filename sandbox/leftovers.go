package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// withLeftovers fills in what a crash kept out of the caller's record of p.
// berthd records a pod before Create returns its paths, so a daemon killed
// inside Create leaves namespace pins, a shm mount and maybe an infra
// process that the record does not name. Their places follow from the ID and
// Dir, so Remove can still find them; parts that do not exist stay empty.
func (c *Controller) withLeftovers(p Pod) Pod {
	if p.ID == "" || p.ID == "." || p.ID == ".." || strings.ContainsAny(p.ID, "/\x00") {
		return p
	}
	fill := func(field *string, path string) {
		if *field != "" {
			return
		}
		if _, err := os.Lstat(path); err == nil {
			*field = path
		}
	}
	fill(&p.NetNS, filepath.Join(c.netNSDir, p.ID))
	fill(&p.IPCNS, filepath.Join(c.ipcNSDir, p.ID))
	fill(&p.UTSNS, filepath.Join(c.utsNSDir, p.ID))
	if p.Dir != "" {
		fill(&p.ShmPath, filepath.Join(p.Dir, "shm"))
	}
	return p
}

// killUnrecordedInfra kills berth-pause processes that live in p's pinned
// namespaces although p names no infra process: one started by a Create
// whose result a crash kept from being recorded. berth-pause is in its own
// session and outlives berthd, so nothing else would ever stop it.
func (c *Controller) killUnrecordedInfra(p Pod) error {
	if p.InfraPID != 0 || p.NoInfra {
		return nil
	}
	pins := map[[2]uint64]bool{}
	for _, pin := range []string{p.NetNS, p.IPCNS, p.UTSNS} {
		var st unix.Stat_t
		if pin != "" && unix.Stat(pin, &st) == nil {
			pins[[2]uint64{st.Dev, st.Ino}] = true
		}
	}
	if len(pins) == 0 && p.Dir == "" {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	name := filepath.Base(c.pausePath)
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != truncComm(name) {
			continue
		}
		if !c.infraOf(e.Name(), p, pins) {
			continue
		}
		c.log.Warn("killing infra process a crash left unrecorded", "sandbox_id", p.ID, "pid", pid)
		if err := killAndWait(pid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// infraOf reports whether berth-pause process pid belongs to p: it runs in
// p's dir (startInfra sets it) or in one of p's pinned namespaces.
func (c *Controller) infraOf(pid string, p Pod, pins map[[2]uint64]bool) bool {
	if cwd, err := os.Readlink("/proc/" + pid + "/cwd"); err == nil && p.Dir != "" && cwd == filepath.Clean(p.Dir) {
		return true
	}
	for _, ns := range []string{"net", "ipc", "uts"} {
		var st unix.Stat_t
		if unix.Stat("/proc/"+pid+"/ns/"+ns, &st) == nil && pins[[2]uint64{st.Dev, st.Ino}] {
			return true
		}
	}
	return false
}

// truncComm is how the kernel shortens a program name in comm.
func truncComm(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}

func killAndWait(pid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pid %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		// Readable once the process exited; the kernel reaps it for its
		// parent (init after a berthd crash, or our own reaper).
		n, err := unix.Poll(fds, 5000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for pid %d: %w", pid, err)
		}
		if n == 0 {
			return fmt.Errorf("pid %d did not exit 5s after SIGKILL", pid)
		}
		return nil
	}
}
