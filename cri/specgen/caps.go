package specgen

import (
	"fmt"
	"os"
	"slices"

	"github.com/berth-runtime/berth/shim/api"
)

// CurrentCapabilities returns the names of the capabilities in the calling
// process' bounding set: the most a container started by it can hold.
func CurrentCapabilities() ([]string, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("read own capabilities: %w", err)
	}
	defer f.Close()
	st, err := api.ParseProcStatus(f)
	if err != nil {
		return nil, fmt.Errorf("read own capabilities: %w", err)
	}
	if slices.Contains(st.Lacks(), "CapBnd") {
		return nil, fmt.Errorf("no CapBnd in /proc/self/status")
	}
	return api.CapabilitiesOf(st.CapBnd), nil
}
