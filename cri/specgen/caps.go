package specgen

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

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
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapBnd:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("parse CapBnd %q: %w", v, err)
		}
		return api.CapabilitiesOf(mask), nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read own capabilities: %w", err)
	}
	return nil, fmt.Errorf("no CapBnd in /proc/self/status")
}
