package ocihooks

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestApply(t *testing.T) {
	usr, etc := t.TempDir(), t.TempDir()
	bin := "/bin/true"
	write(t, usr, "10-always.json", `{"version":"1.0.0","hook":{"path":"`+bin+`","args":["true","usr"]},"when":{"always":true},"stages":["prestart","poststop"]}`)
	// /etc's file of the same name replaces /usr's.
	write(t, etc, "10-always.json", `{"version":"1.0.0","hook":{"path":"`+bin+`","args":["true","etc"]},"when":{"always":true},"stages":["createRuntime"]}`)
	write(t, usr, "20-gpu.json", `{"version":"1.0.0","hook":{"path":"`+bin+`"},"when":{"annotations":{"^example\\.com/gpu$":"^yes$"}},"stages":["createContainer"]}`)
	write(t, usr, "30-cmd.json", `{"version":"1.0.0","hook":{"path":"`+bin+`"},"when":{"commands":["^/usr/bin/app$"]},"stages":["startContainer"]}`)
	write(t, usr, "40-binds.json", `{"version":"1.0.0","hook":{"path":"`+bin+`"},"when":{"hasBindMounts":true},"stages":["poststart"]}`)
	write(t, usr, "README", "not a hook")
	dirs := []string{usr, etc, filepath.Join(t.TempDir(), "missing")}

	tests := []struct {
		name string
		spec specs.Spec
		want []string
	}{
		{"plain", specs.Spec{Process: &specs.Process{Args: []string{"/bin/sh"}}}, []string{"10-always.json"}},
		{"annotation", specs.Spec{Annotations: map[string]string{"example.com/gpu": "yes"}}, []string{"10-always.json", "20-gpu.json"}},
		{"annotation value differs", specs.Spec{Annotations: map[string]string{"example.com/gpu": "no"}}, []string{"10-always.json"}},
		{"command", specs.Spec{Process: &specs.Process{Args: []string{"/usr/bin/app", "-x"}}}, []string{"10-always.json", "30-cmd.json"}},
		{"bind mount", specs.Spec{Mounts: []specs.Mount{{Destination: "/d", Options: []string{"rbind", "ro"}}}}, []string{"10-always.json", "40-binds.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			applied, err := Apply(dirs, &spec)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range applied {
				names = append(names, filepath.Base(a))
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("applied %v, want %v", names, tc.want)
			}
			if len(spec.Hooks.CreateRuntime) != 1 || spec.Hooks.CreateRuntime[0].Args[1] != "etc" || len(spec.Hooks.Prestart) != 0 { //nolint:staticcheck // checking it stays empty
				t.Fatalf("the /etc file did not replace the /usr one: %+v", spec.Hooks)
			}
		})
	}
}

func TestInvalidHookFiles(t *testing.T) {
	for name, body := range map[string]string{
		"version":   `{"version":"0.1.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":["prestart"]}`,
		"relative":  `{"version":"1.0.0","hook":{"path":"true"},"when":{"always":true},"stages":["prestart"]}`,
		"missing":   `{"version":"1.0.0","hook":{"path":"/nonexistent/hook"},"when":{"always":true},"stages":["prestart"]}`,
		"no stages": `{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":[]}`,
		"stage":     `{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":["whenever"]}`,
		"no when":   `{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{},"stages":["prestart"]}`,
		"regexp":    `{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"commands":["("]},"stages":["prestart"]}`,
		"json":      `{`,
	} {
		dir := t.TempDir()
		write(t, dir, "h.json", body)
		write(t, dir, "ok.json", `{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":["poststop"]}`)
		hooks, err := Load([]string{dir})
		if err == nil || !strings.Contains(err.Error(), "h.json") {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
		if len(hooks) != 1 || filepath.Base(hooks[0].name) != "ok.json" {
			t.Errorf("%s: the good file was not kept: %+v", name, hooks)
		}
	}
}
