package netplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

// netConfig is the network pods are attached to.
type netConfig struct {
	file string
	list *libcni.NetworkConfigList
}

func (c *netConfig) same(o *netConfig) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.file == o.file && bytes.Equal(c.list.Bytes, o.list.Bytes)
}

// loadConfig picks the network as kubelet and other runtimes do: the first
// .conf, .conflist or .json file of dir in lexical order that parses and
// whose plugin binaries exist. Invalid files are skipped (as CRI-O does)
// rather than blocking the node, and named in the error when none is valid.
func loadConfig(dir string, binDirs []string) (*netConfig, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cni config uninitialized: read %q: %w", dir, errdefs.ErrFailedPrecondition)
	}
	sort.Strings(files)
	var problems []string
	for _, f := range files {
		list, err := loadFile(f)
		if err == nil {
			err = checkBinaries(list, binDirs)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		return &netConfig{file: f, list: list}, nil
	}
	if len(problems) == 0 {
		return nil, fmt.Errorf("cni config uninitialized: no network config found in %q: %w", dir, errdefs.ErrFailedPrecondition)
	}
	return nil, fmt.Errorf("cni config uninitialized: no valid network config in %q: %s: %w",
		dir, strings.Join(problems, "; "), errdefs.ErrFailedPrecondition)
}

func loadFile(file string) (*libcni.NetworkConfigList, error) {
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(file, ".conflist") {
		l, err := libcni.ConfListFromFile(file)
		if err != nil {
			return nil, err
		}
		list = l
	} else {
		conf, err := libcni.ConfFromFile(file) //nolint:staticcheck // single-plugin .conf files are still read, as containerd and CRI-O do
		if err != nil {
			return nil, err
		}
		if list, err = libcni.ConfListFromConf(conf); err != nil { //nolint:staticcheck // as above
			return nil, err
		}
	}
	if len(list.Plugins) == 0 {
		return nil, fmt.Errorf("no plugins in network %q", list.Name)
	}
	return inlined(list)
}

// inlined rewrites list so that its Bytes hold every plugin, including ones
// libcni loaded from <confdir>/<name>/*.conf. Bytes is what libcni caches
// and what berth's pending records keep, so a DEL long after the files
// changed still runs the chain that ADD ran.
func inlined(list *libcni.NetworkConfigList) (*libcni.NetworkConfigList, error) {
	raw := map[string]json.RawMessage{}
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, fmt.Errorf("parse network %q: %w", list.Name, err)
	}
	plugins := make([]json.RawMessage, 0, len(list.Plugins))
	for _, p := range list.Plugins {
		plugins = append(plugins, json.RawMessage(p.Bytes))
	}
	var err error
	if raw["plugins"], err = json.Marshal(plugins); err != nil {
		return nil, err
	}
	raw["loadOnlyInlinedPlugins"] = json.RawMessage("true")
	if list.CNIVersion != "" {
		if raw["cniVersion"], err = json.Marshal(list.CNIVersion); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

func checkBinaries(list *libcni.NetworkConfigList, binDirs []string) error {
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, binDirs); err != nil {
			return fmt.Errorf("plugin %q not found in %s", p.Network.Type, strings.Join(binDirs, ":"))
		}
	}
	return nil
}
