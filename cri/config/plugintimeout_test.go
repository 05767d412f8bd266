package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestCNIPluginTimeout(t *testing.T) {
	if got := Default().CNI.Timeout(); got != 2*time.Minute {
		t.Errorf("default cni.plugin_timeout = %s, want 2m", got)
	}
	tests := []struct {
		value   string
		want    time.Duration
		wantErr bool
	}{
		{`"5s"`, 5 * time.Second, false},
		{`"1m30s"`, 90 * time.Second, false},
		{`"0s"`, 0, true},
		{`"-1s"`, 0, true},
		{`"soon"`, 0, true},
		{`""`, 0, true},
	}
	for _, tc := range tests {
		cfg := Default()
		err := Decode([]byte("[cni]\nplugin_timeout = "+tc.value+"\n"), &cfg)
		if tc.wantErr {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "cni.plugin_timeout") {
				t.Errorf("plugin_timeout = %s: error %v, want invalid argument naming the key", tc.value, err)
			}
			continue
		}
		if err != nil || cfg.CNI.Timeout() != tc.want {
			t.Errorf("plugin_timeout = %s: %s, %v; want %s", tc.value, cfg.CNI.Timeout(), err, tc.want)
		}
	}
}
