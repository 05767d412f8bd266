package netplugin

import (
	"errors"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/pkg/types/create"
)

func TestCapabilityArgsValidation(t *testing.T) {
	tests := []struct {
		name     string
		p        PodNetwork
		wantKeys []string
		wantErr  bool
	}{
		{name: "nothing", p: PodNetwork{}, wantKeys: nil},
		{name: "only container ports", p: PodNetwork{PortMappings: []PortMapping{{ContainerPort: 80}}}, wantKeys: nil},
		{name: "bad protocol", p: PodNetwork{PortMappings: []PortMapping{{Protocol: "icmp", ContainerPort: 1, HostPort: 1}}}, wantErr: true},
		{name: "bad host ip", p: PodNetwork{PortMappings: []PortMapping{{ContainerPort: 1, HostPort: 1, HostIP: "x"}}}, wantErr: true},
		{name: "port range", p: PodNetwork{PortMappings: []PortMapping{{ContainerPort: 70000, HostPort: 1}}}, wantErr: true},
		{name: "negative bandwidth", p: PodNetwork{IngressBandwidth: -1}, wantErr: true},
		{name: "egress only", p: PodNetwork{EgressBandwidth: 5}, wantKeys: []string{"bandwidth"}},
		{name: "dns and cgroup", p: PodNetwork{DNS: &DNS{}, CgroupPath: "/x"}, wantKeys: []string{"cgroupPath", "dns"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args, err := capabilityArgs(tc.p)
			if tc.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, k := range []string{"bandwidth", "cgroupPath", "dns", "portMappings"} {
				if _, ok := args[k]; ok {
					keys = append(keys, k)
				}
			}
			if !reflect.DeepEqual(keys, tc.wantKeys) {
				t.Errorf("keys = %v, want %v", keys, tc.wantKeys)
			}
		})
	}
	bw, _ := capabilityArgs(PodNetwork{EgressBandwidth: 5})
	if got := bw["bandwidth"].(bandwidthEntry); got.IngressRate != 0 || got.EgressRate != 5 || got.EgressBurst == 0 {
		t.Errorf("bandwidth = %+v", got)
	}
}

func TestToResult(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    []string
		wantErr bool
	}{
		{name: "dual stack reordered", raw: `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
			"ips":[{"address":"fd00::1/64","interface":0},{"address":"10.0.0.2/24","interface":0}]}`,
			want: []string{"10.0.0.2", "fd00::1"}},
		{name: "host side dropped", raw: `{"cniVersion":"1.0.0","interfaces":[{"name":"br"},{"name":"eth0","sandbox":"/x"}],
			"ips":[{"address":"10.0.0.1/24","interface":0},{"address":"10.0.0.2/24","interface":1}]}`,
			want: []string{"10.0.0.2"}},
		{name: "no interface index", raw: `{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/24"}]}`, want: []string{"10.0.0.3"}},
		{name: "old version", raw: `{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.4/24"}]}`, want: []string{"10.0.0.4"}},
		{name: "no ip", raw: `{"cniVersion":"1.0.0"}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := create.CreateFromBytes([]byte(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			res, err := toResult(r)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("toResult = %+v, want error", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ipStrings(res.IPs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("IPs = %v, want %v", got, tc.want)
			}
			if len(res.IPs[0]) != 4 && res.IPs[0].To4() != nil {
				t.Errorf("IPv4 not in 4-byte form: %v", []byte(res.IPs[0]))
			}
		})
	}
}
