package api

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SpecFileName is the OCI spec in a container's bundle: berthd writes it,
// the shim and the runtime read it.
const SpecFileName = "config.json"

// ReadSpec reads and decodes the OCI spec of the bundle directory bundle.
//
// The shim's create and exec paths use the narrower readers below:
// encoding/json keeps the field tables of every type it decodes for the
// life of the process (~240 KB for the whole Spec), and an idle shim
// seldom reaches its first GC, so the decode's garbage stays too. Decoding
// the whole Spec cost each shim ~330 KiB of its 1.6 MiB private memory.
func ReadSpec(bundle string) (*specs.Spec, error) {
	var spec specs.Spec
	if err := readSpecInto(bundle, &spec); err != nil {
		return nil, err
	}
	return &spec, nil
}

// ReadCgroupsPath is the spec's linux.cgroupsPath ("" if it has none).
func ReadCgroupsPath(bundle string) (string, error) {
	var spec struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if err := readSpecInto(bundle, &spec); err != nil {
		return "", err
	}
	if spec.Linux == nil {
		return "", nil
	}
	return spec.Linux.CgroupsPath, nil
}

// ReadProcess is the spec's process (nil if it has none).
func ReadProcess(bundle string) (*specs.Process, error) {
	var spec struct {
		Process *specs.Process `json:"process"`
	}
	if err := readSpecInto(bundle, &spec); err != nil {
		return nil, err
	}
	return spec.Process, nil
}

func readSpecInto(bundle string, v any) error {
	raw, err := os.ReadFile(filepath.Join(bundle, SpecFileName))
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	return nil
}
