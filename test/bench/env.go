package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/api"
)

// env is what one bench run creates on the host and must remove: a short
// temp dir (every daemon's root, state, sockets and logs live below it), a
// cgroup subtree, a CNI bridge and its IPAM state.
type env struct {
	Dir     string // /tmp/bbXXXX
	ID      string // random hex naming the bridge and cgroup root
	Cgroup  string // cgroupfs path every pod of the run lives under
	Bridge  string
	Subnet  string
	ConfDir string // the one CNI conf dir every runtime and the floor read
	CNIBins []string
	// Runc is the OCI runtime every party uses: berth, containerd, floor.
	Runc string
	log  *slog.Logger
}

// conflist is berth's default network (netplugin/10-berth.conflist) with the
// bench's own bridge, subnet and IPAM state dir, so the bench never touches
// the node's pod network.
const conflist = `{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": %q }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": %q
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
  ]
}
`

func newEnv(subnet, runc string, log *slog.Logger) (*env, error) {
	dir, err := os.MkdirTemp("/tmp", "bb")
	if err != nil {
		return nil, fmt.Errorf("make bench dir: %w", err)
	}
	id := randHex(3)
	e := &env{
		Dir:     dir,
		ID:      id,
		Cgroup:  "/berth-bench-" + id,
		Bridge:  "bbench" + id,
		Subnet:  subnet,
		ConfDir: filepath.Join(dir, "cni"),
		CNIBins: []string{"/usr/lib/cni", "/opt/cni/bin"},
		Runc:    runc,
		log:     log,
	}
	if err := os.MkdirAll(e.ConfDir, 0o755); err != nil {
		return e, fmt.Errorf("make cni conf dir: %w", err)
	}
	body := fmt.Sprintf(conflist, e.network(), e.Bridge, subnet, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(e.ConfDir, "10-bench.conflist"), []byte(body), 0o644); err != nil {
		return e, fmt.Errorf("write cni config: %w", err)
	}
	return e, nil
}

// network names the bench's CNI network; the plugins write it into the
// comment of every NAT rule they add, which is how cleanup finds them.
func (e *env) network() string { return "berth-bench-" + e.ID }

// cleanup removes the bridge, the NAT rules of the bench's network, the
// cgroup subtree, every mount left under the dir and the dir itself. Safe
// to call more than once.
func (e *env) cleanup() {
	if e == nil {
		return
	}
	if _, err := os.Stat("/sys/class/net/" + e.Bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", e.Bridge).CombinedOutput(); err != nil {
			e.log.Warn("delete bridge", "bridge", e.Bridge, "err", err, "out", string(out))
		}
	}
	// Pods removed without a CNI DEL (a daemon killed with pods running, a
	// failed run) leave their masquerade and port-mapping rules behind;
	// hundreds per full-node run.
	if err := removeNATRules(e.network()); err != nil {
		e.log.Warn("remove nat rules", "network", e.network(), "err", err)
	}
	killCgroupProcs(e.Cgroup)
	removeCgroupTree(e.Cgroup, e.log)
	unmountUnder(e.Dir, e.log)
	if err := os.RemoveAll(e.Dir); err != nil {
		e.log.Warn("remove bench dir", "dir", e.Dir, "err", err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cgroupRoots are the mounted cgroup hierarchies (v1 controllers and the v2
// unified one), each a directory a cgroupfs path is joined to.
func cgroupRoots() []string {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil
	}
	roots := make([]string, 0, len(mounts))
	for _, m := range mounts {
		roots = append(roots, m.Mountpoint)
	}
	return roots
}

// killCgroupProcs SIGKILLs every process in the cgroup subtree (containers a
// daemon failed to remove).
func killCgroupProcs(cg string) {
	for _, root := range cgroupRoots() {
		base := filepath.Join(root, cg)
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroupTree removes cg and everything below it, deepest first, in
// every hierarchy.
func removeCgroupTree(cg string, log *slog.Logger) {
	for _, root := range cgroupRoots() {
		base := filepath.Join(root, cg)
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for range 40 {
				if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				log.Warn("remove cgroup", "path", d, "err", err)
			}
		}
	}
}

// unmountUnder detaches every mount whose mountpoint is under dir, deepest
// first (overlay rootfs, shm, netns pins a daemon left behind).
func unmountUnder(dir string, log *slog.Logger) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		log.Warn("read mounts", "err", err)
		return
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			log.Warn("unmount", "path", m.Mountpoint, "err", err)
		}
	}
}

