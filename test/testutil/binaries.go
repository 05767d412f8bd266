package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinDirEnv names prebuilt berthd, berth-shim and berth-pause binaries; when
// unset, BuildBinaries builds them from the module source.
const BinDirEnv = "BERTH_BIN_DIR"

// Binaries are the paths of the berth programs under test.
type Binaries struct {
	Berthd string
	Shim   string
	Pause  string
}

// BuildBinaries returns the binaries from $BERTH_BIN_DIR or builds them with
// `go build` into a fresh temporary directory. cleanup removes what it built;
// call it once, after every test ran (TestMain).
func BuildBinaries() (b Binaries, cleanup func(), err error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		b = binariesIn(dir)
		for _, p := range []string{b.Berthd, b.Shim, b.Pause} {
			if _, err := os.Stat(p); err != nil {
				return b, nil, fmt.Errorf("%s=%q: %w", BinDirEnv, dir, err)
			}
		}
		return b, func() {}, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return b, nil, err
	}
	dir, err := os.MkdirTemp("", "berth-bin")
	if err != nil {
		return b, nil, fmt.Errorf("make binary dir: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/berthd", "./cmd/berth-shim", "./cmd/berth-pause")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return b, nil, fmt.Errorf("go build berth binaries: %w\n%s", err, out)
	}
	return binariesIn(dir), cleanup, nil
}

func binariesIn(dir string) Binaries {
	return Binaries{
		Berthd: filepath.Join(dir, "berthd"),
		Shim:   filepath.Join(dir, "berth-shim"),
		Pause:  filepath.Join(dir, "berth-pause"),
	}
}

// moduleRoot finds the directory of the berth go.mod from the test's cwd.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the berth module: go env GOMOD is empty")
	}
	return filepath.Dir(mod), nil
}
