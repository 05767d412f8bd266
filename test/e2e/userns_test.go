package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestUserNamespaces runs pods in user namespaces (issue 6 item 7, issue
// 11's critest UserNamespaces specs): the mappings are applied, the rootfs
// is owned by the container's root through idmapped layers, volumes are
// idmapped, and malformed requests are refused.
func TestUserNamespaces(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.StartDaemonTraversable(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{reg.Host}})
	if !handlerSupports(t, d, func(f *runtimeapi.RuntimeHandlerFeatures) bool { return f.GetUserNamespaces() }) {
		t.Skip("the default runtime handler does not support user namespaces (run make setup for runc 1.5.2)")
	}
	for _, tc := range []sharedCase{
		{"PodMode", func(t *testing.T, d *testutil.Daemon) { testUsernsPod(t, d, false) }},
		{"PodModeSharedPID", func(t *testing.T, d *testutil.Daemon) { testUsernsPod(t, d, true) }},
		{"NodeMode", testUsernsNode},
		{"HostNetwork", testUsernsHostNetwork},
		{"Refused", testUsernsRefused},
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

// handlerSupports reports whether Status gives the default handler ("")
// the feature.
func handlerSupports(t *testing.T, d *testutil.Daemon, has func(*runtimeapi.RuntimeHandlerFeatures) bool) bool {
	t.Helper()
	st, err := d.Runtime.Status(context.Background(), false)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	for _, h := range st.GetRuntimeHandlers() {
		if h.GetName() == "" {
			return has(h.GetFeatures())
		}
	}
	t.Fatalf("Status lists no default handler (\"\"): %v", st.GetRuntimeHandlers())
	return false
}

func usernsPod(t *testing.T, d *testutil.Daemon, name string, u *runtimeapi.UserNamespace) *runtimeapi.PodSandboxConfig {
	pod := podConfig(t, d, name)
	pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = u
	return pod
}

func mapping(host uint32) []*runtimeapi.IDMapping {
	return []*runtimeapi.IDMapping{{ContainerId: 0, HostId: host, Length: 65536}}
}

func testUsernsPod(t *testing.T, d *testutil.Daemon, share bool) {
	const host = 200000
	u := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping(host), Gids: mapping(host)}
	pod := usernsPod(t, d, "userns", u)
	if share {
		sharePID(pod)
		pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = u
	}
	podID := runPod(t, d, pod)
	vol := t.TempDir()
	script := `cat /proc/self/uid_map; id -u; stat -c 'root=%u:%g' /; stat -c 'bin=%u' /bin/busybox;` +
		` touch /made && stat -c 'made=%u' /made; stat -c 'vol=%u' /vol; touch /vol/f && echo volwrite=ok`
	cfg := shConfig("u", script)
	cfg.Linux.SecurityContext.NamespaceOptions = pod.Linux.SecurityContext.NamespaceOptions
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: vol, ContainerPath: "/vol"}}
	st, out, errOut := runToExit(t, d, podID, pod, cfg)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", st.ExitCode, out, errOut)
	}
	fields := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if len(fields) != 3 || fields[0] != "0" || fields[1] != "200000" || fields[2] != "65536" {
		t.Errorf("uid_map %q, want 0 200000 65536", fields)
	}
	for _, want := range []string{"\n0\n", "root=0:0", "bin=0", "made=0", "vol=0", "volwrite=ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	removePod(t, d, podID)
}

func testUsernsNode(t *testing.T, d *testutil.Daemon) {
	pod := usernsPod(t, d, "userns-node", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE})
	podID := runPod(t, d, pod)
	cfg := shConfig("n", "cat /proc/self/uid_map")
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	if f := strings.Fields(out); st.ExitCode != 0 || len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295" {
		t.Errorf("host user namespace: exit %d, uid_map %q", st.ExitCode, out)
	}
	removePod(t, d, podID)
}

// A pod in its own user namespace on the node's network (kubelet's
// UserNamespacesHostNetwork, which Status's user_namespaces_host_network
// claims): mapped ids, the host's network namespace and interfaces.
func testUsernsHostNetwork(t *testing.T, d *testutil.Daemon) {
	if !runtimeFeatures(t, d).GetUserNamespacesHostNetwork() {
		t.Errorf("Status features say user_namespaces_host_network is unsupported")
	}
	hostNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, share := range []bool{false, true} {
		u := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping(300000), Gids: mapping(300000)}
		pod := usernsPod(t, d, "userns-hostnet", u)
		if share {
			sharePID(pod) // replaces the namespace options
			pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = u
		}
		pod.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		podID := runPod(t, d, pod)
		cfg := shConfig("h", "cat /proc/self/uid_map; readlink /proc/self/ns/net; ls /sys/class/net")
		cfg.Linux.SecurityContext.NamespaceOptions = pod.Linux.SecurityContext.NamespaceOptions
		st, out, errOut := runToExit(t, d, podID, pod, cfg)
		lines := strings.Split(out, "\n")
		if st.ExitCode != 0 || len(lines) < 3 {
			t.Fatalf("shared pid %v: exit %d, stdout %q, stderr %q", share, st.ExitCode, out, errOut)
		}
		if f := strings.Fields(lines[0]); len(f) != 3 || f[1] != "300000" {
			t.Errorf("shared pid %v: uid_map %q, want 0 300000 65536", share, lines[0])
		}
		if lines[1] != hostNet {
			t.Errorf("shared pid %v: network namespace %s, want the node's %s", share, lines[1], hostNet)
		}
		if !strings.Contains(out, "\nlo\n") {
			t.Errorf("shared pid %v: /sys/class/net lacks lo: %q", share, out)
		}
		removePod(t, d, podID)
	}
}

func testUsernsRefused(t *testing.T, d *testutil.Daemon) {
	two := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000, Length: 100}, {ContainerId: 100, HostId: 5000, Length: 100}}
	notZero := []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 1000, Length: 100000}}
	for name, u := range map[string]*runtimeapi.UserNamespace{
		"two mappings":    {Mode: runtimeapi.NamespaceMode_POD, Uids: two, Gids: two},
		"0 not mapped":    {Mode: runtimeapi.NamespaceMode_POD, Uids: notZero, Gids: notZero},
		"no mappings":     {Mode: runtimeapi.NamespaceMode_POD},
		"mode CONTAINER":  {Mode: runtimeapi.NamespaceMode_CONTAINER},
		"mode TARGET":     {Mode: runtimeapi.NamespaceMode_TARGET},
		"NODE with a map": {Mode: runtimeapi.NamespaceMode_NODE, Uids: mapping(1000), Gids: mapping(1000)},
	} {
		_, err := d.Runtime.RunPodSandbox(context.Background(), usernsPod(t, d, "bad", u), "")
		wantCode(t, name, err, codes.InvalidArgument)
	}
}
