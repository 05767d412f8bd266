package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// PrepareDaemon is NewDaemon with StartDaemon's cleanup registered: the
// caller may change the config or run offline commands before d.Start().
func PrepareDaemon(t testing.TB, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := NewDaemon(opts)
	if err != nil {
		t.Fatalf("prepare berthd: %v", err)
	}
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

// SetRegistryConfigPath sets registry.config_path (the certs.d dir) in the
// config of a daemon not started yet.
func (d *Daemon) SetRegistryConfigPath(dir string) error {
	return d.SetRegistryKey("config_path", dir)
}

// SetRegistryKey sets the string key of the [registry] table in the
// config of a daemon not started yet.
func (d *Daemon) SetRegistryKey(key, value string) error {
	data, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		return err
	}
	s := string(data)
	if !strings.Contains(s, "[registry]\n") {
		return fmt.Errorf("config has no [registry] table")
	}
	s = strings.Replace(s, "[registry]\n", fmt.Sprintf("[registry]\n%s = %q\n", key, value), 1)
	return os.WriteFile(d.ConfigPath, []byte(s), 0o600)
}
