package stats

import "testing"

// The loopback's counters are left out, as cAdvisor leaves them out: the
// node e2e suite expects every reported interface of a pod to have traffic.
func TestNetDevMetrics(t *testing.T) {
	data := []byte(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0:    1296      16    0    1    0     0          0         0      936      12    0    2    0     0       0          0
`)
	m := &metricSink{labels: []string{"POD"}}
	netDevMetrics(data, m)
	got := map[string]uint64{}
	for _, x := range m.out {
		if lv := x.GetLabelValues(); len(lv) != 2 || lv[0] != "POD" || lv[1] != "eth0" {
			t.Fatalf("metric %s labels %v, want [POD eth0]", x.GetName(), lv)
		}
		got[x.GetName()] = x.GetValue().GetValue()
	}
	want := map[string]uint64{
		"container_network_receive_bytes_total": 1296, "container_network_receive_packets_total": 16,
		"container_network_receive_errors_total": 0, "container_network_receive_packets_dropped_total": 1,
		"container_network_transmit_bytes_total": 936, "container_network_transmit_packets_total": 12,
		"container_network_transmit_errors_total": 0, "container_network_transmit_packets_dropped_total": 2,
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
