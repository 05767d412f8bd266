package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestSecurity checks that the security context is enforced by the kernel,
// not just written into config.json: each case runs a probe in a container
// and asserts what the kernel allowed.
func TestSecurity(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	for _, tc := range []sharedCase{
		{"DroppedCapability", testDroppedCapability},
		{"ReadonlyRootfs", testReadonlyRootfs},
		{"SeccompRuntimeDefault", testSeccompDefault},
		{"SeccompAllowList", testSeccompAllowList},
		{"OOMKilled", testOOMKilled},
		{"UserAndGroups", testUserAndGroups},
		{"Sysctls", testSysctls},
		{"AppArmor", testAppArmor},
		{"DevicesAndPrivileged", testDevices},
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

func secCtx(cfg *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerSecurityContext {
	return cfg.Linux.SecurityContext
}

// Without CAP_NET_RAW a raw ICMP socket is refused, so ping fails; with
// the default set it works on the pod's loopback.
func testDroppedCapability(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "caps")
	podID := runPod(t, d, pod)
	const probe = "grep CapEff /proc/self/status; ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1; echo ping=$?"
	with := shConfig("with", probe)
	st, out, _ := runToExit(t, d, podID, pod, with)
	if st.ExitCode != 0 || !strings.Contains(out, "ping=0") {
		t.Errorf("with CAP_NET_RAW: exit %d, output %q; want ping to work", st.ExitCode, out)
	}
	without := shConfig("without", probe)
	secCtx(without).Capabilities = &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW"}}
	st, out, _ = runToExit(t, d, podID, pod, without)
	if st.ExitCode != 0 || strings.Contains(out, "ping=0") {
		t.Errorf("without CAP_NET_RAW: exit %d, output %q; want ping refused", st.ExitCode, out)
	}
	if capEff := capMask(t, out); capEff&(1<<13) != 0 {
		t.Errorf("CAP_NET_RAW (bit 13) still effective: %x", capEff)
	}
	removePod(t, d, podID)
}

func capMask(t *testing.T, out string) uint64 {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			var m uint64
			for _, c := range strings.TrimSpace(v) {
				m = m*16 + uint64(strings.IndexRune("0123456789abcdef", c))
			}
			return m
		}
	}
	t.Fatalf("no CapEff in %q", out)
	return 0
}

func testReadonlyRootfs(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "rorootfs")
	podID := runPod(t, d, pod)
	cfg := shConfig("ro", "touch /probe 2>/dev/null; echo root=$?; touch /dev/shm/x; echo shm=$?")
	secCtx(cfg).ReadonlyRootfs = true
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	if st.ExitCode != 0 || !strings.Contains(out, "root=1") || !strings.Contains(out, "shm=0") {
		t.Errorf("read-only rootfs: exit %d output %q; want the root refused and /dev/shm writable", st.ExitCode, out)
	}
	removePod(t, d, podID)
}

// RuntimeDefault must refuse unshare(2) to a container without
// CAP_SYS_ADMIN; Unconfined lets the same container create a user
// namespace, which proves the refusal is seccomp's.
func testSeccompDefault(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "seccomp")
	podID := runPod(t, d, pod)
	const probe = "unshare -U true 2>/dev/null; echo unshare=$?"
	for _, tc := range []struct {
		profile runtimeapi.SecurityProfile_ProfileType
		want    string
	}{
		{runtimeapi.SecurityProfile_Unconfined, "unshare=0"},
		{runtimeapi.SecurityProfile_RuntimeDefault, "unshare=1"},
	} {
		cfg := shConfig("sc"+strings.ToLower(tc.profile.String()), probe)
		secCtx(cfg).Seccomp = &runtimeapi.SecurityProfile{ProfileType: tc.profile}
		st, out, _ := runToExit(t, d, podID, pod, cfg)
		if st.ExitCode != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("seccomp %s: exit %d output %q, want %s", tc.profile, st.ExitCode, out, tc.want)
		}
	}
	removePod(t, d, podID)
}

