package testutil

import (
	"os"
	"testing"
)

// RequiresRoot skips t unless the test runs as root: namespaces, mounts,
// cgroups and runc need it.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}
