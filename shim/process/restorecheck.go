package process

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/shim/api"
)

// A restored process's credentials, capabilities and seccomp filter are
// not the runtime's doing: CRIU recreates them, as root, from the images,
// which whoever supplied the checkpoint wrote. The runtime's spec (what
// the CRI request and berth decided) applies to the namespaces, cgroups
// and mounts, not to them. So once a restore succeeded, every task of the
// container is compared with the spec, and a container that got more
// than it asks for is killed before it is reported running.

// taskSecurity is what /proc/<pid>/status says of a task's privileges.
type taskSecurity struct {
	capEff, capBnd uint64
	// seccomp is the Seccomp: field: 0 none, 1 strict, 2 filter.
	seccomp    int
	noNewPrivs bool
	// rootUID, rootGID: any of the real, effective, saved or file system
	// ids is 0.
	rootUID, rootGID bool
}

// parseStatus reads the fields of a /proc/<pid>/status taskSecurity has.
// A status without them (a kernel too old to report them) is an error:
// the check cannot be made.
func parseStatus(r io.Reader) (taskSecurity, error) {
	st, err := api.ParseProcStatus(r)
	if err != nil {
		return taskSecurity{}, err
	}
	if lacks := st.Lacks(); len(lacks) > 0 {
		return taskSecurity{}, fmt.Errorf("status lacks %s: %w", strings.Join(lacks, ", "), errdefs.ErrNotImplemented)
	}
	return taskSecurity{
		capEff: st.CapEff, capBnd: st.CapBnd, seccomp: st.Seccomp, noNewPrivs: st.NoNewPrivs,
		rootUID: slices.Contains(st.UIDs, 0), rootGID: slices.Contains(st.GIDs, 0),
	}, nil
}

// widerThanSpec lists what a task has beyond what spec grants its
// process: capabilities in its effective or bounding set the spec's sets
// lack, no seccomp filter where the spec has one, no no_new_privs where
// the spec sets it, user or group 0 where the spec names another and
// sets no_new_privs. Empty: the task is within the spec.
func widerThanSpec(t taskSecurity, spec *specs.Spec) []string {
	var caps specs.LinuxCapabilities
	var user specs.User
	nnp := false
	if p := spec.Process; p != nil {
		nnp = p.NoNewPrivileges
		user = p.User
		if p.Capabilities != nil {
			caps = *p.Capabilities
		}
	}
	var wider []string
	// Without no_new_privs a process reaches uid or gid 0 legitimately,
	// through a setuid or setgid file of its image; with it, never.
	if nnp && t.rootUID && user.UID != 0 {
		wider = append(wider, fmt.Sprintf("uid 0 though process.user.uid is %d and noNewPrivileges is set", user.UID))
	}
	if nnp && t.rootGID && user.GID != 0 {
		wider = append(wider, fmt.Sprintf("gid 0 though process.user.gid is %d and noNewPrivileges is set", user.GID))
	}
	if extra := t.capEff &^ api.CapabilityMask(caps.Effective); extra != 0 {
		wider = append(wider, "effective capabilities "+api.CapabilityList(extra)+" not in process.capabilities.effective")
	}
	if extra := t.capBnd &^ api.CapabilityMask(caps.Bounding); extra != 0 {
		wider = append(wider, "bounding capabilities "+api.CapabilityList(extra)+" not in process.capabilities.bounding")
	}
	if spec.Linux != nil && spec.Linux.Seccomp != nil && t.seccomp == 0 {
		wider = append(wider, "no seccomp filter though linux.seccomp sets one")
	}
	if nnp && !t.noNewPrivs {
		wider = append(wider, "no_new_privs off though process.noNewPrivileges is set")
	}
	return wider
}

// checkRestored compares every task (thread) of every process in the PID
// namespace of the restored init pid with the bundle's spec. A restore
// gets the container its own PID namespace (a shared one is refused), so
// that namespace is the container.
func checkRestored(procRoot string, spec *specs.Spec, pid int) error {
	pids, err := pidsInNamespaceOf(procRoot, pid)
	if err != nil {
		return err
	}
	for _, p := range pids {
		tasks, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(p), "task"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited meanwhile
		}
		if err != nil {
			return fmt.Errorf("list tasks of pid %d: %w", p, err)
		}
		for _, task := range tasks {
			f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(p), "task", task.Name(), "status"))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read status of task %s: %w", task.Name(), err)
			}
			st, err := parseStatus(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("task %s: %w", task.Name(), err)
			}
			if wider := widerThanSpec(st, spec); len(wider) > 0 {
				return fmt.Errorf("restored task %s (host pid %d) has more privileges than the container's spec grants: %s: %w",
					task.Name(), p, strings.Join(wider, "; "), errdefs.ErrPermissionDenied)
			}
		}
	}
	return nil
}

// pidsInNamespaceOf lists the processes (host pids) in pid's PID
// namespace, pid first.
func pidsInNamespaceOf(procRoot string, pid int) ([]int, error) {
	ns, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "ns", "pid"))
	if err != nil {
		return nil, fmt.Errorf("pid namespace of restored pid %d: %w", pid, err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	pids := []int{pid}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if l, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns", "pid")); err == nil && l == ns {
			pids = append(pids, n)
		}
	}
	return pids, nil
}
