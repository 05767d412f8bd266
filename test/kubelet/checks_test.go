package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// live keeps a container running until SIGTERM, on which it exits 0 (a
// shell as PID 1 has no default action for TERM).
const live = "trap 'exit 0' TERM; " + loop

const graceSeconds = 6

// basePods are the scenario pods started together at the beginning.
func (e *env) basePods() []pod {
	ns := e.ns
	withMarker := func(pod string, c container, script string) container {
		s := shell(c.Name, markerOf(pod, c.Name), script)
		s.Lifecycle, s.SecurityContext, s.VolumeMounts, s.RestartPolicy = c.Lifecycle, c.SecurityContext, c.VolumeMounts, c.RestartPolicy
		return s
	}

	// grace: one container ignores SIGTERM (killed after the grace period),
	// one handles it (exits at once) after a preStop hook; both write to
	// a host dir so the order hook-then-TERM can be read afterwards.
	grace := newPod(ns, "grace", graceSeconds,
		withMarker("grace", container{Name: "ignores"}, "trap '' TERM; "+loop),
		withMarker("grace", container{
			Name:         "handles",
			VolumeMounts: []mount{{Name: "hook", MountPath: "/hook"}},
			Lifecycle: &lifecycle{PreStop: &handler{Exec: &execAction{
				Command: []string{"sh", "-c", "echo prestop >> /hook/grace"}}}},
		}, "trap 'echo term >> /hook/grace; exit 0' TERM; "+loop))
	grace.Spec.Volumes = []volume{{Name: "hook", HostPath: &hostPath{Path: e.hostDir, Type: "Directory"}}}

	// sidecar: a restartable init container; main takes ~2s to exit on
	// TERM, so if both were stopped together the sidecar would exit first.
	sidecar := newPod(ns, "sidecar", 10,
		withMarker("sidecar", container{Name: "main"}, "trap 'sleep 2; exit 0' TERM; "+loop))
	sidecar.Spec.InitContainers = []container{withMarker("sidecar", container{Name: "side", RestartPolicy: "Always"}, live)}

	sharepid := newPod(ns, "sharepid", 2,
		withMarker("sharepid", container{Name: "a"}, live), withMarker("sharepid", container{Name: "b"}, live))
	sharepid.Spec.ShareProcessNamespace = ptr(true)

	hostnet := newPod(ns, "hostnet", 2, withMarker("hostnet", container{Name: "c"}, live))
	hostnet.Spec.HostNetwork = true
	hostpid := newPod(ns, "hostpid", 2, withMarker("hostpid", container{Name: "c"}, live))
	hostpid.Spec.HostPID = true
	hostipc := newPod(ns, "hostipc", 2, withMarker("hostipc", container{Name: "c"}, live))
	hostipc.Spec.HostIPC = true

	secctx := newPod(ns, "secctx", 2,
		withMarker("secctx", container{Name: "user", VolumeMounts: []mount{{Name: "data", MountPath: "/data"}}}, live),
		withMarker("secctx", container{Name: "locked", SecurityContext: &ctrSecurity{
			RunAsUser:              ptr(int64(0)),
			ReadOnlyRootFilesystem: ptr(true),
			Capabilities:           &capabilities{Drop: []string{"NET_RAW", "CHOWN"}},
		}}, live))
	secctx.Spec.SecurityContext = &podSecurity{
		RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(3000)), FSGroup: ptr(int64(2000)),
		SeccompProfile: &seccomp{Type: "RuntimeDefault"},
	}
	secctx.Spec.Volumes = []volume{{Name: "data", EmptyDir: &struct{}{}}}

	return []pod{grace, sidecar, sharepid, hostnet, hostpid, hostipc, secctx}
}

func (e *env) checkSharePID(t *testing.T) {
	ps, err := e.k.run(e.ns, "sharepid", "b", "ps")
	if err != nil {
		t.Fatalf("ps in sharepid/b: %v", err)
	}
	if !strings.Contains(ps, markerOf("sharepid", "a")) {
		t.Errorf("ps in sharepid/b does not show container a's process:\n%s", ps)
	}
	// The control: containers of a pod without the flag do not see each other.
	ps, err = e.k.run(e.ns, "grace", "handles", "ps")
	if err != nil {
		t.Fatalf("ps in grace/handles: %v", err)
	}
	if strings.Contains(ps, markerOf("grace", "ignores")) {
		t.Errorf("ps in grace/handles shows the other container's process without shareProcessNamespace:\n%s", ps)
	}
}