// procInfo is one process as /proc shows it.
type procInfo struct {
	Pid, PPid int
	Comm      string
	Cmdline   string
}

// listProcs reads every process of the host.
func listProcs() []procInfo {
	entries, _ := os.ReadDir("/proc")
	out := make([]procInfo, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := api.ReadProcStat(pid)
		if err != nil || st.State == 'Z' {
			continue
		}
		base := "/proc/" + e.Name()
		cmd, _ := os.ReadFile(base + "/cmdline")
		comm, _ := os.ReadFile(base + "/comm")
		out = append(out, procInfo{
			Pid: pid, PPid: st.PPid,
			Comm:    strings.TrimSpace(string(comm)),
			Cmdline: strings.ReplaceAll(string(cmd), "\x00", " "),
		})
	}
	return out
}

// runtimeProcs returns the runtime's own processes: the daemon, shims (comm
// starting with shimComm and naming a path under dir in their command line) and infra
// processes (children of either whose comm is in infraComms).
func runtimeProcs(daemonPid int, dir, shimComm string, infraComms ...string) []int {
	procs := listProcs()
	owners := map[int]bool{}
	if daemonPid > 0 {
		owners[daemonPid] = true
	}
	for _, p := range procs {
		if strings.HasPrefix(p.Comm, shimComm) && namesPathUnder(p.Cmdline, dir) {
			owners[p.Pid] = true
		}
	}
	out := make([]int, 0, len(owners)*2)
	for pid := range owners {
		out = append(out, pid)
	}
	for _, p := range procs {
		if !owners[p.PPid] {
			continue
		}
		for _, c := range infraComms {
			if p.Comm == c {
				out = append(out, p.Pid)
			}
		}
	}
	sort.Ints(out)
	return out
}

// namesPathUnder says whether a command line names a path below dir, never
// one below a sibling that shares its prefix (containerd vs containerd2).
func namesPathUnder(cmdline, dir string) bool {
	return strings.Contains(cmdline, strings.TrimSuffix(dir, "/")+"/")
}

// killProcsNaming SIGKILLs processes whose command line names a path under
// dir (shims a daemon left running) and waits for them to go.
func killProcsNaming(dir string) {
	var pids []int
	self := os.Getpid()
	for _, p := range listProcs() {
		if p.Pid != self && namesPathUnder(p.Cmdline, dir) {
			pids = append(pids, p.Pid)
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// pssKB sums Pss of the processes, from smaps_rollup (processes that exited
// meanwhile count zero).
func pssKB(pids []int) int64 {
	return sumField(pids, "smaps_rollup", "Pss:")
}

// rssKB is VmRSS of one process.
func rssKB(pid int) int64 {
	return sumField([]int{pid}, "status", "VmRSS:")
}

func sumField(pids []int, file, field string) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, field) {
				f := strings.Fields(line[len(field):])
				if len(f) > 0 {
					v, _ := strconv.ParseInt(f[0], 10, 64)
					total += v
				}
				break
			}
		}
	}
	return total
}

// runcDeleteAll force-deletes every container in a runc state root.
func runcDeleteAll(runc, root string, log *slog.Logger) {
	if _, err := os.Stat(root); err != nil {
		return
	}
	out, err := exec.Command(runc, "--root", root, "list", "-q").Output()
	if err != nil {
		log.Warn("runc list", "root", root, "err", err)
		return
	}
	for _, id := range strings.Fields(string(out)) {
		if o, err := exec.Command(runc, "--root", root, "delete", "-f", id).CombinedOutput(); err != nil {
			log.Warn("runc delete", "id", id, "err", err, "out", string(o))
		}
	}
}
