package netplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// waitDelay bounds how long a plugin's leftover children may hold its
// stdout after the plugin was killed; without it a shell plugin whose
// child sleeps would keep Setup waiting past its deadline.
const waitDelay = 2 * time.Second

// pluginExec runs plugin binaries like libcni's RawExec, but in their own
// process group that is killed as a whole when the context ends, and with
// stderr going to the logger instead of berthd's stderr.
type pluginExec struct {
	version.PluginDecoder
	log *slog.Logger
}

var _ invoke.Exec = (*pluginExec)(nil)

func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		stdout, stderr, err := e.run(ctx, pluginPath, stdin, environ)
		// The binary may be being replaced by a DaemonSet installing it.
		if errors.Is(err, syscall.ETXTBSY) && attempt < 5 && ctx.Err() == nil {
			time.Sleep(time.Second)
			continue
		}
		if len(stderr) > 0 {
			e.log.DebugContext(ctx, "cni plugin stderr", "plugin", pluginPath, "stderr", string(stderr))
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, fmt.Errorf("run plugin %q: %w", pluginPath, ctxErr)
			}
			return nil, pluginErr(err, stdout, stderr)
		}
		return stdout, nil
	}
}

func (e *pluginExec) run(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, []byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole process group the plugin leads.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

func (e *pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// pluginErr turns a failed run into the CNI error the plugin printed, as
// libcni does, so callers can read its code.
func pluginErr(err error, stdout, stderr []byte) error {
	emsg := &types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
	default:
		if perr := json.Unmarshal(stdout, emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return emsg
}
