package kubelet

import (
	"fmt"
	"os"
	"testing"

	"github.com/berth-runtime/berth/test/testutil"
)

// Environment of a run; run.sh sets the first, the rest have defaults.
const (
	envEnable  = "BERTH_KUBELET_E2E" // "1" runs the scenarios
	envCertsD  = "BERTH_CERTS_D"     // the conformance kit's mirror tree
	envKubelet = "KUBELET"           // kubelet binary
	envRegData = "REGISTRY_DATA_DIR" // the kit registry's storage root
)

var (
	binaries testutil.Binaries
	certsD   = envOr(envCertsD, "/etc/cri-conformance/certs.d")
	kubeBin  = envOr(envKubelet, "/usr/local/bin/kubelet")
	// regData is where the kit's registry keeps repositories, to drop the
	// repository a scenario pushed once its manifest is deleted.
	regData = envOr(envRegData, "/var/lib/cri-conformance/registry")
)

// kitRegistry is the conformance kit's loopback registry (the kit's
// REGISTRY_ADDR, which the Makefile moves off :5000 when an operator's own
// registry service holds it); the mirror tree sends registry.k8s.io there.
var kitRegistry = envOr("REGISTRY_ADDR", "127.0.0.1:5000")

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if os.Getenv(envEnable) != "1" {
		fmt.Printf("kubelet scenarios skipped: set %s=1 (make kubelet-e2e does)\n", envEnable)
		os.Exit(0)
	}
	b, cleanup, err := testutil.BuildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth binaries:", err)
		os.Exit(1)
	}
	binaries = b
	code := m.Run()
	cleanup()
	os.Exit(code)
}
