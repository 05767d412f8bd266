package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestCreateDefaults(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, "")
	ctx := context.Background()
	spec := Spec{
		ID:       "pod1",
		Dir:      filepath.Join(e.root, "pods", "pod1"),
		Hostname: "web-0",
		DNS: &DNS{
			Servers:  []string{"10.96.0.10", "fd00::a"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local"},
			Options:  []string{"ndots:5", "edns0"},
		},
	}
	p, err := e.c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := Pod{
		ID:           "pod1",
		Dir:          spec.Dir,
		NetNS:        filepath.Join(e.root, "run", "netns", "pod1"),
		IPCNS:        filepath.Join(e.root, "run", "ipcns", "pod1"),
		UTSNS:        filepath.Join(e.root, "run", "utsns", "pod1"),
		HostnamePath: filepath.Join(spec.Dir, "hostname"),
		HostsPath:    filepath.Join(spec.Dir, "hosts"),
		ResolvPath:   filepath.Join(spec.Dir, "resolv.conf"),
		ShmPath:      filepath.Join(spec.Dir, "shm"),
		NoInfra:      true,
	}
	if p != want {
		t.Fatalf("pod:\n got %+v\nwant %+v", p, want)
	}
	// Pod files are their containers' (bind mounts): no other user's.
	for _, d := range []string{spec.Dir, filepath.Dir(spec.Dir)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v, want 0700", d, fi.Mode().Perm())
		}
	}

	for _, ns := range []struct{ pin, self string }{
		{p.NetNS, "/proc/self/ns/net"}, {p.IPCNS, "/proc/self/ns/ipc"}, {p.UTSNS, "/proc/self/ns/uts"},
	} {
		m := mountOf(t, ns.pin)
		if m == nil || m.FSType != "nsfs" {
			t.Errorf("pin %s: mount %+v, want nsfs", ns.pin, m)
		}
		if nsInode(t, ns.pin) == nsInode(t, ns.self) {
			t.Errorf("pin %s is the host's namespace", ns.pin)
		}
	}

	var ifaces []net.Interface
	err = inNamespace(p.NetNS, unix.CLONE_NEWNET, func() error {
		var err error
		ifaces, err = net.Interfaces()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" || ifaces[0].Flags&net.FlagUp == 0 {
		t.Errorf("netns interfaces = %+v, want only lo, up", ifaces)
	}

	var uts unix.Utsname
	if err := inNamespace(p.UTSNS, unix.CLONE_NEWUTS, func() error { return unix.Uname(&uts) }); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(uts.Nodename[:]); got != "web-0" {
		t.Errorf("hostname in uts ns = %q, want web-0", got)
	}
	if h, _ := os.Hostname(); h == "web-0" {
		t.Errorf("host hostname changed to %q", h)
	}

	if got := readFile(t, p.HostnamePath); got != "web-0\n" {
		t.Errorf("hostname file = %q", got)
	}
	wantResolv := "search default.svc.cluster.local svc.cluster.local\n" +
		"nameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n"
	if got := readFile(t, p.ResolvPath); got != wantResolv {
		t.Errorf("resolv.conf = %q, want %q", got, wantResolv)
	}
	if got := readFile(t, p.HostsPath); !strings.HasPrefix(got, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n") {
		t.Errorf("hosts = %q", got)
	}
	checkShm(t, p.ShmPath, 64<<20)
	if e.c.PidNSPath(p) != "" || e.c.InfraAlive(p) {
		t.Errorf("pod without SharePID has infra: %q", e.c.PidNSPath(p))
	}

	// berthd persists the record and hands it back, possibly after restart.
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back Pod
	if err := json.Unmarshal(raw, &back); err != nil || back != p {
		t.Fatalf("json round trip: %+v, %v", back, err)
	}
	for i := 0; i < 2; i++ {
		if err := e.c.Stop(ctx, back); err != nil {
			t.Fatalf("stop #%d: %v", i, err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := e.c.Remove(ctx, back); err != nil {
			t.Fatalf("remove #%d: %v", i, err)
		}
	}
	assertNothingLeft(t, e)
}

func checkShm(t *testing.T, path string, size int64) {
	t.Helper()
	m := mountOf(t, path)
	if m == nil || m.FSType != "tmpfs" {
		t.Fatalf("shm %s: mount %+v, want tmpfs", path, m)
	}
	for _, o := range []string{"nosuid", "nodev", "noexec"} {
		if !strings.Contains(","+m.Options+",", ","+o+",") {
			t.Errorf("shm options %q lack %s", m.Options, o)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := os.ModeDir | os.ModeSticky | 0o777; fi.Mode() != want {
		t.Errorf("shm mode = %v, want %v", fi.Mode(), want)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * st.Bsize; got != size {
		t.Errorf("shm size = %d, want %d", got, size)
	}
}

func assertNothingLeft(t *testing.T, e *env) {
	t.Helper()
	if m := mountsUnder(t, e.root); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if f := filesUnder(t, e.root); len(f) > 0 {
		t.Errorf("files left: %v", f)
	}
	if _, err := os.Stat(filepath.Join(e.root, "pods", "pod1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod dir left: %v", err)
	}
}

func TestHostModes(t *testing.T) {
	requireRoot(t)
	hostName, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                  string
		hostNet, hostIPC      bool
		wantNet, wantIPC, shm bool
	}{
		{name: "host network", hostNet: true, wantIPC: true, shm: true},
		{name: "host ipc", hostIPC: true, wantNet: true},
		{name: "all host", hostNet: true, hostIPC: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			ctx := context.Background()
			spec := Spec{ID: "pod1", Dir: filepath.Join(e.root, "pods", "pod1"), Hostname: "ignored-if-hostnet",
				HostNetwork: tc.hostNet, HostIPC: tc.hostIPC, ShmSize: 1 << 20}
			p, err := e.c.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if (p.NetNS != "") != tc.wantNet || (p.UTSNS != "") != tc.wantNet || (p.IPCNS != "") != tc.wantIPC {
				t.Errorf("pins net=%q uts=%q ipc=%q", p.NetNS, p.UTSNS, p.IPCNS)
			}
			if (p.ShmPath != "") != tc.shm {
				t.Errorf("shm path %q, want shm=%v", p.ShmPath, tc.shm)
			}
			if tc.shm {
				checkShm(t, p.ShmPath, 1<<20)
			} else if _, err := os.Stat(filepath.Join(spec.Dir, "shm")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("shm dir exists with host ipc: %v", err)
			}
			wantHost := "ignored-if-hostnet\n"
			if tc.hostNet {
				wantHost = hostName + "\n"
				hosts, _ := os.ReadFile("/etc/hosts")
				if got := readFile(t, p.HostsPath); got != string(hosts) {
					t.Errorf("host network hosts = %q, want host's", got)
				}
			}
			if got := readFile(t, p.HostnamePath); got != wantHost {
				t.Errorf("hostname file = %q, want %q", got, wantHost)
			}
			hostResolv, _ := os.ReadFile("/etc/resolv.conf")
			if got := readFile(t, p.ResolvPath); got != string(hostResolv) {
				t.Errorf("resolv.conf without DNS = %q, want host's %q", got, hostResolv)
			}
			if err := e.c.Remove(ctx, p); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, e)
		})
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		mutate  func(e *env, s *Spec)
		wantErr error
	}{
		{
			name:    "missing pause binary",
			mutate:  func(_ *env, s *Spec) { s.SharePID = true },
			wantErr: errdefs.ErrFailedPrecondition,
		},
		{
			name:    "bad dns value after pins exist",
			mutate:  func(_ *env, s *Spec) { s.DNS = &DNS{Servers: []string{"1.1.1.1\nnameserver 6.6.6.6"}} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "dir parent is a file",
			mutate: func(e *env, s *Spec) {
				f := filepath.Join(e.root, "pods")
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					panic(err)
				}
				s.Dir = filepath.Join(f, "pod1")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			s := Spec{ID: "pod1", Dir: filepath.Join(e.root, "pods", "pod1")}
			tc.mutate(e, &s)
			_, err := e.c.Create(context.Background(), s)
			if err == nil {
				t.Fatal("create succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if m := mountsUnder(t, e.root); len(m) > 0 {
				t.Errorf("mounts left: %v", m)
			}
			files := filesUnder(t, e.root)
			if len(files) > 1 || (len(files) == 1 && files[0] != filepath.Join(e.root, "pods")) {
				t.Errorf("files left: %v", files)
			}
			if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
				t.Errorf("pod dir left: %v", err)
			}
		})
	}
}

func TestCreateExistingPinIsNotClobbered(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, "")
	pin := filepath.Join(e.root, "run", "netns", "pod1")
	if err := os.MkdirAll(filepath.Dir(pin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pin, []byte("someone else's"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Create(context.Background(), Spec{ID: "pod1", Dir: filepath.Join(e.root, "pods", "pod1")})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("err = %v, want already exists", err)
	}
	if got := readFile(t, pin); got != "someone else's" {
		t.Errorf("existing pin changed: %q", got)
	}
	if files := filesUnder(t, e.root); len(files) != 1 {
		t.Errorf("files left: %v", files)
	}
	if m := mountsUnder(t, e.root); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
}

func TestValidate(t *testing.T) {
	c, err := New(Options{NetNSDir: "/run/berth-test/netns", PausePath: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec Spec
	}{
		{"empty id", Spec{Dir: "/tmp/x"}},
		{"id with slash", Spec{ID: "a/b", Dir: "/tmp/x"}},
		{"dot dot id", Spec{ID: "..", Dir: "/tmp/x"}},
		{"relative dir", Spec{ID: "a", Dir: "pods/a"}},
		{"root dir", Spec{ID: "a", Dir: "/"}},
		{"negative shm", Spec{ID: "a", Dir: "/tmp/x", ShmSize: -1}},
		{"long hostname", Spec{ID: "a", Dir: "/tmp/x", Hostname: strings.Repeat("h", 65)}},
		{"hostname newline", Spec{ID: "a", Dir: "/tmp/x", Hostname: "a\nb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Create(context.Background(), tc.spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("err = %v, want invalid argument", err)
			}
		})
	}
	if _, err := New(Options{NetNSDir: "relative"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative netns dir: %v", err)
	}
}
