// Command nriplugin is an NRI plugin for berth's e2e tests, built on the
// NRI module's own stub (github.com/containerd/nri/pkg/stub). Its
// behaviour follows its name, so one binary serves as each of the sample
// plugins the NRI project ships (their modules are not on the Go module
// proxy this project builds from), reading the same kind of per-container
// annotations:
//
//	device-injector    devices.noderesource.dev/container.<name>: JSON list of {path, type, major, minor, file_mode}
//	ulimit-adjuster    ulimits.noderesource.dev/container.<name>: JSON list of {type, hard, soft}
//	hook-injector      hooks.berth.test/container.<name>: a host file a createRuntime hook writes the container's state to
//	resource-updater   cpushares.berth.test/container.<name>: CPU shares it sets on the running container, on its own, after start
//	hang               blocks in CreateContainer (touching -marker first) until it is killed
//
// Started by berthd from its plugin dir (as IDX-NAME), it takes its name
// and index from there; started by hand, from -name and -idx, and
// connects to -socket.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type plugin struct {
	kind   string
	marker string
	stub   stub.Stub
}

func annotation(pod *api.PodSandbox, ctr *api.Container, prefix string) (string, bool) {
	key := prefix + "/container." + ctr.GetName()
	if v, ok := ctr.GetAnnotations()[key]; ok {
		return v, true
	}
	v, ok := pod.GetAnnotations()[key]
	return v, ok
}

type device struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Major    int64  `json:"major"`
	Minor    int64  `json:"minor"`
	FileMode uint32 `json:"file_mode"`
}

type rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	adj := &api.ContainerAdjustment{}
	switch p.kind {
	case "device-injector":
		v, ok := annotation(pod, ctr, "devices.noderesource.dev")
		if !ok {
			return nil, nil, nil
		}
		var devs []device
		if err := json.Unmarshal([]byte(v), &devs); err != nil {
			return nil, nil, fmt.Errorf("devices annotation: %w", err)
		}
		for _, d := range devs {
			ld := &api.LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor}
			if d.FileMode != 0 {
				ld.FileMode = api.FileMode(d.FileMode)
			}
			adj.AddDevice(ld)
		}
	case "ulimit-adjuster":
		v, ok := annotation(pod, ctr, "ulimits.noderesource.dev")
		if !ok {
			return nil, nil, nil
		}
		var rls []rlimit
		if err := json.Unmarshal([]byte(v), &rls); err != nil {
			return nil, nil, fmt.Errorf("ulimits annotation: %w", err)
		}
		for _, r := range rls {
			adj.AddRlimit(r.Type, r.Hard, r.Soft)
		}
	case "hook-injector":
		v, ok := annotation(pod, ctr, "hooks.berth.test")
		if !ok {
			return nil, nil, nil
		}
		adj.AddHooks(&api.Hooks{CreateRuntime: []*api.Hook{{
			Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + v},
		}}})
	case "hang":
		if p.marker != "" {
			_ = os.WriteFile(p.marker, []byte(ctr.GetName()), 0o644)
		}
		select {}
	default:
		return nil, nil, nil
	}
	return adj, nil, nil
}

// PostStartContainer asks, on the plugin's own, for new CPU shares of
// the container that started: an unsolicited update, after the event.
func (p *plugin) PostStartContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	if p.kind != "resource-updater" {
		return nil
	}
	v, ok := annotation(pod, ctr, "cpushares.berth.test")
	if !ok {
		return nil
	}
	var shares uint64
	if _, err := fmt.Sscan(v, &shares); err != nil {
		return fmt.Errorf("cpushares annotation: %w", err)
	}
	u := &api.ContainerUpdate{ContainerId: ctr.GetId()}
	u.SetLinuxCPUShares(shares)
	// The runtime holds the container while this event runs: ask after.
	go func() {
		failed, err := p.stub.UpdateContainers([]*api.ContainerUpdate{u})
		if err != nil || len(failed) > 0 {
			fmt.Fprintf(os.Stderr, "update of %s failed: %v %v\n", ctr.GetId(), failed, err)
		}
	}()
	return nil
}

func main() {
	name := flag.String("name", "", "plugin name (default: from the runtime, or the binary's)")
	idx := flag.String("idx", "", "plugin index")
	socket := flag.String("socket", "", "NRI socket of an external plugin")
	marker := flag.String("marker", "", "file the hang plugin writes when it is blocked")
	flag.Parse()
	kind := *name
	if kind == "" {
		kind = os.Getenv("NRI_PLUGIN_NAME")
	}
	if kind == "" {
		base := os.Args[0][strings.LastIndex(os.Args[0], "/")+1:]
		if i := strings.IndexByte(base, '-'); i == 2 {
			base = base[3:]
		}
		kind = base
	}
	p := &plugin{kind: kind, marker: *marker}
	opts := []stub.Option{}
	if *name != "" {
		opts = append(opts, stub.WithPluginName(*name))
	}
	if *idx != "" {
		opts = append(opts, stub.WithPluginIdx(*idx))
	}
	if *socket != "" {
		opts = append(opts, stub.WithSocketPath(*socket))
	}
	s, err := stub.New(p, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nriplugin:", err)
		os.Exit(1)
	}
	p.stub = s
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "nriplugin:", err)
		os.Exit(1)
	}
}
