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
func ReadSpec(bundle string) (*specs.Spec, error) {
	raw, err := os.ReadFile(filepath.Join(bundle, SpecFileName))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	return &spec, nil
}
