package docs

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite config-reference.md")

const refFile = "config-reference.md"

// TestConfigReferenceUpToDate fails when a config key, comment or default
// changed without regenerating the reference (go generate ./docs).
func TestConfigReferenceUpToDate(t *testing.T) {
	want := ConfigReference()
	if *update {
		if err := os.WriteFile(refFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(refFile)
	if err != nil {
		t.Fatalf("%v (run: go generate ./docs)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run `go generate ./docs` and commit the result", refFile)
	}
}

func TestConfigReferenceCoversEveryTable(t *testing.T) {
	ref := string(ConfigReference())
	for _, want := range []string{
		"## Top level", "## `[grpc]`", "## `[log]`", "## `[runtime]`", "## `[runtime.handlers.<name>]`",
		"## `[registry]`", "## `[cni]`", "## `[streaming]`", "## `[metrics]`",
		"| `root` | string | `\"/var/lib/berth\"` |",
		"| `bin_dirs` | list of string | `[\"/opt/cni/bin\", \"/usr/lib/cni\"]` |",
		"| `handlers` | table of handler by name | crun, runc |",
		"true when berthd lacks CAP_SYS_RESOURCE",
		"debug, info, warn or error *(reload)*",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}
