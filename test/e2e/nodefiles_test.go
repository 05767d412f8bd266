package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// nobody is the unprivileged local user the probes run as.
const nobody = 65534

// TestNodeFiles: no local user reaches what berth keeps on the node (issue
// 18 item 3, the class of CVE-2021-41091 and CVE-2021-41103): unpacked
// layers, writable layers, pod files and bundles, user namespace ones
// included, are closed to an unprivileged uid, while containers that run as
// non-root still see a usable "/" and read their pod files. The daemon's
// temp dir is 0711, as /var/lib and /run are, so only berth's own modes
// stand in the way.
func TestNodeFiles(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.StartDaemonTraversable(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{reg.Host}})
	t.Run("UpgradedNodeClosed", func(t *testing.T) { testUpgradedNodeClosed(t, d) })
	for _, tc := range []sharedCase{
		{"Closed", testNodeFilesClosed},
		{"UsernsBundleClosed", testUsernsBundleClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() {
				removeAllPods(t, d)
				testutil.AssertNoLeaks(t, d)
			})
			tc.fn(t, d)
		})
	}
}

// topDirs are the directories that must be 0700 on every start.
func topDirs(d *testutil.Daemon) []string {
	return []string{
		filepath.Join(d.Root, "layers"), filepath.Join(d.Root, "containers"),
		filepath.Join(d.Root, "content"), filepath.Join(d.State, "sandboxes"),
	}
}

// An older berth made its stores and user namespace bundles 0711: a
// restart closes them.
func testUpgradedNodeClosed(t *testing.T, d *testutil.Daemon) {
	if err := d.Stop(); err != nil {
		t.Fatalf("stop berthd: %v", err)
	}
	for _, p := range topDirs(d) {
		if err := os.MkdirAll(p, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	// A user namespace container's bundle, as an older berth left it.
	bundle := filepath.Join(d.State, "containers", "upgraded-bundle")
	if err := os.Mkdir(bundle, 0o711); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(bundle)
	d.Restart(t)
	fi, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("a bundle an older berth left 0711 is %v after a restart, want closed to others", fi.Mode().Perm())
	}
	for _, p := range topDirs(d) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v after a restart, want 0700", p, fi.Mode().Perm())
		}
	}
}

func testNodeFilesClosed(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "nodefiles")
	podID := runPod(t, d, pod)
	st, _, errOut := runToExit(t, d, podID, pod, shConfig("writer", "echo secret > /made"))
	if st.ExitCode != 0 {
		t.Fatalf("writer: exit %d, stderr %q", st.ExitCode, errOut)
	}
	// A non-root container still has a 0755 "/" and reads its pod files.
	user := shConfig("user", `stat -c 'root=%a' /; ls / >/dev/null && echo ls=ok;`+
		` cat /etc/hostname /etc/hosts /etc/resolv.conf >/dev/null && echo podfiles=ok;`+
		` echo x > /dev/shm/x && echo shm=ok`)
	secCtx(user).RunAsUser = &runtimeapi.Int64Value{Value: nobody}
	ust, out, errOut := runToExit(t, d, podID, pod, user)
	for _, want := range []string{"root=755", "ls=ok", "podfiles=ok", "shm=ok"} {
		if ust.ExitCode != 0 || !strings.Contains(out, want) {
			t.Errorf("non-root container: exit %d, output %q (stderr %q), want %q", ust.ExitCode, out, errOut, want)
		}
	}

	layer := layerWith(t, d, "bin/busybox")
	upper := filepath.Join(d.Root, "containers", st.GetId(), "upper")
	pdir := filepath.Join(d.State, "sandboxes", podID)
	for _, p := range []string{
		filepath.Join(layer, "bin/busybox"), layer,
		filepath.Join(upper, "made"), upper,
		filepath.Join(pdir, "hostname"), filepath.Join(pdir, "shm"),
		filepath.Join(d.State, "containers", st.GetId(), "rootfs", "made"),
	} {
		mustExist(t, p)
		probeClosed(t, p)
	}
	removePod(t, d, podID)
}

// A user namespace container's bundle is traversable by its mapped root
// (runc mounts the rootfs as that user), by no one else.
func testUsernsBundleClosed(t *testing.T, d *testutil.Daemon) {
	if !handlerSupports(t, d, func(f *runtimeapi.RuntimeHandlerFeatures) bool { return f.GetUserNamespaces() }) {
		t.Skip("the default runtime handler does not support user namespaces (run make setup for runc 1.5.2)")
	}
	u := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping(300000), Gids: mapping(300000)}
	pod := usernsPod(t, d, "userns-files", u)
	podID := runPod(t, d, pod)
	cfg := shConfig("u", "echo secret > /made; stat -c 'root=%u:%a' /")
	cfg.Linux.SecurityContext.NamespaceOptions = pod.Linux.SecurityContext.NamespaceOptions
	st, out, errOut := runToExit(t, d, podID, pod, cfg)
	if st.ExitCode != 0 || !strings.Contains(out, "root=0:755") {
		t.Fatalf("userns container: exit %d, stdout %q, stderr %q", st.ExitCode, out, errOut)
	}
	rootfs := filepath.Join(d.State, "containers", st.GetId(), "rootfs")
	for _, p := range []string{filepath.Join(rootfs, "made"), filepath.Join(rootfs, "bin/busybox")} {
		mustExist(t, p)
		probeClosed(t, p)
	}
	removePod(t, d, podID)
}

// layerWith finds the unpacked layer holding rel.
func layerWith(t *testing.T, d *testutil.Daemon, rel string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.Root, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(d.Root, "layers", e.Name())
		if _, err := os.Lstat(filepath.Join(p, rel)); err == nil {
			return p
		}
	}
	t.Fatalf("no layer under %s holds %s", d.Root, rel)
	return ""
}

func mustExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		t.Fatalf("probe target missing (as root): %v", err)
	}
}

// probeClosed checks, as the unprivileged uid, that p can be neither
// stat'ed, read nor executed: each attempt must fail with EACCES.
func probeClosed(t *testing.T, p string) {
	t.Helper()
	for _, argv := range [][]string{{"/usr/bin/stat", p}, {"/bin/cat", p}, {p}} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			t.Errorf("uid %d: %v succeeded: %q", nobody, argv, out)
		case errors.As(err, &exit):
			// The probe ran and failed: it must be for want of permission.
			if !strings.Contains(string(out), "Permission denied") {
				t.Errorf("uid %d: %v failed, but not with EACCES: %q", nobody, argv, out)
			}
		case !errors.Is(err, syscall.EACCES):
			t.Errorf("uid %d: exec %s: %v, want EACCES", nobody, p, err)
		}
	}
}
