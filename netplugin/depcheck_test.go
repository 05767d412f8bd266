package netplugin

import (
	"os/exec"
	"strings"
	"testing"
)

// netplugin sits below cri and sandbox: it must not import them, any other
// package of this module, or CRI types.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/cri-api") ||
			(strings.HasPrefix(dep, "github.com/berth-runtime/berth/") && !strings.HasPrefix(dep, "github.com/berth-runtime/berth/netplugin")) {
			t.Errorf("netplugin depends on %s", dep)
		}
	}
}
