package process

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/shim/api"
)

// statusText is a /proc/<pid>/status cut to the lines around the fields
// parseStatus reads.
func statusText(capEff, capBnd string, seccomp, nnp int) string {
	return statusIDs("0", "0", capEff, capBnd, seccomp, nnp)
}

// statusIDs is statusText with the Uid: and Gid: lines given.
func statusIDs(uids, gids, capEff, capBnd string, seccomp, nnp int) string {
	return "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t" + uids + "\nGid:\t" + gids + "\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t" + capEff + "\nCapEff:\t" + capEff + "\nCapBnd:\t" + capBnd +
		"\nCapAmb:\t0000000000000000\nNoNewPrivs:\t" + strconv.Itoa(nnp) + "\nSeccomp:\t" + strconv.Itoa(seccomp) +
		"\nSeccomp_filters:\t1\nSpeculation_Store_Bypass:\tthread vulnerable\n"
}

// runcDefaultCaps are runc's and containerd's default capabilities:
// 0x00000000a80425fb.
var runcDefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func specWith(caps []string, seccomp, nnp bool) *specs.Spec {
	s := &specs.Spec{
		Process: &specs.Process{NoNewPrivileges: nnp, Capabilities: &specs.LinuxCapabilities{
			Bounding: caps, Effective: caps, Permitted: caps,
		}},
		Linux: &specs.Linux{},
	}
	if seccomp {
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	}
	return s
}

func asUser(s *specs.Spec, uid, gid uint32) *specs.Spec {
	s.Process.User = specs.User{UID: uid, GID: gid}
	return s
}

func TestWiderThanSpec(t *testing.T) {
	const dflt = "00000000a80425fb"
	for _, tc := range []struct {
		name   string
		status string
		spec   *specs.Spec
		wider  []string // substrings of the reasons, in order; none: within
	}{
		{"same as spec", statusText(dflt, dflt, 2, 1), specWith(runcDefaultCaps, true, true), nil},
		{"non-root user, no effective caps", statusText("0000000000000000", dflt, 2, 1), specWith(runcDefaultCaps, true, true), nil},
		{"fewer than spec", statusText("0000000000000001", "0000000000000001", 2, 1), specWith(runcDefaultCaps, true, true), nil},
		{"no seccomp, none asked", statusText(dflt, dflt, 0, 0), specWith(runcDefaultCaps, false, false), nil},
		{"short cap names", statusText("0000000000200000", "0000000000200000", 0, 0), specWith([]string{"sys_admin"}, false, false), nil},
		{"CAP_SYS_ADMIN effective", statusText("00000000a82425fb", dflt, 2, 1), specWith(runcDefaultCaps, true, true),
			[]string{"effective capabilities CAP_SYS_ADMIN not in process.capabilities.effective"}},
		{"full bounding set", statusText(dflt, "000001ffffffffff", 2, 1), specWith(runcDefaultCaps, true, true),
			[]string{"bounding capabilities CAP_DAC_READ_SEARCH, CAP_LINUX_IMMUTABLE"}},
		{"unknown capability bit", statusText("0000800000000000", dflt, 2, 1), specWith(runcDefaultCaps, true, true),
			[]string{"effective capabilities capability 47"}},
		{"no capabilities in spec", statusText("0000000000000001", "0000000000000001", 0, 0), &specs.Spec{},
			[]string{"effective capabilities CAP_CHOWN", "bounding capabilities CAP_CHOWN"}},
		{"seccomp off", statusText(dflt, dflt, 0, 1), specWith(runcDefaultCaps, true, true), []string{"no seccomp filter"}},
		{"no_new_privs off", statusText(dflt, dflt, 2, 0), specWith(runcDefaultCaps, true, true), []string{"no_new_privs off"}},
		{"non-root spec, non-root task", statusIDs("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000", "0000000000000000", dflt, 2, 1),
			asUser(specWith(runcDefaultCaps, true, true), 1000, 1000), nil},
		{"non-root spec, saved uid 0", statusIDs("1000\t1000\t0\t1000", "1000\t1000\t1000\t1000", "0000000000000000", dflt, 2, 1),
			asUser(specWith(runcDefaultCaps, true, true), 1000, 1000), []string{"uid 0 though process.user.uid is 1000"}},
		{"non-root spec, root group", statusIDs("1000\t1000\t1000\t1000", "0\t0\t0\t0", "0000000000000000", dflt, 2, 1),
			asUser(specWith(runcDefaultCaps, true, true), 1000, 1000), []string{"gid 0 though process.user.gid is 1000"}},
		{"uid 0 through a setuid file, no no_new_privs", statusIDs("1000\t0\t0\t0", "1000\t1000\t1000\t1000", "0000000000000000", dflt, 2, 0),
			asUser(specWith(runcDefaultCaps, true, false), 1000, 1000), nil},
		{"everything wider", statusText("000001ffffffffff", "000001ffffffffff", 0, 0), specWith(runcDefaultCaps, true, true),
			[]string{"effective", "bounding", "seccomp", "no_new_privs"}},
	} {
		st, err := parseStatus(strings.NewReader(tc.status))
		if err != nil {
			t.Fatalf("%s: parseStatus: %v", tc.name, err)
		}
		got := widerThanSpec(st, tc.spec)
		if len(got) != len(tc.wider) {
			t.Errorf("%s: wider = %q, want %d reasons like %q", tc.name, got, len(tc.wider), tc.wider)
			continue
		}
		for i, w := range tc.wider {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: reason %d = %q, want it to contain %q", tc.name, i, got[i], w)
			}
		}
	}
}

