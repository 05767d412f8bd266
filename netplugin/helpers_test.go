package netplugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// newManager starts a Manager on temp dirs and closes it at the end.
func newManager(t *testing.T, o Options) *Manager {
	t.Helper()
	if o.ConfDir == "" {
		o.ConfDir = t.TempDir()
	}
	if o.CacheDir == "" {
		o.CacheDir = t.TempDir()
	}
	if o.PollInterval == 0 {
		o.PollInterval = 50 * time.Millisecond
	}
	if o.PluginTimeout == 0 {
		o.PluginTimeout = 30 * time.Second
	}
	m, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// newNetNS creates a network namespace pinned by a bind mount in a temp
// dir. The thread that unshared is never unlocked, so it exits with its
// goroutine and no other goroutine ever runs in the new namespace.
func newNetNS(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	pin := filepath.Join(t.TempDir(), "netns")
	writeFile(t, pin, "", 0o600)
	err := onDisposedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		return unix.Mount("/proc/thread-self/ns/net", pin, "", unix.MS_BIND, "")
	})
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { unpinNetNS(t, pin) })
	return pin
}

func unpinNetNS(t *testing.T, pin string) {
	t.Helper()
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("unmount netns pin: %v", err)
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("remove netns pin: %v", err)
	}
	var st unix.Statfs_t
	if unix.Statfs(pin, &st) == nil {
		t.Errorf("netns pin %s still exists", pin)
	}
}

// inNetNS runs fn on a thread inside the namespace pinned at pin.
func inNetNS(t *testing.T, pin string, fn func() error) error {
	t.Helper()
	return onDisposedThread(func() error {
		fd, err := unix.Open(pin, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd) // read-only fd
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return err
		}
		return fn()
	})
}

// onDisposedThread runs fn on a goroutine locked to a thread that ends
// with it, for fn to move into another namespace. Go ends such a thread,
// except the main one, which it cannot end and only parks: left in a
// test's netns, the parked main thread kept that netns and its veth alive
// (TestBridgeTeardownAfterNetNSGone failed in a fresh-clone run: the only
// user of the netns was the test process's main thread). So fn never runs
// on the main thread: a goroutine that finds itself there holds it while
// a nested one, necessarily elsewhere, runs fn.
func onDisposedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			errc <- onDisposedThread(fn)
			runtime.UnlockOSThread()
			return
		}
		errc <- fn() // never unlocked: the thread ends with the goroutine
	}()
	return <-errc
}

// addrsInNetNS returns the IPv4/IPv6 addresses of ifname inside pin.
func addrsInNetNS(t *testing.T, pin, ifname string) []net.IP {
	t.Helper()
	var ips []net.IP
	err := inNetNS(t, pin, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips = append(ips, n.IP)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s in netns: %v", ifname, err)
	}
	return ips
}

// bridgePorts lists the host-side veths attached to bridge.
func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// ipamIPs lists the addresses host-local holds for network in dataDir.
func ipamIPs(t *testing.T, dataDir, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, network))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// testBridge describes a bridge network owned by one test.
type testBridge struct {
	name, network, subnet, dataDir string
	prefix                         string // "10.234.X."
}

// newTestBridge writes a bridge + host-local + portmap + loopback conflist
// into confDir (as file) and deletes the bridge at cleanup. extra plugins
// (raw JSON) are appended to the chain after bridge.
func newTestBridge(t *testing.T, confDir, file string, extra ...string) testBridge {
	t.Helper()
	requireRoot(t)
	suffix := randHex(t, 3)
	x, err := strconv.ParseUint(suffix[:2], 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	b := testBridge{
		name:    "bt" + suffix,
		network: "btnet-" + suffix,
		dataDir: filepath.Join(t.TempDir(), "ipam"),
	}
	b.prefix = "10.234." + strconv.FormatUint(x, 10) + "."
	b.subnet = b.prefix + "0/24"
	chain := `{"type":"bridge","bridge":"` + b.name + `","isGateway":true,"ipMasq":false,` +
		`"ipam":{"type":"host-local","ranges":[[{"subnet":"` + b.subnet + `"}]],"dataDir":"` + b.dataDir + `"}}`
	for _, e := range extra {
		chain += "," + e
	}
	chain += `,{"type":"portmap","capabilities":{"portMappings":true}},{"type":"loopback"}`
	writeFile(t, filepath.Join(confDir, file),
		`{"cniVersion":"1.0.0","name":"`+b.network+`","plugins":[`+chain+`]}`, 0o600)
	t.Cleanup(func() {
		if _, err := net.InterfaceByName(b.name); err == nil {
			if out, err := exec.Command("ip", "link", "del", b.name).CombinedOutput(); err != nil {
				t.Errorf("delete bridge %s: %v: %s", b.name, err, out)
			}
		}
		if _, err := net.InterfaceByName(b.name); err == nil {
			t.Errorf("bridge %s left behind", b.name)
		}
	})
	return b
}

// waitFor polls cond until it holds or d passed.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
