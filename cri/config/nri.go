package config

import (
	"fmt"
	"path/filepath"
	"time"
)

// NRI configures the Node Resource Interface host (cri/nri): plugins
// berthd starts from PluginPath, and plugins that connect to SocketPath
// on their own. Defaults are containerd's but for the request timeout (see defaultNRI).
type NRI struct {
	Enable                    bool   `toml:"enable" comment:"host NRI plugins (Node Resource Interface), as containerd and CRI-O do"`
	SocketPath                string `toml:"socket_path" comment:"unix socket externally started plugins connect to"`
	DisableConnections        bool   `toml:"disable_connections" comment:"accept no external plugins: only the pre-registered ones of plugin_path run"`
	PluginPath                string `toml:"plugin_path" comment:"directory of pre-registered plugins, started by berthd: executables named IDX-NAME (two-digit index, as containerd and CRI-O lay them out)"`
	PluginConfigPath          string `toml:"plugin_config_path" comment:"directory of configs of pre-registered plugins: IDX-NAME.conf or NAME.conf"`
	PluginRegistrationTimeout string `toml:"plugin_registration_timeout" comment:"bound on a plugin's registration after it connects (Go duration); a plugin that takes longer is disconnected"`
	PluginRequestTimeout      string `toml:"plugin_request_timeout" comment:"bound on each plugin's answer to an event, and on its synchronisation when it connects (Go duration); a plugin that takes longer is disconnected and the event goes on without it, so no CRI call waits longer per plugin"`
}

func defaultNRI() NRI {
	return NRI{
		Enable:                    true,
		SocketPath:                "/var/run/nri/nri.sock",
		PluginPath:                "/opt/nri/plugins",
		PluginConfigPath:          "/etc/nri/conf.d",
		PluginRegistrationTimeout: "5s",
		// containerd's is 2s; the adaptation bounds a connecting plugin's
		// Synchronize by it too, and a plugin that takes longer is dropped
		// with every pod and container made meanwhile lost to it (critest's
		// plugin synchronization specs hold Synchronize for 2s).
		PluginRequestTimeout: "5s",
	}
}

// RegistrationTimeout is PluginRegistrationTimeout parsed; Validate
// guarantees it parses.
func (n NRI) RegistrationTimeout() time.Duration {
	d, _ := time.ParseDuration(n.PluginRegistrationTimeout)
	return d
}

// RequestTimeout is PluginRequestTimeout parsed; Validate guarantees it
// parses.
func (n NRI) RequestTimeout() time.Duration {
	d, _ := time.ParseDuration(n.PluginRequestTimeout)
	return d
}

func (n NRI) validate(bad func(key, why string) error) error {
	for key, p := range map[string]string{"nri.socket_path": n.SocketPath, "nri.plugin_path": n.PluginPath, "nri.plugin_config_path": n.PluginConfigPath} {
		if !filepath.IsAbs(p) {
			return bad(key, fmt.Sprintf("%q is not an absolute path", p))
		}
	}
	if len(n.SocketPath) >= 108 {
		return bad("nri.socket_path", "unix socket path longer than 107 bytes")
	}
	for key, v := range map[string]string{"nri.plugin_registration_timeout": n.PluginRegistrationTimeout, "nri.plugin_request_timeout": n.PluginRequestTimeout} {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			return bad(key, fmt.Sprintf("%q is not a positive duration", v))
		}
	}
	return nil
}

func validateHooksDirs(dirs []string, bad func(key, why string) error) error {
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return bad("runtime.hooks_dir", fmt.Sprintf("%q is not an absolute path", d))
		}
	}
	return nil
}