func TestParseStatus(t *testing.T) {
	st, err := parseStatus(strings.NewReader(statusText("00000000a80425fb", "000001ffffffffff", 2, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if want := (taskSecurity{capEff: 0xa80425fb, capBnd: 0x1ffffffffff, seccomp: 2, noNewPrivs: true, rootUID: true, rootGID: true}); st != want {
		t.Errorf("parsed %+v, want %+v", st, want)
	}
	if _, err := parseStatus(strings.NewReader("Name:\tsh\nCapEff:\t0\n")); err == nil {
		t.Error("status without the fields parsed")
	}
	if _, err := parseStatus(strings.NewReader(statusText("zz", "0", 0, 0))); err == nil {
		t.Error("malformed CapEff parsed")
	}
	// The running kernel's own format.
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := parseStatus(f); err != nil {
		t.Errorf("/proc/self/status: %v", err)
	}
}

// TestCheckRestored runs the whole check over a fake /proc: a process in
// the restored init's PID namespace with a thread wider than the spec
// fails it, with PermissionDenied; a process in another namespace is not
// the container's.
func TestCheckRestored(t *testing.T) {
	const dflt = "00000000a80425fb"
	bundle := t.TempDir()
	raw, _ := json.Marshal(specWith(runcDefaultCaps, true, true))
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	proc := t.TempDir()
	task := func(pid, tid int, ns, status string) {
		t.Helper()
		dir := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(dir, "task", strconv.Itoa(tid)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Symlink(ns, filepath.Join(dir, "ns", "pid"))
		if err := os.WriteFile(filepath.Join(dir, "task", strconv.Itoa(tid), "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	task(100, 100, "pid:[1]", statusText(dflt, dflt, 2, 1))
	task(101, 101, "pid:[1]", statusText(dflt, dflt, 2, 1))
	task(200, 200, "pid:[2]", statusText("000001ffffffffff", "000001ffffffffff", 0, 0)) // the host's
	spec, err := api.ReadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkRestored(proc, spec, 100); err != nil {
		t.Fatalf("container within its spec: %v", err)
	}
	task(101, 102, "pid:[1]", statusText("00000000a82425fb", dflt, 2, 1)) // a thread with CAP_SYS_ADMIN
	err = checkRestored(proc, spec, 100)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "CAP_SYS_ADMIN") || !strings.Contains(err.Error(), "task 102") {
		t.Fatalf("checkRestored = %v, want PermissionDenied naming task 102 and CAP_SYS_ADMIN", err)
	}
}
