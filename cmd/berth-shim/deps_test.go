package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The shim is paid once per container: it must not link the gRPC stack
// (ttrpc needs only grpc/status and grpc/codes) nor berth code outside shim/.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	allowedGRPC := map[string]bool{}
	for _, p := range []string{"codes", "status", "internal", "internal/status", "grpclog",
		"grpclog/internal", "connectivity", "serviceconfig"} {
		allowedGRPC["google.golang.org/grpc/"+p] = true
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "google.golang.org/grpc",
			strings.HasPrefix(dep, "google.golang.org/grpc/") && !allowedGRPC[dep]:
			t.Errorf("shim links %s", dep)
		case strings.HasPrefix(dep, "k8s.io/"):
			t.Errorf("shim links %s", dep)
		case strings.HasPrefix(dep, "github.com/berth-runtime/berth/") &&
			!strings.HasPrefix(dep, "github.com/berth-runtime/berth/shim/") &&
			dep != "github.com/berth-runtime/berth/cmd/berth-shim":
			t.Errorf("shim imports %s from outside shim/", dep)
		}
	}
}
