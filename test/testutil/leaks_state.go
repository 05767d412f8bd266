package testutil

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StateLeaks lists the per-object files berthd keeps that must be gone once
// every pod is removed: container bundles (<state>/containers), sandbox dirs
// (<state>/sandboxes), shim sockets (<state>/s) and writable layers, the
// container snapshots (<root>/containers).
func StateLeaks(d *Daemon) []string {
	var leaks []string
	for _, dir := range []struct{ path, what string }{
		{filepath.Join(d.State, "containers"), "bundle dir"},
		{filepath.Join(d.State, "sandboxes"), "sandbox dir"},
		{filepath.Join(d.State, "s"), "shim socket"},
		{filepath.Join(d.Root, "containers"), "container snapshot dir"},
	} {
		entries, _ := os.ReadDir(dir.path)
		for _, e := range entries {
			leaks = append(leaks, dir.what+" "+filepath.Join(dir.path, e.Name()))
		}
	}
	return leaks
}

// BridgeNet is a CNI bridge network with host-local IPAM whose addresses
// are kept in IPAMDir, so a test can see every address that is still
// allocated, on a bridge and subnet of its own.
type BridgeNet struct {
	Name    string // CNI network name
	Bridge  string // the bridge device, at most 15 bytes
	Subnet  string // a /24 inside 10.200.0.0/13
	IPAMDir string // host-local's dataDir
}

// NewBridgeNet picks a bridge name and subnet unlikely to collide with
// other tests on the machine, and registers the removal of the bridge and
// of IPAMDir with t.
func NewBridgeNet(t testing.TB) BridgeNet {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bipam")
	if err != nil {
		t.Fatalf("make ipam dir: %v", err)
	}
	suffix := randomHex(3)
	n := BridgeNet{
		Name:    "berth-rel-" + suffix,
		Bridge:  "brel" + suffix,
		Subnet:  fmt.Sprintf("10.%d.%d.0/24", 200+randInt(8), randInt(256)),
		IPAMDir: dir,
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/class/net/" + n.Bridge); err == nil {
			if out, err := exec.Command("ip", "link", "del", n.Bridge).CombinedOutput(); err != nil {
				t.Logf("delete bridge %s: %v: %s", n.Bridge, err, out)
			}
		}
		_ = os.RemoveAll(dir)
	})
	return n
}

func randInt(n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

// ConfList is the network config: loopback is set up by berthd itself, so
// the list holds the bridge alone. Extra plugins (JSON objects) are chained
// after it.
func (n BridgeNet) ConfList(extra ...string) string {
	plugins := []string{fmt.Sprintf(`{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
  "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]]}}`, n.Bridge, n.IPAMDir, n.Subnet)}
	plugins = append(plugins, extra...)
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [%s]}`, n.Name, strings.Join(plugins, ", "))
}

// Leaks lists the addresses host-local still holds and the interfaces
// (veths) still attached to the bridge.
func (n BridgeNet) Leaks() []string {
	var leaks []string
	entries, _ := os.ReadDir(filepath.Join(n.IPAMDir, n.Name))
	for _, e := range entries {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
			continue
		}
		leaks = append(leaks, "IPAM address "+e.Name())
	}
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", n.Bridge, "brif"))
	for _, p := range ports {
		leaks = append(leaks, "interface "+p.Name()+" on bridge "+n.Bridge)
	}
	return leaks
}

// Addresses is how many addresses host-local holds now.
func (n BridgeNet) Addresses() int {
	c := 0
	for _, l := range n.Leaks() {
		if strings.HasPrefix(l, "IPAM address ") {
			c++
		}
	}
	return c
}

// AssertNothingLeft is AssertNoLeaks plus StateLeaks and, when nets are
// given, their addresses and veths: what issue 8 requires to be gone after
// every pod was removed.
func AssertNothingLeft(t testing.TB, d *Daemon, nets ...BridgeNet) {
	t.Helper()
	AssertNoLeaks(t, d)
	var leaks []string
	for deadline := time.Now().Add(3 * time.Second); ; {
		leaks = StateLeaks(d)
		for _, n := range nets {
			leaks = append(leaks, n.Leaks()...)
		}
		if len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range leaks {
		t.Errorf("leak: %s", l)
	}
}
