package config

// dropin.go reads drop-in files: every *.toml in config.d beside the main
// file, merged over it in lexical order, as CRI-O merges crio.conf.d and
// containerd its imports. A package installs its own settings as a file
// there without editing the operator's config.toml.
//
// Merge semantics, as CRI-O's: a table merges key by key (a later file
// sets only the keys it names, down to nested tables such as one runtime
// handler); any other value, arrays included, is replaced whole by the
// later file. Handlers keep their rule: once any file names a handler, the
// embedded default set (runc, crun) is replaced by the handlers the files
// name together.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DropInDir is where the drop-ins of the main config file at path live:
// config.d beside it (/etc/berth/config.d for the default path).
func DropInDir(path string) string {
	return filepath.Join(filepath.Dir(path), "config.d")
}

// dropIns lists the regular *.toml files of dir in lexical order; a
// missing dir has none.
func dropIns(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config drop-in dir: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".toml") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	sort.Strings(files)
	return files, nil
}

// loadMerged reads each file, checks it alone for unknown keys and wrong
// types (so an error names the file), merges them in order and decodes
// the result over the defaults. Validation runs on the merged config
// only: a drop-in may name a handler that another file defines.
func loadMerged(files []string) (Config, error) {
	cfg := Default()
	merged := map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return cfg, fmt.Errorf("read config %q: %w", f, err)
		}
		scratch := Default()
		if err := decodeStrict(data, &scratch); err != nil {
			return cfg, fmt.Errorf("config %q: %w", f, err)
		}
		var m map[string]any
		if err := toml.Unmarshal(data, &m); err != nil {
			return cfg, fmt.Errorf("config %q: %w", f, err)
		}
		mergeTables(merged, m)
	}
	data, err := toml.Marshal(merged)
	if err != nil {
		return cfg, fmt.Errorf("merge config files: %w", err)
	}
	if err := Decode(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", strings.Join(quoteAll(files), " + "), err)
	}
	cfg.Files = files
	return cfg, nil
}

// mergeTables sets every key of src in dst: tables merge key by key,
// everything else (arrays included) replaces.
func mergeTables(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if have, ok := dst[k].(map[string]any); ok {
				mergeTables(have, sub)
				continue
			}
		}
		dst[k] = v
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
