package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestNRIDefaults(t *testing.T) {
	n := Default().NRI
	if !n.Enable || n.SocketPath != "/var/run/nri/nri.sock" || n.PluginPath != "/opt/nri/plugins" || n.PluginConfigPath != "/etc/nri/conf.d" {
		t.Errorf("defaults = %+v", n)
	}
	if n.RegistrationTimeout() != 5*time.Second || n.RequestTimeout() != 5*time.Second {
		t.Errorf("timeouts = %s, %s; want 5s, 5s", n.RegistrationTimeout(), n.RequestTimeout())
	}
	cfg := Default()
	if err := Decode([]byte("[nri]\nenable = false\nsocket_path = \"/run/x/nri.sock\"\nplugin_request_timeout = \"500ms\"\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.NRI.Enable || cfg.NRI.SocketPath != "/run/x/nri.sock" || cfg.NRI.RequestTimeout() != 500*time.Millisecond {
		t.Errorf("decoded = %+v", cfg.NRI)
	}
}

func TestNRIAndHooksInvalid(t *testing.T) {
	for key, doc := range map[string]string{
		"nri.socket_path":                 "[nri]\nsocket_path = \"nri.sock\"\n",
		"nri.plugin_path":                 "[nri]\nplugin_path = \"plugins\"\n",
		"nri.plugin_config_path":          "[nri]\nplugin_config_path = \"\"\n",
		"nri.plugin_registration_timeout": "[nri]\nplugin_registration_timeout = \"0s\"\n",
		"nri.plugin_request_timeout":      "[nri]\nplugin_request_timeout = \"soon\"\n",
		"runtime.hooks_dir":               "[runtime]\nhooks_dir = [\"hooks.d\"]\n",
	} {
		cfg := Default()
		err := Decode([]byte(doc), &cfg)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v, want invalid argument naming the key", key, err)
		}
	}
}
