package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/api"
)

// scope is what one daemon may leave behind.
type scope struct {
	dir          string
	state        string
	cgroupParent string
	runcRoot     string
}

func (d *Daemon) scope() scope {
	return scope{dir: d.Dir, state: d.State, cgroupParent: d.CgroupParent, runcRoot: d.RuncRoot}
}

// AssertNoLeaks fails t for every mount under the daemon's dir, namespace pin,
// berth-shim/berth-pause/container process, runc container and cgroup below
// the daemon's cgroup parent that is still there; then it force-removes them
// so one failing test does not poison the next. Call it after the test
// removed all its pods.
func AssertNoLeaks(t testing.TB, d *Daemon) {
	t.Helper()
	s := d.scope()
	// Exits and teardown are asynchronous in places (a shim reaps, then
	// exits): give stragglers a moment before calling them leaks.
	var leaks []string
	for deadline := time.Now().Add(3 * time.Second); ; {
		leaks = findLeaks(s)
		if len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range leaks {
		t.Errorf("leak: %s", l)
	}
	if len(leaks) > 0 {
		forceCleanup(t, s, false)
	}
}

// Leaks returns a description of everything the daemon left behind.
func Leaks(d *Daemon) []string { return findLeaks(d.scope()) }

func findLeaks(s scope) []string {
	var leaks []string
	mounts, err := mountsUnder(s.dir)
	if err != nil {
		leaks = append(leaks, fmt.Sprintf("cannot read mounts: %v", err))
	}
	for _, m := range mounts {
		leaks = append(leaks, fmt.Sprintf("mount %s (%s from %s)", m.Mountpoint, m.FSType, m.Source))
	}
	for _, dir := range pinDirs(s) {
		pins, _ := os.ReadDir(dir)
		for _, p := range pins {
			leaks = append(leaks, "namespace pin "+filepath.Join(dir, p.Name()))
		}
	}
	for _, p := range processes(s) {
		leaks = append(leaks, fmt.Sprintf("process %d %s (%s)", p.pid, p.comm, p.why))
	}
	ids, err := runcList(s.runcRoot)
	if err != nil {
		leaks = append(leaks, err.Error())
	}
	for _, id := range ids {
		leaks = append(leaks, "runc container "+id)
	}
	for _, c := range cgroupsBelow(s.cgroupParent) {
		leaks = append(leaks, "cgroup "+c)
	}
	return leaks
}

// ForceCleanup removes everything the daemon left behind, without asserting.
func ForceCleanup(t testing.TB, d *Daemon) { forceCleanup(t, d.scope(), false) }

// forceCleanup deletes runc containers, kills leftover processes, unmounts,
// removes netns pins and cgroups (the parent too when withParent).
func forceCleanup(t testing.TB, s scope, withParent bool) {
	ids, _ := runcList(s.runcRoot)
	for _, id := range ids {
		out, err := exec.Command("runc", "--root", s.runcRoot, "delete", "-f", id).CombinedOutput()
		if err != nil {
			t.Logf("cleanup: runc delete -f %s: %v: %s", id, err, out)
		}
	}
	procs := processes(s)
	for _, p := range procs {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	for _, p := range procs {
		waitGone(p.pid, 5*time.Second)
	}
	mounts, _ := mountsUnder(s.dir)
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Logf("cleanup: unmount %s: %v", m.Mountpoint, err)
		}
	}
	for _, dir := range pinDirs(s) {
		pins, _ := os.ReadDir(dir)
		for _, p := range pins {
			_ = os.Remove(filepath.Join(dir, p.Name()))
		}
	}
	for _, c := range cgroupsBelow(s.cgroupParent) {
		rmdirRetry(t, c)
	}
	if withParent {
		for _, c := range cgroupRoots() {
			p := filepath.Join(c, s.cgroupParent)
			if _, err := os.Stat(p); err == nil {
				rmdirRetry(t, p)
			}
		}
	}
}

// pinDirs are where berthd pins pod namespaces: <state>/netns by contract,
// and <state>/ipcns, <state>/utsns where it keeps IPC and UTS pins apart.
func pinDirs(s scope) []string {
	return []string{filepath.Join(s.state, "netns"), filepath.Join(s.state, "ipcns"), filepath.Join(s.state, "utsns")}
}

