package api

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadSpec(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSpec(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no spec: %v, want not exist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, SpecFileName), []byte(`{"ociVersion":"1.2.0","linux":{"cgroupsPath":"/x"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	spec, err := ReadSpec(dir)
	if err != nil || spec.Version != "1.2.0" || spec.Linux == nil || spec.Linux.CgroupsPath != "/x" {
		t.Fatalf("ReadSpec = %+v, %v", spec, err)
	}
	if err := os.WriteFile(filepath.Join(dir, SpecFileName), []byte(`{"linux":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSpec(dir); err == nil {
		t.Error("a truncated spec decoded")
	}
}
