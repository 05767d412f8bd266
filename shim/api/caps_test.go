package api

import (
	"slices"
	"testing"
)

func TestCapabilities(t *testing.T) {
	all := Capabilities()
	if len(all) != 41 || all[0] != "CAP_CHOWN" || all[21] != "CAP_SYS_ADMIN" || all[40] != "CAP_CHECKPOINT_RESTORE" {
		t.Fatalf("Capabilities() = %q", all)
	}
	all[0] = "changed"
	if Capabilities()[0] != "CAP_CHOWN" {
		t.Fatal("Capabilities() hands out the package's own list")
	}
}

func TestCapabilitiesOf(t *testing.T) {
	got := CapabilitiesOf(1<<0 | 1<<21 | 1<<40 | 1<<50)
	if !slices.Equal(got, []string{"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"}) {
		t.Fatalf("caps = %q", got)
	}
	if got := CapabilitiesOf(0); len(got) != 0 {
		t.Fatalf("no bits: %q", got)
	}
}

func TestCapabilityMask(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  uint64
	}{
		{nil, 0},
		{[]string{"CAP_CHOWN"}, 1},
		{[]string{"chown", "Cap_Sys_Admin"}, 1 | 1<<21},
		{[]string{"CAP_NOT_A_CAP", "CAP_BPF"}, 1 << 39},
	} {
		if got := CapabilityMask(tc.names); got != tc.want {
			t.Errorf("CapabilityMask(%q) = %#x, want %#x", tc.names, got, tc.want)
		}
	}
	if m := CapabilityMask(Capabilities()); m != 1<<41-1 {
		t.Errorf("mask of every capability = %#x", m)
	}
}

func TestCapabilityList(t *testing.T) {
	if got := CapabilityList(1 | 1<<21 | 1<<50); got != "CAP_CHOWN, CAP_SYS_ADMIN, capability 50" {
		t.Errorf("CapabilityList = %q", got)
	}
}
