package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestCgroupAndCDIKeys(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		errKey   string // "" => valid
		check    func(Config) bool
	}{
		{name: "defaults", in: "", check: func(c Config) bool {
			return c.CgroupDriver == "cgroupfs" && len(c.CDI.SpecDirs) == 2 && c.CDI.SpecDirs[0] == "/etc/cdi" && c.CDI.SpecDirs[1] == "/var/run/cdi"
		}},
		{name: "systemd with default parent", in: "cgroup_driver = \"systemd\"\n", check: func(c Config) bool { return c.CgroupDriver == "systemd" }},
		{name: "systemd with a slice", in: "cgroup_driver = \"systemd\"\ncgroup_parent = \"berth.slice\"\n", check: func(c Config) bool { return c.CgroupParent == "berth.slice" }},
		{name: "cgroupfs refuses a slice name", in: "cgroup_parent = \"berth.slice\"\n", errKey: "cgroup_parent"},
		{name: "systemd refuses a relative name", in: "cgroup_driver = \"systemd\"\ncgroup_parent = \"berth\"\n", errKey: "cgroup_parent"},
		{name: "unknown driver", in: "cgroup_driver = \"cgroupv2\"\n", errKey: "cgroup_driver"},
		{name: "spec dirs", in: "[cdi]\nspec_dirs = [\"/opt/cdi\"]\n", check: func(c Config) bool { return len(c.CDI.SpecDirs) == 1 && c.CDI.SpecDirs[0] == "/opt/cdi" }},
		{name: "relative spec dir", in: "[cdi]\nspec_dirs = [\"cdi\"]\n", errKey: "cdi.spec_dirs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := Decode([]byte(tc.in), &cfg)
			if tc.errKey != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "key "+tc.errKey+":") {
					t.Fatalf("Decode = %v, want InvalidArgument naming key %s", err, tc.errKey)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tc.check(cfg) {
				t.Errorf("decoded config %+v", cfg)
			}
		})
	}
}

func TestCheckHostSystemd(t *testing.T) {
	for _, tc := range []struct {
		driver  string
		booted  bool
		wantErr bool
	}{
		{"cgroupfs", false, false},
		{"systemd", true, false},
		{"systemd", false, true},
	} {
		c := Default()
		c.CgroupDriver = tc.driver
		err := c.checkHost(func() bool { return tc.booted })
		if (err != nil) != tc.wantErr {
			t.Errorf("driver %s booted %v: %v", tc.driver, tc.booted, err)
			continue
		}
		if err != nil && (!errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "cgroup_driver")) {
			t.Errorf("error %q is not a FailedPrecondition naming cgroup_driver", err)
		}
	}
}
