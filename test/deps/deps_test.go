// Package deps holds the test that keeps the import rules of DESIGN.md:
// dependencies point downward only, and only cri speaks CRI types.
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/berth-runtime/berth/"

// Tracing is set up in cri alone (cri/tracing): the packages below it
// open spans through the OpenTelemetry API and never pick an SDK or
// exporter.
const (
	otelSDK       = "go.opentelemetry.io/otel/sdk"
	otelExporters = "go.opentelemetry.io/otel/exporters"
)

// rules: for each package tree, the prefixes none of its packages may
// depend on, directly or not.
var rules = []struct {
	tree      string
	forbidden []string
}{
	{"imagesvc/...", []string{module + "cri", module + "sandbox", module + "shim", module + "netplugin", "k8s.io/cri-api", otelSDK, otelExporters}},
	{"netplugin/...", []string{module + "cri", module + "sandbox", module + "shim", module + "imagesvc", "k8s.io/cri-api", otelSDK, otelExporters}},
	{"shim/...", []string{module + "cri", module + "sandbox", module + "imagesvc", module + "netplugin", "k8s.io/cri-api", otelSDK, otelExporters}},
	{"sandbox/...", []string{module + "cri", module + "imagesvc", "k8s.io/cri-api"}},
	// The shim's memory is paid per container: no gRPC server in it.
	// Nor any tracing: spans of shim calls are made on berthd's side.
	{"cmd/berth-shim", []string{"google.golang.org/grpc/internal/transport", "k8s.io/", "go.opentelemetry.io/"}},
	{"cmd/berth-pause", []string{module, "google.golang.org/grpc"}},
}

func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	for _, r := range rules {
		t.Run(r.tree, func(t *testing.T) {
			// Non-test dependencies of every package in the tree.
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+r.tree).CombinedOutput()
			if err != nil {
				t.Fatalf("go list %s: %v\n%s", r.tree, err, out)
			}
			self := module + strings.TrimSuffix(r.tree, "/...")
			for _, dep := range strings.Fields(string(out)) {
				if strings.HasPrefix(dep, self) {
					continue
				}
				for _, f := range r.forbidden {
					if strings.HasPrefix(dep, f) {
						t.Errorf("%s depends on %s (forbidden: %s)", r.tree, dep, f)
					}
				}
			}
		})
	}
}
