package api

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

func TestReadNarrow(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, SpecFileName), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"ociVersion":"1.2.0","process":{"args":["sh"],"env":["A=1"],"cwd":"/w"},"linux":{"cgroupsPath":"s.slice:berth:x"}}`)
	if p, err := ReadCgroupsPath(dir); err != nil || p != "s.slice:berth:x" {
		t.Errorf("ReadCgroupsPath = %q, %v", p, err)
	}
	proc, err := ReadProcess(dir)
	if err != nil || proc == nil || !slices.Equal(proc.Args, []string{"sh"}) || !slices.Equal(proc.Env, []string{"A=1"}) || proc.Cwd != "/w" {
		t.Errorf("ReadProcess = %+v, %v", proc, err)
	}
	write(`{"ociVersion":"1.2.0"}`)
	if p, err := ReadCgroupsPath(dir); err != nil || p != "" {
		t.Errorf("no linux: ReadCgroupsPath = %q, %v", p, err)
	}
	if proc, err := ReadProcess(dir); err != nil || proc != nil {
		t.Errorf("no process: ReadProcess = %+v, %v", proc, err)
	}
	write(`{"process":`)
	if _, err := ReadProcess(dir); err == nil {
		t.Error("a truncated spec decoded")
	}
	if _, err := ReadCgroupsPath(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no spec: %v, want not exist", err)
	}
}
