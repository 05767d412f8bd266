package specgen

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func applyProcess(s *specs.Spec, in Input, m nsModes) error {
	args, err := processArgs(in.Config, in.Image)
	if err != nil {
		return err
	}
	p := s.Process
	p.Args = args
	p.Terminal = in.Config.GetTty()
	p.Cwd = workingDir(in.Config, in.Image)
	hostname := in.Sandbox.GetHostname()
	if !m.hostNetwork && hostname != "" {
		// The UTS namespace is the pod's, shared; setting it again is a no-op
		// but lets runc validate that the container has one.
		s.Hostname = hostname
	}
	var base []string
	if hostname != "" {
		base = append(base, hostnameEnv+"="+hostname)
	}
	p.Env = mergeEnv(p.Env, base, in.Image.Env, configEnv(in.Config))
	user, err := resolveProcessUser(in)
	if err != nil {
		return err
	}
	p.User = user
	return nil
}

// processArgs follows kubelet/Docker semantics: a container command
// replaces the image entrypoint *and* cmd; container args replace only
// the image cmd.
func processArgs(c *runtime.ContainerConfig, img ocispec.ImageConfig) ([]string, error) {
	var args []string
	if len(c.GetCommand()) > 0 {
		args = append(append(args, c.GetCommand()...), c.GetArgs()...)
	} else {
		cmd := img.Cmd
		if len(c.GetArgs()) > 0 {
			cmd = c.GetArgs()
		}
		args = append(append(args, img.Entrypoint...), cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no command specified: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

func workingDir(c *runtime.ContainerConfig, img ocispec.ImageConfig) string {
	switch {
	case c.GetWorkingDir() != "":
		return c.GetWorkingDir()
	case img.WorkingDir != "":
		return img.WorkingDir
	}
	return "/"
}

func configEnv(c *runtime.ContainerConfig) []string {
	env := make([]string, 0, len(c.GetEnvs()))
	for _, kv := range c.GetEnvs() {
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	return env
}

// mergeEnv appends each layer of KEY=VALUE entries in turn; a later entry
// replaces an earlier one with the same key in place, so the order of
// first appearance is kept.
func mergeEnv(layers ...[]string) []string {
	var out []string
	index := map[string]int{}
	for _, layer := range layers {
		for _, kv := range layer {
			key, _, _ := strings.Cut(kv, "=")
			if i, ok := index[key]; ok {
				out[i] = kv
				continue
			}
			index[key] = len(out)
			out = append(out, kv)
		}
	}
	return out
}
