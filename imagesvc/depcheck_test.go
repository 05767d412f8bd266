package imagesvc

import (
	"os/exec"
	"strings"
	"testing"
)

// imagesvc sits below cri: it must not import the packages above or beside
// it, nor CRI types.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"/berth/cri", "/berth/sandbox", "/berth/shim", "/berth/netplugin", "k8s.io/cri-api"} {
			if strings.Contains(dep, banned) {
				t.Errorf("imagesvc depends on %s", dep)
			}
		}
	}
}