// RuntimeDefault is an allow-list: syscalls it does not name (io_uring,
// ustat) and personality() turning ASLR off fail with EPERM, while
// unconfined the same probe gets the kernel's own answer (success, EINVAL
// for ustat), so the refusal is seccomp's.
func testSeccompAllowList(t *testing.T, d *testutil.Daemon) {
	ref := sysprobeImage(t)
	pod := podConfig(t, d, "seccompallow")
	podID := runPod(t, d, pod)
	probes := []string{"io_uring_setup", "ustat", "personality_addr_no_randomize"}
	for _, tc := range []struct {
		profile runtimeapi.SecurityProfile_ProfileType
		eperm   bool
	}{
		{runtimeapi.SecurityProfile_Unconfined, false},
		{runtimeapi.SecurityProfile_RuntimeDefault, true},
	} {
		cfg := ctrConfig("probe"+strings.ToLower(tc.profile.String()), ref, append([]string{"/bin/sysprobe", "getpid"}, probes...)...)
		secCtx(cfg).Seccomp = &runtimeapi.SecurityProfile{ProfileType: tc.profile}
		st, out, _ := runToExit(t, d, podID, pod, cfg)
		if st.ExitCode != 0 || !strings.Contains(out, "getpid=ok\n") {
			t.Errorf("seccomp %s: exit %d output %q", tc.profile, st.ExitCode, out)
			continue
		}
		for _, p := range probes {
			if !strings.Contains(out, p+"=") || strings.Contains(out, p+"=EPERM\n") != tc.eperm {
				t.Errorf("seccomp %s: want %s EPERM %v in %q", tc.profile, p, tc.eperm, out)
			}
		}
	}
	removePod(t, d, podID)
}

// sysprobeImage pushes the busybox image with testdata/sysprobe, a static
// Go program making raw syscalls busybox never makes, as /bin/sysprobe.
func sysprobeImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sysprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/sysprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sysprobe: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := testutil.NewLayer([]testutil.File{{Path: "/bin/sysprobe", Body: string(body), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{layer}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pushed, err := reg.Push(ctx, "sysprobe:"+randID(), img)
	if err != nil {
		t.Fatal(err)
	}
	return pushed.Ref
}

// A process that outgrows its memory limit is OOM-killed and reported as
// OOMKilled; a container stopped with SIGTERM is not.
func testOOMKilled(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "oom")
	podID := runPod(t, d, pod)
	cfg := shConfig("hog", "tail /dev/zero")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	id := runCtr(t, d, podID, pod, cfg)
	st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 60*time.Second)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("memory hog: reason %q exit %d, want OOMKilled 137", st.Reason, st.ExitCode)
	}
	calm := runCtr(t, d, podID, pod, shConfig("calm", "trap 'exit 143' TERM; while :; do sleep 0.1; done"))
	waitState(t, d, calm, runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
	if err := d.Runtime.StopContainer(context.Background(), calm, 10); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	st = waitState(t, d, calm, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	if st.Reason == "OOMKilled" {
		t.Errorf("a container stopped with SIGTERM is reported OOMKilled (exit %d)", st.ExitCode)
	}
	removePod(t, d, podID)
}

// run_as_user, run_as_group and supplemental groups reach the process and
// come back in ContainerStatus.user.
func testUserAndGroups(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "user")
	podID := runPod(t, d, pod)
	cfg := shConfig("ids", "id -u; id -g; id -G")
	sc := secCtx(cfg)
	sc.RunAsUser = &runtimeapi.Int64Value{Value: 1234}
	sc.RunAsGroup = &runtimeapi.Int64Value{Value: 2345}
	sc.SupplementalGroups = []int64{3456}
	sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	f := strings.Fields(out)
	if st.ExitCode != 0 || len(f) < 3 || f[0] != "1234" || f[1] != "2345" || !slices.Contains(f[2:], "3456") {
		t.Errorf("ids: exit %d output %q", st.ExitCode, out)
	}
	u := st.GetUser().GetLinux()
	if u.GetUid() != 1234 || u.GetGid() != 2345 || !slices.Contains(u.GetSupplementalGroups(), 3456) {
		t.Errorf("ContainerStatus.user = %v", st.GetUser())
	}
	resp, err := d.Runtime.Status(context.Background(), false)
	if err != nil || !resp.GetFeatures().GetSupplementalGroupsPolicy() {
		t.Errorf("Status features %v (%v): want SupplementalGroupsPolicy", resp.GetFeatures(), err)
	}
	removePod(t, d, podID)
}

