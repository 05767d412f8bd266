package testutil

import (
	"os"
	"testing"
)

// StartDaemonTraversable is StartDaemon with the daemon's temp dir opened
// to other users (0711, as /run and /var/lib are): user namespace
// containers resolve their rootfs path as the mapped root, which a 0700
// temp dir shuts out, and berthd then reports user namespaces unsupported.
func StartDaemonTraversable(t testing.TB, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := NewDaemon(opts)
	if err != nil {
		t.Fatalf("prepare berthd: %v", err)
	}
	t.Cleanup(func() { d.cleanup(t) })
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatalf("open daemon dir: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(64<<10))
	}
	return d
}
