package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestNetwork runs pods on a CNI bridge of the test's own (dual-stack,
// with port mapping) and checks what kubelet relies on: pod IPs of both
// families, pod-to-pod traffic, a host port reachable from the host, and
// nothing left of the network once the pods are gone. All traffic stays on
// the test's bridge and loopback.
func TestNetwork(t *testing.T) {
	testutil.RequiresRoot(t)
	n := testutil.NewBridgeNet(t)
	v6 := fmt.Sprintf("fd00:be:%x::/64", time.Now().UnixNano()&0xffff)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}], [{"subnet": %q}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}`,
		n.Name, n.Bridge, n.IPAMDir, n.Subnet, v6)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host}, CNIConfList: conf,
	})
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNothingLeft(t, d, n)
	})
	ctx := context.Background()
	hostPort := int32(20000 + time.Now().UnixNano()%10000)

	// The server pod: busybox httpd on 8080, published on the host port.
	srvCfg := podConfig(t, d, "web")
	srvCfg.PortMappings = []*runtimeapi.PortMapping{{
		Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: hostPort, HostIp: "127.0.0.1",
	}}
	srv := runPod(t, d, srvCfg)
	runCtr(t, d, srv, srvCfg, shConfig("httpd",
		"mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"))

	st, err := d.Runtime.PodSandboxStatus(ctx, srv, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	ip4 := net.ParseIP(st.GetStatus().GetNetwork().GetIp())
	if ip4 == nil || ip4.To4() == nil {
		t.Fatalf("primary pod IP = %q, want an IPv4 address in %s", st.GetStatus().GetNetwork().GetIp(), n.Subnet)
	}
	if _, sub, _ := net.ParseCIDR(n.Subnet); !sub.Contains(ip4) {
		t.Errorf("pod IP %s is not in the network's subnet %s", ip4, n.Subnet)
	}
	extra := st.GetStatus().GetNetwork().GetAdditionalIps()
	if len(extra) != 1 || net.ParseIP(extra[0].GetIp()).To4() != nil {
		t.Fatalf("additional IPs = %v, want one IPv6 address from %s", extra, v6)
	}
	if _, sub, _ := net.ParseCIDR(v6); !sub.Contains(net.ParseIP(extra[0].GetIp())) {
		t.Errorf("IPv6 pod IP %s is not in %s", extra[0].GetIp(), v6)
	}

	// A client pod reaches the server by its pod IP.
	cliCfg := podConfig(t, d, "client")
	cli := runPod(t, d, cliCfg)
	url := fmt.Sprintf("http://%s:8080/", ip4)
	script := fmt.Sprintf("for i in $(seq 1 50); do timeout 3 wget -q -O - %s && exit 0; sleep 0.2; done; exit 1", url)
	cst, out, errOut := runToExit(t, d, cli, cliCfg, shConfig("wget", script))
	if cst.GetExitCode() != 0 || strings.TrimSpace(out) != "hello-from-web" {
		t.Errorf("wget %s from another pod: exit %d, stdout %q, stderr %q", url, cst.GetExitCode(), out, errOut)
	}

	// The host reaches the server through the host port on loopback.
	body, err := getWithRetry(fmt.Sprintf("http://127.0.0.1:%d/", hostPort), 10*time.Second)
	if err != nil || strings.TrimSpace(body) != "hello-from-web" {
		t.Errorf("host port %d: body %q, err %v", hostPort, body, err)
	}

	// The server's eth0 counters carry the traffic just served; lo is left out.
	ps, err := d.Runtime.PodSandboxStats(ctx, srv)
	if err != nil {
		t.Fatalf("PodSandboxStats: %v", err)
	}
	nw := ps.GetLinux().GetNetwork()
	if def := nw.GetDefaultInterface(); def.GetName() != "eth0" || def.GetRxBytes().GetValue() == 0 || def.GetTxBytes().GetValue() == 0 {
		t.Errorf("pod network stats %v, want eth0 as default interface with traffic", nw)
	}
	for _, i := range nw.GetInterfaces() {
		if i.GetName() == "lo" {
			t.Errorf("pod network stats list lo: %v", nw)
		}
	}

	if n.Addresses() != 2*2 {
		t.Errorf("host-local holds %d addresses for 2 dual-stack pods, want 4: %v", n.Addresses(), n.Leaks())
	}
	removePod(t, d, cli)
	removePod(t, d, srv)
	if leaks := n.Leaks(); len(leaks) != 0 {
		t.Errorf("after removing both pods: %v", leaks)
	}
	// Stop and remove again are no-ops for the network (cached results are gone).
	removePod(t, d, srv)
}

func getWithRetry(url string, within time.Duration) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var resp *http.Response
		if resp, err = c.Get(url); err != nil {
			continue
		}
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == http.StatusOK {
			return string(b), nil
		}
		err = fmt.Errorf("status %d, read error %v", resp.StatusCode, rerr)
	}
	return "", err
}

// TestNetworkReadyFollowsConfig checks that NetworkReady tracks the CNI
// config directory without a restart, as a network DaemonSet installing
// its config after the runtime started needs, and that pods are refused
// with a clear error while there is no network.
func TestNetworkReadyFollowsConfig(t *testing.T) {
	testutil.RequiresRoot(t)
	d := startDaemon(t)
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNoLeaks(t, d)
	})
	entries, err := os.ReadDir(d.CNIConfDir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("CNI conf dir %s: %v, %d entries", d.CNIConfDir, err, len(entries))
	}
	confPath := filepath.Join(d.CNIConfDir, entries[0].Name())
	conf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	waitNetworkReady(t, d, true, "")
	if err := os.Remove(confPath); err != nil {
		t.Fatal(err)
	}
	waitNetworkReady(t, d, false, "NetworkPluginNotReady")
	if _, err := d.Runtime.RunPodSandbox(context.Background(), podConfig(t, d, "nonet"), ""); err == nil {
		t.Error("RunPodSandbox succeeded with no network config")
	}
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	waitNetworkReady(t, d, true, "")
	id := runPod(t, d, podConfig(t, d, "withnet"))
	removePod(t, d, id)
}

func waitNetworkReady(t *testing.T, d *testutil.Daemon, want bool, reason string) {
	t.Helper()
	var last *runtimeapi.RuntimeCondition
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := d.Runtime.Status(context.Background(), false)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		for _, c := range resp.GetStatus().GetConditions() {
			if c.GetType() == runtimeapi.NetworkReady {
				last = c
			}
		}
		if last != nil && last.GetStatus() == want && (reason == "" || last.GetReason() == reason) {
			if !want && last.GetMessage() == "" {
				t.Error("NetworkReady=false carries no message")
			}
			return
		}
	}
	t.Fatalf("NetworkReady did not become %v (reason %q) within 15s; last condition %v", want, reason, last)
}
