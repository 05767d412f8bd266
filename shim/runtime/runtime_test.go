package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRuntimeErrorClass(t *testing.T) {
	tests := []struct {
		msg string
		is  func(error) bool
	}{
		{"container does not exist", errdefs.IsNotFound},
		{"container not running", errdefs.IsNotFound},
		{"container with id exists: x already exists", errdefs.IsAlreadyExists},
		{"cannot start a container that has stopped", errdefs.IsFailedPrecondition},
		{"runc create failed: unable to start container process", errdefs.IsUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.msg, func(t *testing.T) {
			err := runtimeError("runc", []string{"runc", "kill", "x"}, 1, tc.msg)
			if !tc.is(err) {
				t.Errorf("%v: wrong class", err)
			}
			if want := "runc kill x exited with status 1: " + tc.msg; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

func TestLastLogError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	data := `{"level":"error","msg":"first","time":"t"}
{"level":"warning","msg":"warn","time":"t"}
not json
{"level":"error","msg":"runc create failed: exec: \"x\": not found","time":"t"}
{"level":"info","msg":"later info","time":"t"}
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := lastLogError(path), `runc create failed: exec: "x": not found`; got != want {
		t.Errorf("lastLogError = %q, want %q", got, want)
	}
	if got := lastLogError(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("missing log: %q", got)
	}
}