// A namespaced sysctl is applied in the pod; a node-wide one is refused.
func testSysctls(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "sysctl")
	pod.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmni": "2048"}
	podID := runPod(t, d, pod)
	st, out, _ := runToExit(t, d, podID, pod, shConfig("read",
		"cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni"))
	if f := strings.Fields(out); st.ExitCode != 0 || len(f) != 2 || f[0] != "80" || f[1] != "2048" {
		t.Errorf("sysctls in the pod: exit %d output %q", st.ExitCode, out)
	}
	removePod(t, d, podID)

	bad := podConfig(t, d, "badsysctl")
	bad.Linux.Sysctls = map[string]string{"vm.swappiness": "1"}
	badID := runPod(t, d, bad)
	cfg := shConfig("x", "true")
	ensureImage(t, d, cfg.Image.Image)
	_, err := d.Runtime.CreateContainer(context.Background(), badID, cfg, bad)
	wantCode(t, "node-wide sysctl", err, codes.InvalidArgument)
	removePod(t, d, badID)
}

// AppArmor as containerd and CRI-O do it. Where the host enforces
// AppArmor, RuntimeDefault confines the container in berth-default and a
// Localhost profile that is not loaded is refused naming it; where it does
// not (this CI host), RuntimeDefault runs without a profile and any
// Localhost profile is refused naming it, never run unconfined. Unconfined
// always runs, and verbose Status says which case this is.
func testAppArmor(t *testing.T, d *testutil.Daemon) {
	enabled := hostAppArmor()
	resp, err := d.Runtime.Status(context.Background(), true)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if got, want := resp.GetInfo()["apparmor"], fmt.Sprintf(`"enabled":%v`, enabled); !strings.Contains(got, want) {
		t.Errorf("Status info apparmor = %q, want %s", got, want)
	}
	pod := podConfig(t, d, "lsm")
	podID := runPod(t, d, pod)
	cfg := shConfig("aa", "true")
	secCtx(cfg).Apparmor = &runtimeapi.SecurityProfile{
		ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "berth-e2e-not-loaded",
	}
	ensureImage(t, d, cfg.Image.Image)
	_, err = d.Runtime.CreateContainer(context.Background(), podID, cfg, pod)
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "berth-e2e-not-loaded") {
		t.Errorf("apparmor localhost profile: %v, want FailedPrecondition naming the profile", err)
	}
	unconfined := shConfig("un", "true")
	secCtx(unconfined).Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	if st, _, _ := runToExit(t, d, podID, pod, unconfined); st.ExitCode != 0 {
		t.Errorf("unconfined apparmor: exit %d", st.ExitCode)
	}
	probe := "true"
	if enabled {
		probe = "cat /proc/self/attr/current"
	}
	rd := shConfig("rd", probe)
	secCtx(rd).Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	st, out, _ := runToExit(t, d, podID, pod, rd)
	if st.ExitCode != 0 || enabled && strings.TrimSpace(out) != "berth-default (enforce)" {
		t.Errorf("RuntimeDefault apparmor (host enforces: %v): exit %d output %q", enabled, st.ExitCode, out)
	}
	removePod(t, d, podID)
}

// hostAppArmor is whether the kernel enforces AppArmor, as runc decides it.
func hostAppArmor() bool {
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err != nil {
		return false
	}
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.HasPrefix(string(b), "Y")
}

// A requested device appears under its container path and is usable; a
// privileged container gets the host's devices and no masked paths.
func testDevices(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "devices")
	pod.Linux.SecurityContext.Privileged = true
	podID := runPod(t, d, pod)
	cfg := shConfig("dev", "echo hi > /dev/mynull && echo wrote; test -e /dev/loop-control; echo loop=$?")
	cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"}}
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	if st.ExitCode != 0 || !strings.Contains(out, "wrote") || !strings.Contains(out, "loop=1") {
		t.Errorf("device: exit %d output %q; want /dev/mynull writable and no host loop device", st.ExitCode, out)
	}
	priv := shConfig("priv", "test -c /dev/loop-control; echo loop=$?; grep -c . /proc/keys >/dev/null 2>&1; echo keys=$?")
	secCtx(priv).Privileged = true
	st, out, _ = runToExit(t, d, podID, pod, priv)
	if st.ExitCode != 0 || !strings.Contains(out, "loop=0") {
		t.Errorf("privileged: exit %d output %q; want the host's /dev/loop-control", st.ExitCode, out)
	}
	removePod(t, d, podID)
}