func (e *env) checkHostNamespaces(t *testing.T) {
	host := map[string]string{}
	for _, kind := range []string{"net", "pid", "ipc"} {
		l, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		host[kind] = l
	}
	for _, c := range []struct{ pod, ctr, shared string }{
		{"hostnet", "c", "net"}, {"hostpid", "c", "pid"}, {"hostipc", "c", "ipc"}, {"grace", "handles", ""},
	} {
		for _, kind := range []string{"net", "pid", "ipc"} {
			out, err := e.k.run(e.ns, c.pod, c.ctr, "readlink", "/proc/self/ns/"+kind)
			if err != nil {
				t.Errorf("readlink in %s/%s: %v", c.pod, c.ctr, err)
				continue
			}
			got := strings.TrimSpace(out)
			if want := c.shared == kind; (got == host[kind]) != want {
				t.Errorf("%s/%s: %s namespace %s, host's %s; want shared=%v", c.pod, c.ctr, kind, got, host[kind], want)
			}
		}
	}
}

func (e *env) checkSecurityContext(t *testing.T) {
	run := func(ctr string, cmd ...string) string {
		t.Helper()
		out, err := e.k.run(e.ns, "secctx", ctr, cmd...)
		if err != nil {
			t.Errorf("%v in secctx/%s: %v", cmd, ctr, err)
		}
		return strings.TrimSpace(out)
	}
	for _, c := range []struct {
		ctr  string
		cmd  []string
		want string
	}{
		{"user", []string{"id", "-u"}, "1000"},
		{"user", []string{"id", "-g"}, "3000"},
		{"user", []string{"stat", "-c", "%g", "/data"}, "2000"},
		{"locked", []string{"id", "-u"}, "0"},
		{"locked", []string{"id", "-g"}, "3000"},
	} {
		if got := run(c.ctr, c.cmd...); got != c.want {
			t.Errorf("%v in secctx/%s: %q, want %q", c.cmd, c.ctr, got, c.want)
		}
	}
	if groups := strings.Fields(run("user", "id", "-G")); !contains(groups, "2000") || !contains(groups, "3000") {
		t.Errorf("groups of secctx/user %v lack fsGroup 2000 or runAsGroup 3000", groups)
	}
	for _, ctr := range []string{"user", "locked"} {
		st := procStatus(run(ctr, "cat", "/proc/self/status"))
		if st["Seccomp"] != "2" {
			t.Errorf("secctx/%s: Seccomp %q, want 2 (filter: RuntimeDefault)", ctr, st["Seccomp"])
		}
		if ctr != "locked" {
			continue
		}
		// Dropped: CHOWN (0), NET_RAW (13); kept: KILL (5) of the defaults.
		for _, f := range []string{"CapEff", "CapBnd"} {
			v, err := strconv.ParseUint(st[f], 16, 64)
			if err != nil {
				t.Errorf("secctx/locked %s %q: %v", f, st[f], err)
				continue
			}
			if v&(1<<0) != 0 || v&(1<<13) != 0 || v&(1<<5) == 0 {
				t.Errorf("secctx/locked %s = %s: want CHOWN and NET_RAW dropped, KILL kept", f, st[f])
			}
		}
	}
	if _, stderr, code := e.execSync(t, e.ctrID(t, "secctx", "locked"), "touch", "/probe"); code == 0 ||
		!strings.Contains(stderr, "Read-only file system") {
		t.Errorf("touch / in a readOnlyRootFilesystem container: exit %d, %q", code, stderr)
	}
	if _, stderr, code := e.execSync(t, e.ctrID(t, "secctx", "user"), "touch", "/data/ok"); code != 0 {
		t.Errorf("touch in the fsGroup emptyDir as uid 1000: exit %d, %q", code, stderr)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// procStatus parses /proc/PID/status into key -> value.
func procStatus(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// checkTermination deletes grace and sidecar together and reads, from
// berthd's container statuses, when and how each container ended.
func (e *env) checkTermination(t *testing.T) {
	ids := map[string]string{
		"ignores": e.ctrID(t, "grace", "ignores"), "handles": e.ctrID(t, "grace", "handles"),
		"side": e.ctrID(t, "sidecar", "side"), "main": e.ctrID(t, "sidecar", "main"),
	}
	side, err := e.containerStatus(ids["side"])
	if err != nil {
		t.Fatal(err)
	}
	main, err := e.containerStatus(ids["main"])
	if err != nil {
		t.Fatal(err)
	}
	if side.StartedAt >= main.CreatedAt {
		t.Errorf("sidecar started at %s, main created at %s: the sidecar must start first",
			time.Unix(0, side.StartedAt).Format(time.StampMicro), time.Unix(0, main.CreatedAt).Format(time.StampMicro))
	}
	e.k.del(t, "grace")
	e.k.del(t, "sidecar")
	t0 := time.Now()
	ended := map[string]exit{}
	for deadline := t0.Add(45 * time.Second); len(ended) < len(ids) && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for name, id := range ids {
			if _, ok := ended[name]; ok {
				continue
			}
			st, err := e.containerStatus(id)
			if err == nil && st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				ended[name] = exit{at: time.Unix(0, st.FinishedAt), code: st.ExitCode}
			} else if err != nil {
				if x, ok := e.exitFromLog(id); ok {
					ended[name] = x
				}
			}
		}
	}
	if len(ended) < len(ids) {
		t.Fatalf("grace and sidecar containers not all exited 45s after their pods were deleted: exited %v", keys(ended))
	}
	at := func(n string) time.Time { return ended[n].at }
	for n, x := range ended {
		t.Logf("%s: exit %d at t0+%s", n, x.code, at(n).Sub(t0).Round(10*time.Millisecond))
	}
	if c := ended["handles"].code; c != 0 {
		t.Errorf("the container handling SIGTERM exited %d, want 0", c)
	}
	// Up to fileCheckFrequency (2s) until kubelet sees the manifest gone.
	if d := at("handles").Sub(t0); d > 8*time.Second {
		t.Errorf("the container handling SIGTERM exited %s after its pod was deleted, want at once", d)
	}
	if c := ended["ignores"].code; c != 137 {
		t.Errorf("the container ignoring SIGTERM exited %d, want 137 (SIGKILL)", c)
	}
	lo, hi := graceSeconds*time.Second-1500*time.Millisecond, graceSeconds*time.Second+4*time.Second
	if d := at("ignores").Sub(at("handles")); d < lo || d > hi {
		t.Errorf("the container ignoring SIGTERM was killed %s after the other one exited, want the grace period %ds", d, graceSeconds)
	}
	if b, err := os.ReadFile(filepath.Join(e.hostDir, "grace")); err != nil || string(b) != "prestop\nterm\n" {
		t.Errorf("preStop hook then SIGTERM: host file holds %q (%v), want \"prestop\\nterm\\n\"", b, err)
	}
	for _, n := range []string{"side", "main"} {
		if c := ended[n].code; c != 0 {
			t.Errorf("sidecar pod container %s exited %d, want 0 (stopped by SIGTERM)", n, c)
		}
	}
	if !at("main").Before(at("side")) {
		t.Errorf("sidecar exited at t0+%s, main at t0+%s: the sidecar must stop after the main container",
			at("side").Sub(t0), at("main").Sub(t0))
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// checkManyPods starts 30 static pods at once and reports how long until
// all are Running and Ready, then removes every pod of the run (these 30
// and the scenario pods left) and reports how long until they stopped and
// until berthd had none of the 30 left: kubelet removes the containers and
// sandboxes of deleted pods in its once-a-minute garbage collection.
func (e *env) checkManyPods(t *testing.T) {
	const n = 30
	var names []string
	expect := map[string][]string{}
	for i := range n {
		name := fmt.Sprintf("many-%02d", i)
		names = append(names, name)
		expect[name] = []string{"c"}
		e.k.put(t, newPod(e.ns, name, 2, shell("c", markerOf(name, "c"), live)))
	}
	took, err := waitFor(4*time.Minute, fmt.Sprintf("%d pods Running and Ready", n), func() bool {
		for _, name := range names {
			if p, ok := e.k.pod(e.ns, name); !ok || !p.ready() {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v:%s", err, e.describe(names...))
	}
	t.Logf("REPORT: %d static pods Running and Ready %s after their manifests were written", n, took.Round(100*time.Millisecond))
	e.checkStatsAndLogs(t, expect)

	e.snapshot(t) // records the container IDs for the cgroup check
	entries, _ := os.ReadDir(e.k.manifests)
	for _, m := range entries {
		e.k.del(t, strings.TrimSuffix(m.Name(), ".json"))
	}
	ours := func(o runtimeObjects, state string) int {
		c := 0
		for _, s := range o.containers {
			if strings.HasPrefix(s, "many-") && strings.Contains(s, state) {
				c++
			}
		}
		for _, s := range o.sandboxes {
			if strings.HasPrefix(s, "many-") && strings.Contains(s, state) {
				c++
			}
		}
		return c
	}
	stopped, err := waitFor(2*time.Minute, "the 30 pods stopped", func() bool {
		o := e.snapshot(t)
		return ours(o, "_RUNNING") == 0 && ours(o, "_READY") == 0
	})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := waitFor(3*time.Minute, "the 30 pods gone from berthd", func() bool { return ours(e.snapshot(t), "") == 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("REPORT: %d pods removed: all stopped %s, all gone from berthd %s after their manifests were removed",
		n, stopped.Round(100*time.Millisecond), (gone + stopped).Round(100*time.Millisecond))
}
