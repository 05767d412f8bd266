package netplugin

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// hostNeighbour is the MAC the host's neighbour table holds for ip, nil
// when it holds none.
func hostNeighbour(t *testing.T, ip net.IP) net.HardwareAddr {
	t.Helper()
	all, err := neighbours()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n.ip.Equal(ip) && len(n.mac) > 0 {
			return n.mac
		}
	}
	return nil
}

func macInNetNS(t *testing.T, pin, ifname string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := inNetNS(t, pin, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// A pod given an address an earlier pod released must not inherit the
// host's neighbour entry for it, which names the earlier pod's MAC: the
// host would send the new pod's first packets (kubelet's probes) nowhere.
func TestBridgeReusedAddressForgetsOldNeighbour(t *testing.T) {
	requireRoot(t)
	confDir, cacheDir := t.TempDir(), t.TempDir()
	br := newTestBridge(t, confDir, "10-test.conflist")
	m := newManager(t, Options{ConfDir: confDir, CacheDir: cacheDir})
	ctx := context.Background()
	setup := func(name string) (PodNetwork, net.IP) {
		t.Helper()
		p := podFor(name+"-"+randHex(t, 4), newNetNS(t))
		res, err := m.Setup(ctx, p)
		if err != nil {
			t.Fatalf("Setup %s: %v", name, err)
		}
		t.Cleanup(func() { _ = m.Teardown(context.Background(), p) })
		return p, res.IPs[0]
	}
	// A pod that stays keeps the bridge's carrier up: a bridge losing its
	// last port flushes its neighbour entries, a busy node's does not.
	setup("keeper")
	first, ip := setup("first")
	oldMAC := macInNetNS(t, first.NetNS, "eth0")
	conn, err := net.Dial("udp4", net.JoinHostPort(ip.String(), "9"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("hello"))
	conn.Close()
	if !waitFor(5*time.Second, func() bool { return bytes.Equal(hostNeighbour(t, ip), oldMAC) }) {
		t.Fatalf("host never learnt %s at %s (has %v)", ip, oldMAC, hostNeighbour(t, ip))
	}
	if err := m.Teardown(ctx, first); err != nil {
		t.Fatal(err)
	}
	if mac := hostNeighbour(t, ip); !bytes.Equal(mac, oldMAC) {
		t.Fatalf("precondition: after the pod left the host holds %v for %s, want its MAC %s still", mac, ip, oldMAC)
	}

	// host-local wraps around its range: the next pod gets the address again.
	if err := os.Remove(filepath.Join(br.dataDir, br.network, "last_reserved_ip.0")); err != nil {
		t.Fatal(err)
	}
	second, ip2 := setup("second")
	if !ip2.Equal(ip) {
		t.Fatalf("second pod got %s, want the released %s", ip2, ip)
	}
	if mac := hostNeighbour(t, ip); bytes.Equal(mac, oldMAC) {
		t.Errorf("host still sends %s to the removed pod's MAC %s (the new pod's is %s)", ip, mac, macInNetNS(t, second.NetNS, "eth0"))
	}
}
