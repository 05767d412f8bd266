package netplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

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

// run runs the plugin with its stdin, stdout and stderr in memory files
// rather than pipes, so no goroutine of berthd has to copy them while it
// runs. With pipes, os/exec gives its copying goroutines a WaitDelay after
// the plugin exits and then closes the pipes: berthd starting 250 pods at
// once on 2 cores (full-node bench) did not get back to the bridge
// plugin's stdout within 2 s and read only its first 512 bytes, and the
// pod failed. Without one, a child the plugin left behind holding stdout
// would keep the call waiting for as long as it lives. A file is there to
// read after the plugin exits, whoever still holds it.
func (e *pluginExec) run(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, []byte, error) {
	in, err := memFile("cni-stdin")
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	if _, err := in.Write(stdin); err != nil {
		return nil, nil, fmt.Errorf("write plugin stdin: %w", err)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("rewind plugin stdin: %w", err)
	}
	out, err := memFile("cni-stdout")
	if err != nil {
		return nil, nil, err
	}
	defer out.Close()
	errOut, err := memFile("cni-stderr")
	if err != nil {
		return nil, nil, err
	}
	defer errOut.Close()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole process group the plugin leads.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	runErr := cmd.Run()
	stdout, err := readMemFile(out)
	if err != nil {
		return nil, nil, fmt.Errorf("read plugin stdout: %w", err)
	}
	stderr, err := readMemFile(errOut)
	if err != nil {
		return nil, nil, fmt.Errorf("read plugin stderr: %w", err)
	}
	return stdout, stderr, runErr
}

// maxPluginOutput bounds what berthd reads of a plugin's stdout or stderr;
// a CNI result is a few KiB.
const maxPluginOutput = 16 << 20

// memFile is an anonymous file in memory, gone when the last descriptor
// to it is closed.
func memFile(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for plugin %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// readMemFile reads f from its start, at most maxPluginOutput bytes.
func readMemFile(f *os.File) ([]byte, error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxPluginOutput+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPluginOutput {
		return nil, fmt.Errorf("%s: more than %d bytes", f.Name(), maxPluginOutput)
	}
	return data, nil
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
		// Unlike libcni, say how it ended and what it wrote to stderr when
		// stdout is no CNI error: it is all there is to go on.
		if perr := json.Unmarshal(stdout, emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed (%v) but error parsing its diagnostic message %q: %v; stderr %q", err, string(stdout), perr, string(stderr))
		} else if emsg.Code == 0 && emsg.Msg == "" {
			emsg.Msg = fmt.Sprintf("netplugin failed (%v) with a diagnostic message that is no error %q; stderr %q", err, string(stdout), string(stderr))
		}
	}
	return emsg
}
