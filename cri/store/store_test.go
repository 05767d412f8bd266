package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestPersistAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	db := openDB(t, path)
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	sb := Sandbox{
		SandboxMeta: SandboxMeta{ID: "aaaa1111", Name: "pod_a", Labels: map[string]string{"app": "x"}, CreatedAt: 1,
			Config: &runtime.PodSandboxConfig{Hostname: "a", Linux: &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods/a"}}},
		Status: SandboxStatus{State: SandboxReady, IPs: []string{"10.0.0.2"}, Pod: Pod{ID: "aaaa1111", NetNS: "/run/netns/a", InfraPID: 7}},
	}
	if err := s.AddSandbox(sb); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSandbox(sb); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second add: %v", err)
	}
	c := Container{ContainerMeta: ContainerMeta{ID: "bbbb2222", SandboxID: sb.ID, Name: "ctr_a", CreatedAt: 2}, Status: ContainerStatus{State: ContainerCreated}}
	if err := s.AddContainer(c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateContainerStatus(c.ID, func(st ContainerStatus) (ContainerStatus, error) {
		st.State = ContainerExited
		st.ExitCode = 7
		st.Resources = Resources{CPUQuota: 5000, Unified: map[string]string{"memory.high": "1"}}
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s2, err := Open(openDB(t, path))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Container("bbbb")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.State != ContainerExited || got.Status.ExitCode != 7 || got.Status.Resources.Unified["memory.high"] != "1" {
		t.Fatalf("reloaded container = %+v", got)
	}
	gsb, err := s2.Sandbox(sb.ID)
	if err != nil || gsb.Status.IPs[0] != "10.0.0.2" || gsb.Labels["app"] != "x" || gsb.Status.Pod != sb.Status.Pod ||
		gsb.Config.GetLinux().GetCgroupParent() != "/kubepods/a" || gsb.Config.GetHostname() != "a" {
		t.Fatalf("reloaded sandbox = %+v, %v", gsb, err)
	}
	if _, err := s2.Reserve("pod_a", "other"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("name of a reloaded sandbox must stay reserved: %v", err)
	}
	if got := s2.ContainersOf(sb.ID); len(got) != 1 {
		t.Fatalf("ContainersOf = %d", len(got))
	}
	if err := s2.DeleteContainer(c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Container(c.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted container: %v", err)
	}
	if _, err := s2.Reserve("ctr_a", "new"); err != nil {
		t.Fatalf("name of a deleted container must be free: %v", err)
	}
}

func TestCopiesAreIndependent(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSandbox(Sandbox{SandboxMeta: SandboxMeta{ID: "x", Name: "n"}, Status: SandboxStatus{IPs: []string{"1.1.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Sandbox("x")
	a.Status.IPs[0] = "changed"
	b, _ := s.Sandbox("x")
	if b.Status.IPs[0] != "1.1.1.1" {
		t.Fatal("a copy shares status with the store")
	}
	// What an update returns is the caller's too: the store keeps a copy.
	ips := []string{"2.2.2.2"}
	unified := map[string]string{"k": "v"}
	if _, err := s.UpdateSandboxStatus("x", func(st SandboxStatus) (SandboxStatus, error) {
		st.IPs = ips
		st.Resources.Unified = unified
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	ips[0], unified["k"] = "changed", "changed"
	if c, _ := s.Sandbox("x"); c.Status.IPs[0] != "2.2.2.2" || c.Status.Resources.Unified["k"] != "v" {
		t.Fatalf("the store shares status with an update's caller: %+v", c.Status)
	}
}

func TestUpdateErrorPersistsNothing(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddContainer(Container{ContainerMeta: ContainerMeta{ID: "c", Name: "n"}}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateContainerStatus("c", func(st ContainerStatus) (ContainerStatus, error) {
		st.ExitCode = 3
		return st, boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if c, _ := s.Container("c"); c.Status.ExitCode != 0 {
		t.Fatal("failed update was applied")
	}
}

func TestPrefixLookup(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"abc1", "abc2"} {
		if err := s.AddContainer(Container{ContainerMeta: ContainerMeta{ID: id, Name: id}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Container("abc"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if c, err := s.Container("abc2"); err != nil || c.ID != "abc2" {
		t.Errorf("exact: %v", err)
	}
	if _, err := s.Container("zzz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	if _, err := s.Container(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty: %v", err)
	}
}

func TestCurrentConfig(t *testing.T) {
	sb := Sandbox{
		SandboxMeta: SandboxMeta{Config: &runtime.PodSandboxConfig{
			Metadata: &runtime.PodSandboxMetadata{Name: "p"},
			Linux: &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod1",
				Resources: &runtime.LinuxContainerResources{CpuShares: 100}, Overhead: &runtime.LinuxContainerResources{CpuShares: 7}},
		}},
		Status: SandboxStatus{Resources: Resources{CPUShares: 300}},
	}
	got := sb.CurrentConfig()
	if got.GetLinux().GetCgroupParent() != "/kubepods/pod1" || got.GetMetadata().GetName() != "p" ||
		got.GetLinux().GetResources().GetCpuShares() != 300 || got.GetLinux().GetOverhead().GetCpuShares() != 7 {
		t.Errorf("current pod config %v", got)
	}
	if sb.Config.GetLinux().GetResources().GetCpuShares() != 100 {
		t.Error("CurrentConfig changed the record's config")
	}
	c := Container{
		ContainerMeta: ContainerMeta{Config: &runtime.ContainerConfig{Tty: true}},
		Status:        ContainerStatus{Resources: Resources{MemoryLimitInBytes: 1 << 20, HugepageLimits: []HugepageLimit{{PageSize: "2MB", Limit: 4}}}},
	}
	cc := c.CurrentConfig()
	if !cc.GetTty() || cc.GetLinux().GetResources().GetMemoryLimitInBytes() != 1<<20 ||
		cc.GetLinux().GetResources().GetHugepageLimits()[0].GetLimit() != 4 || c.Config.GetLinux() != nil {
		t.Errorf("current container config %v", cc)
	}
}

// fullNode fills a store as the full-node bench's N=250 does: 250 pods, a
// third of them with three containers.
func fullNode(tb testing.TB) (*Store, []string) {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(tb.TempDir(), "meta.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	s, err := Open(db)
	if err != nil {
		tb.Fatal(err)
	}
	var pods []string
	at := int64(0)
	for i := range 250 {
		id := fmt.Sprintf("pod%04d", i)
		at++
		if err := s.AddSandbox(Sandbox{SandboxMeta: SandboxMeta{ID: id, Name: "pod_" + id, CreatedAt: at}}); err != nil {
			tb.Fatal(err)
		}
		pods = append(pods, id)
		n := 1
		if i%3 == 0 {
			n = 3
		}
		for j := range n {
			at++
			// Later pods' containers are created first, so order is
			// by creation time, not by ID.
			c := Container{ContainerMeta: ContainerMeta{ID: fmt.Sprintf("c%04d-%d", 1000-i, j), SandboxID: id, Name: fmt.Sprintf("ctr_%d_%s", j, id), CreatedAt: at}}
			if err := s.AddContainer(c); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return s, pods
}

func TestContainersOf(t *testing.T) {
	s, pods := fullNode(t)
	got := s.ContainersOf(pods[3])
	if len(got) != 3 {
		t.Fatalf("ContainersOf = %d records, want 3", len(got))
	}
	for i, c := range got {
		if c.SandboxID != pods[3] || (i > 0 && c.CreatedAt <= got[i-1].CreatedAt) {
			t.Errorf("record %d: %s of %s created %d, want the pod's own in creation order", i, c.ID, c.SandboxID, c.CreatedAt)
		}
	}
	if got := s.ContainersOf("nope"); len(got) != 0 {
		t.Errorf("ContainersOf an unknown pod = %d records", len(got))
	}
}

// BenchmarkContainersOfEveryPod is what a ListPodSandboxStats at 250 pods
// asks of the store.
func BenchmarkContainersOfEveryPod(b *testing.B) {
	s, pods := fullNode(b)
	for b.Loop() {
		for _, p := range pods {
			s.ContainersOf(p)
		}
	}
}

// BenchmarkRelist is what a relist (ListPodSandbox, ListContainers) at 250
// pods asked of the store every second before the list handlers read
// through EachSandbox and EachContainer (BenchmarkRelistEach).
func BenchmarkRelist(b *testing.B) {
	s, _ := fullNode(b)
	for b.Loop() {
		s.Sandboxes()
		s.Containers()
	}
}

func BenchmarkRelistEach(b *testing.B) {
	s, _ := fullNode(b)
	for b.Loop() {
		var n int64
		s.EachSandbox(func(sb *Sandbox) { n += sb.CreatedAt })
		s.EachContainer(func(c *Container) { n += c.CreatedAt })
	}
}

// EachSandbox and EachContainer visit every record once, as it is now.
func TestEach(t *testing.T) {
	s, pods := fullNode(t)
	seen := map[string]int{}
	s.EachSandbox(func(sb *Sandbox) { seen[sb.ID]++ })
	for _, p := range pods {
		if seen[p] != 1 {
			t.Fatalf("sandbox %s visited %d times", p, seen[p])
		}
	}
	if len(seen) != len(pods) {
		t.Fatalf("visited %d sandboxes, have %d", len(seen), len(pods))
	}
	all := s.Containers()
	target := all[0].ID
	if _, err := s.UpdateContainerStatus(target, func(st ContainerStatus) (ContainerStatus, error) {
		st.State = ContainerExited
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	n := 0
	s.EachContainer(func(c *Container) {
		n++
		if c.ID == target && c.Status.State != ContainerExited {
			t.Errorf("container %s: state %v after the update", c.ID, c.Status.State)
		}
	})
	if n != len(all) {
		t.Fatalf("visited %d containers, have %d", n, len(all))
	}
}

// BenchmarkOpen is the store's part of a restart at 250 pods: reopening
// the file and loading every record, with bbolt's fsyncs on as berthd
// runs it.
func BenchmarkOpen(b *testing.B) {
	s, _ := fullNode(b)
	path := s.db.Path()
	if err := s.db.Close(); err != nil {
		b.Fatal(err)
	}
	benchOpen(b, path)
}

// benchOpen reopens the store file at path once per iteration.
func benchOpen(b *testing.B, path string) {
	for b.Loop() {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Open(db); err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// Opening a store that needs no migration commits nothing: a restart pays
// no bbolt commit (its fdatasyncs) before serving.
func TestOpenCommitsNothing(t *testing.T) {
	s, _ := fullNode(t)
	path := s.db.Path()
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	txid := func() (id int) {
		if err := db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	before := txid()
	s, err = Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if after := txid(); after != before {
		t.Errorf("Open committed %d transactions, want none", after-before)
	}
	if len(s.Sandboxes()) != 250 || len(s.Containers()) != 250+2*84 {
		t.Errorf("loaded %d sandboxes and %d containers", len(s.Sandboxes()), len(s.Containers()))
	}
}

// kubeletNode fills a store with records the size kubelet's configs give
// them (labels, annotations, env, mounts, resources and security context
// of a typical pod), 250 pods with a third of them holding three
// containers, and returns the file's path, closed.
func kubeletNode(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "meta.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Open(db)
	if err != nil {
		tb.Fatal(err)
	}
	at := int64(0)
	for i := range 250 {
		ns, name, uid := "team-"+fmt.Sprint(i%7), fmt.Sprintf("web-%04d-7d9f8c6b5-x2x4k", i), fmt.Sprintf("0b6c5c0e-%04d-4f43-9b7e-3f1d8a6c2e11", i)
		labels := map[string]string{"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.uid": uid, "app": "web", "pod-template-hash": "7d9f8c6b5"}
		annotations := map[string]string{"kubernetes.io/config.seen": "2026-12-05T06:11:02.123456789Z", "kubernetes.io/config.source": "api"}
		pod := &runtime.PodSandboxConfig{
			Metadata: &runtime.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid}, Hostname: name,
			LogDirectory: "/var/log/pods/" + ns + "_" + name + "_" + uid, DnsConfig: &runtime.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{ns + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}, Options: []string{"ndots:5"}},
			PortMappings: []*runtime.PortMapping{{ContainerPort: 8080}}, Labels: labels, Annotations: annotations,
			Linux: &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods/burstable/pod" + uid, SecurityContext: &runtime.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}, Seccomp: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}}},
		}
		id := fmt.Sprintf("%064d", i)
		at++
		if err := s.AddSandbox(Sandbox{SandboxMeta: SandboxMeta{ID: id, Name: "pod_" + id, CreatedAt: at, Labels: labels, Annotations: annotations, Config: pod},
			Status: SandboxStatus{State: SandboxReady}}); err != nil {
			tb.Fatal(err)
		}
		n := 1
		if i%3 == 0 {
			n = 3
		}
		for j := range n {
			at++
			cname := fmt.Sprintf("app-%d", j)
			cl := map[string]string{"io.kubernetes.container.name": cname, "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.uid": uid}
			ca := map[string]string{"io.kubernetes.container.hash": "9c1a0a3e", "io.kubernetes.container.restartCount": "0", "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
				"io.kubernetes.container.terminationMessagePolicy": "File", "io.kubernetes.pod.terminationGracePeriod": "30", "io.kubernetes.container.ports": `[{"name":"http","containerPort":8080,"protocol":"TCP"}]`}
			var envs []*runtime.KeyValue
			for e := range 12 {
				envs = append(envs, &runtime.KeyValue{Key: fmt.Sprintf("SERVICE_%d_PORT", e), Value: []byte("tcp://10.96.0." + fmt.Sprint(e) + ":443")})
			}
			cfg := &runtime.ContainerConfig{
				Metadata: &runtime.ContainerMetadata{Name: cname}, Image: &runtime.ImageSpec{Image: "sha256:" + fmt.Sprintf("%064x", j), UserSpecifiedImage: "registry.example/team/web:1.4.2"},
				Command: []string{"/app/server"}, Args: []string{"--listen=:8080", "--log-level=info"}, Envs: envs, Labels: cl, Annotations: ca,
				LogPath: cname + "/0.log",
				Mounts: []*runtime.Mount{
					{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~projected/kube-api-access-x2x4k", Readonly: true},
					{ContainerPath: "/etc/hosts", HostPath: "/var/lib/kubelet/pods/" + uid + "/etc-hosts"},
					{ContainerPath: "/dev/termination-log", HostPath: "/var/lib/kubelet/pods/" + uid + "/containers/" + cname + "/5a1b2c3d"},
				},
				Linux: &runtime.LinuxContainerConfig{
					Resources: &runtime.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 102, MemoryLimitInBytes: 256 << 20, OomScoreAdj: 999},
					SecurityContext: &runtime.LinuxContainerSecurityContext{NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER},
						RunAsUser: &runtime.Int64Value{Value: 1000}, MaskedPaths: []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"},
						ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}, Seccomp: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}},
				},
			}
			c := Container{ContainerMeta: ContainerMeta{ID: fmt.Sprintf("%063d%d", i, j), SandboxID: id, Name: cname + "_" + id, Metadata: ContainerMetadata{Name: cname},
				Labels: cl, Annotations: ca, Config: cfg, Image: "registry.example/team/web:1.4.2", ImageID: "sha256:" + fmt.Sprintf("%064x", j), ImageRef: "registry.example/team/web@sha256:" + fmt.Sprintf("%064x", j),
				RuntimeHandler: "", LogPath: "/var/log/pods/" + ns + "_" + name + "_" + uid + "/" + cname + "/0.log", Bundle: "/run/berth/containers/" + fmt.Sprintf("%063d%d", i, j),
				Rootfs: "/run/berth/containers/" + fmt.Sprintf("%063d%d", i, j) + "/rootfs", CreatedAt: at},
				Status: ContainerStatus{State: ContainerRunning, Pid: 10000 + i, ShimPid: 9000 + i, ShimStart: 123456, StartedAt: at}}
			if err := s.AddContainer(c); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkOpenKubeletNode is BenchmarkOpen with records of kubelet's size.
func BenchmarkOpenKubeletNode(b *testing.B) {
	benchOpen(b, kubeletNode(b))
}

// Every change of a record moves its kind's generation, and nothing else
// does: a failed update, a read, or removing what is not there.
func TestGenerations(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	sbGen, ctrGen := s.Generations()
	step := func(what string, wantSb, wantCtr bool) {
		t.Helper()
		sb, ctr := s.Generations()
		if (sb != sbGen) != wantSb || (ctr != ctrGen) != wantCtr {
			t.Fatalf("%s: generations %d/%d -> %d/%d, want sandboxes changed %v, containers %v", what, sbGen, ctrGen, sb, ctr, wantSb, wantCtr)
		}
		sbGen, ctrGen = sb, ctr
	}
	if err := s.AddSandbox(Sandbox{SandboxMeta: SandboxMeta{ID: "p", Name: "pn"}}); err != nil {
		t.Fatal(err)
	}
	step("add sandbox", true, false)
	if err := s.AddContainer(Container{ContainerMeta: ContainerMeta{ID: "c", SandboxID: "p", Name: "cn"}}); err != nil {
		t.Fatal(err)
	}
	step("add container", false, true)
	if err := s.AddContainer(Container{ContainerMeta: ContainerMeta{ID: "c", SandboxID: "p", Name: "cn2"}}); err == nil {
		t.Fatal("a second container under one ID was added")
	}
	step("add a duplicate container", false, false)
	_, _ = s.Container("c")
	s.EachContainer(func(*Container) {})
	step("read", false, false)
	boom := errors.New("boom")
	if _, err := s.UpdateContainerStatus("c", func(st ContainerStatus) (ContainerStatus, error) { return st, boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	step("failed container update", false, false)
	if _, err := s.UpdateContainerStatus("c", func(st ContainerStatus) (ContainerStatus, error) {
		st.State = ContainerExited
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	step("container update", false, true)
	if _, err := s.UpdateSandboxStatus("p", func(st SandboxStatus) (SandboxStatus, error) {
		st.State = SandboxNotReady
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	step("sandbox update", true, false)
	if err := s.DeleteContainer("c"); err != nil {
		t.Fatal(err)
	}
	step("delete container", false, true)
	if err := s.DeleteContainer("c"); err != nil {
		t.Fatal(err)
	}
	step("delete a missing container", false, false)
	if err := s.DeleteSandbox("p"); err != nil {
		t.Fatal(err)
	}
	step("delete sandbox", true, false)
}
