package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestMetricsAndLogDir(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		bad      string // key the error must name; "" means valid
		metrics  string
		logDir   string
	}{
		{name: "defaults", metrics: "", logDir: "/run/berth/logs"},
		{name: "metrics on loopback", in: "[metrics]\naddress = \"127.0.0.1:9338\"\n", metrics: "127.0.0.1:9338", logDir: "/run/berth/logs"},
		{name: "log dir", in: "state = \"/s\"\n[log]\ndir = \"/var/log/berth\"\n", logDir: "/var/log/berth"},
		{name: "log dir follows state", in: "state = \"/s\"\n", logDir: "/s/logs"},
		{name: "metrics not host:port", in: "[metrics]\naddress = \"9338\"\n", bad: "metrics.address"},
		{name: "relative log dir", in: "[log]\ndir = \"logs\"\n", bad: "log.dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := Decode([]byte(tc.in), &cfg)
			if tc.bad != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("error %v, want InvalidArgument naming %s", err, tc.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Metrics.Address != tc.metrics || cfg.LogDir() != tc.logDir {
				t.Errorf("metrics %q log dir %q, want %q %q", cfg.Metrics.Address, cfg.LogDir(), tc.metrics, tc.logDir)
			}
		})
	}
}

func TestReloadableKeysExist(t *testing.T) {
	data, err := Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"log.level", "cni.conf_dir", "cni.bin_dirs"} {
		if !Reloadable(key) {
			t.Errorf("%s is not reloadable", key)
		}
		table, name, _ := strings.Cut(key, ".")
		if !strings.Contains(string(data), "["+table+"]") || !strings.Contains(string(data), name+" = ") {
			t.Errorf("reloadable key %s is not in the config", key)
		}
	}
	if Reloadable("root") || Reloadable("grpc.address") {
		t.Error("root and grpc.address must need a restart")
	}
}
