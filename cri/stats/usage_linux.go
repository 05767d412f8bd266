package stats

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/sandbox/netns"
)

// defaultInterface is the pod interface CNI plugins create by convention.
const defaultInterface = "eth0"

// podNetwork reads the interface counters of the pod's network namespace:
// through a running container's /proc/<pid>/net/dev when there is one,
// else by entering the pinned namespace on a locked thread.
func (c *Collector) podNetwork(ctx context.Context, sb store.Sandbox, pids []int, now time.Time) *runtime.NetworkUsage {
	if sb.Status.Pod.NetNS == "" {
		return nil // host network: the node's counters are not the pod's
	}
	var data []byte
	var err error
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if data, err = os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid)); err == nil {
			break
		}
	}
	if data == nil {
		data, err = readNetDevIn(sb.Status.Pod.NetNS)
	}
	if err != nil {
		c.log.DebugContext(ctx, "read pod network counters", "sandbox_id", sb.ID, "error", err)
		return nil
	}
	return networkUsage(parseNetDev(data), now)
}

// networkUsage shapes a pod's interface counters for the CRI, leaving out
// lo. A pod with no other interface (its CNI teardown has run, or it never
// had one) reports no network usage at all rather than an empty one:
// kubelet's CRI stats provider dereferences DefaultInterface whenever
// Network is set, and a nil one crashes it.
func networkUsage(ifaces []*runtime.NetworkInterfaceUsage, now time.Time) *runtime.NetworkUsage {
	out := &runtime.NetworkUsage{Timestamp: now.UnixNano()}
	for _, i := range ifaces {
		if i.Name == "lo" {
			continue
		}
		out.Interfaces = append(out.Interfaces, i)
		if i.Name == defaultInterface {
			out.DefaultInterface = i
		}
	}
	if len(out.Interfaces) == 0 {
		return nil
	}
	if out.DefaultInterface == nil {
		out.DefaultInterface = out.Interfaces[0]
	}
	return out
}

// readNetDevIn reads /proc/thread-self/net/dev inside the namespace pinned
// at nsPath.
func readNetDevIn(nsPath string) (data []byte, err error) {
	err = netns.Do(nsPath, func() error {
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	})
	return data, err
}

// parseNetDev parses /proc/net/dev: two header lines, then
// "iface: rx_bytes rx_packets rx_errs ... (8 rx fields) tx_bytes tx_packets tx_errs ...".
func parseNetDev(data []byte) []*runtime.NetworkInterfaceUsage {
	var out []*runtime.NetworkInterfaceUsage
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 11 {
			continue
		}
		n := func(i int) *runtime.UInt64Value {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return u64(v)
		}
		out = append(out, &runtime.NetworkInterfaceUsage{
			Name: strings.TrimSpace(name), RxBytes: n(0), RxErrors: n(2), TxBytes: n(8), TxErrors: n(10),
		})
	}
	return out
}

// writableLayer reports the disk use of the container's overlay upper dir,
// refreshed at most every layerTTL.
func (c *Collector) writableLayer(ctx context.Context, id string, now time.Time) *runtime.FilesystemUsage {
	c.mu.Lock()
	cached, ok := c.layers[id]
	mount := c.fsMount
	c.mu.Unlock()
	if mount == "" {
		mount = imagesvc.Mountpoint(c.root)
	}
	if !ok || now.Sub(cached.at) >= layerTTL {
		var du imagesvc.DiskUsage
		if err := du.Add(ctx, filepath.Join(c.root, "containers", id, "upper")); err != nil {
			return nil
		}
		cached = layerSample{bytes: du.Bytes, inodes: du.Inodes, at: now}
	}
	c.mu.Lock()
	if !c.gone.has(id) {
		c.layers[id] = cached
	}
	c.fsMount = mount
	c.mu.Unlock()
	return &runtime.FilesystemUsage{
		Timestamp:  cached.at.UnixNano(),
		FsId:       &runtime.FilesystemIdentifier{Mountpoint: mount},
		UsedBytes:  u64(cached.bytes),
		InodesUsed: u64(cached.inodes),
	}
}