func rmdirRetry(t testing.TB, p string) {
	var err error
	for range 20 {
		if err = unix.Rmdir(p); err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("cleanup: rmdir %s: %v", p, err)
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// mountsUnder lists mounts whose mountpoint or source is under dir.
func mountsUnder(dir string) ([]*mountinfo.Info, error) {
	return mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !under(m.Mountpoint, dir) && !under(m.Source, dir), false
	})
}

type proc struct {
	pid  int
	comm string
	why  string
}

// processes finds live processes that belong to the daemon: berth-shim,
// berth-pause and containerd-shim processes naming its dir (cmdline, cwd or
// environment) and any process in a cgroup below its cgroup parent
// (containers, infra processes).
func processes(s scope) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !alive(pid) {
			continue
		}
		base := "/proc/" + e.Name()
		comm := readTrim(base + "/comm")
		if why := belongs(base, comm, s); why != "" {
			out = append(out, proc{pid: pid, comm: comm, why: why})
		}
	}
	return out
}

func belongs(base, comm string, s scope) string {
	if cg, err := os.ReadFile(base + "/cgroup"); err == nil {
		for _, line := range strings.Split(string(cg), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && under(parts[2], s.cgroupParent) {
				return "in cgroup " + parts[2]
			}
		}
	}
	// containerd's runc shim (comm truncated to 15 bytes) for the
	// containerd that migration tests run beside berthd.
	if comm != "berth-shim" && comm != "berth-pause" && comm != "containerd-shim" {
		return ""
	}
	if cmdline, err := os.ReadFile(base + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(s.dir)) {
		return "cmdline " + strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")
	}
	if cwd, err := os.Readlink(base + "/cwd"); err == nil && under(cwd, s.dir) {
		return "cwd " + cwd
	}
	if env, err := os.ReadFile(base + "/environ"); err == nil && bytes.Contains(env, []byte(s.dir)) {
		return "environment names " + s.dir
	}
	return ""
}

// alive is false for missing processes and zombies (dead, only not reaped).
func alive(pid int) bool {
	st, err := api.ReadProcStat(pid)
	return err == nil && !st.Gone()
}

func waitGone(pid int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); alive(pid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// runcList lists the containers runc knows under root.
func runcList(root string) ([]string, error) {
	if _, err := os.Stat(root); err != nil {
		return nil, nil
	}
	out, err := exec.Command("runc", "--root", root, "list", "-q").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("runc --root %s list -q: %v: %s", root, err, out)
	}
	return strings.Fields(string(out)), nil
}

// cgroupRoots lists the mounted cgroup hierarchies, once each.
func cgroupRoots() []string { return cgroupRootsAt("/sys/fs/cgroup") }

// cgroupRootsAt lists the hierarchies mounted at mnt: mnt itself when it
// is cgroup v2's unified hierarchy (it carries cgroup.controllers, and its
// subdirectories are cgroups, not hierarchies), else one per v1
// controller mount below it.
func cgroupRootsAt(mnt string) []string {
	if _, err := os.Stat(filepath.Join(mnt, "cgroup.controllers")); err == nil {
		return []string{mnt}
	}
	entries, _ := os.ReadDir(mnt)
	seen := map[string]bool{}
	var roots []string
	for _, e := range entries {
		p, err := filepath.EvalSymlinks(filepath.Join(mnt, e.Name()))
		if err != nil || seen[p] {
			continue
		}
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			continue
		}
		seen[p] = true
		roots = append(roots, p)
	}
	if len(roots) == 0 {
		roots = append(roots, mnt)
	}
	return roots
}

// cgroupsBelow lists every cgroup below parent in every hierarchy, deepest
// first, so removing them in order works.
func cgroupsBelow(parent string) []string { return cgroupsBelowIn(cgroupRoots(), parent) }

func cgroupsBelowIn(roots []string, parent string) []string {
	var out []string
	for _, root := range roots {
		top := filepath.Join(root, parent)
		_ = filepath.WalkDir(top, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if de.IsDir() && p != top {
				out = append(out, p)
			}
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}
