package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestTracingKeys(t *testing.T) {
	if d := Default().Tracing; d.Enabled || d.Protocol != "grpc" || d.SamplingRatePerMillion != 1_000_000 {
		t.Errorf("default tracing = %+v, want off, grpc, every call sampled", d)
	}
	tests := []struct {
		toml    string
		wantKey string // "" means valid
	}{
		{"enabled = true\nendpoint = \"127.0.0.1:4318\"\nprotocol = \"http/protobuf\"", ""},
		{"sampling_rate_per_million = 0", ""},
		{"endpoint = \"collector\"", "tracing.endpoint"},
		{"endpoint = \"http://127.0.0.1:4317\"", "tracing.endpoint"},
		{"protocol = \"http\"", "tracing.protocol"},
		{"sampling_rate_per_million = 1000001", "tracing.sampling_rate_per_million"},
		{"sampling_rate_per_million = -1", "tracing.sampling_rate_per_million"},
		{"service_name = \"\"", "tracing.service_name"},
		{"sampling_ratio = 0.5", "tracing.sampling_ratio"},
	}
	for _, tc := range tests {
		cfg := Default()
		err := Decode([]byte("[tracing]\n"+tc.toml+"\n"), &cfg)
		if tc.wantKey == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.toml, err)
			}
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantKey) {
			t.Errorf("%q: error %v, want invalid argument naming %s", tc.toml, err, tc.wantKey)
		}
	}
}
