// Package fault installs fault-injecting stand-ins for the programs berthd
// and its shims execute: an OCI runtime wrapper around runc and a CNI plugin
// around the loopback plugin. Each is a shell script in a directory of its
// own; a test arms a fault by creating a control file in that directory, so
// faults can be switched on and off while berthd runs, and every invocation
// is appended to a calls file the test can read back.
//
// Control files (in the script's directory):
//
//	fail-<cmd>   the next invocations of <cmd> fail; the file's text is the error
//	hang-<cmd>   invocations of <cmd> sleep for an hour (exec'd, so killing
//	             the invocation leaves no process behind)
//	calls        one line "<cmd> <args...>" per invocation, appended
//
// <cmd> is the runc subcommand (create, start, delete, kill, state) or the
// CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS).
package fault

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RuntimeName is the file name of the OCI runtime wrapper.
const RuntimeName = "fault-runc"

// CNIName is the file name (and so the CNI "type") of the fault plugin.
const CNIName = "faultcni"

// runtimeScript finds the runc subcommand after the global flags, so the
// wrapper works for however the shim orders them.
const runtimeScript = `#!/bin/sh
dir=$(dirname "$0")
log=""
cmd=""
prev=""
for a in "$@"; do
	case "$prev" in
	--root|--criu|--rootless|--log-format) prev=""; continue ;;
	--log) log="$a"; prev=""; continue ;;
	esac
	case "$a" in
	--root|--criu|--rootless|--log-format|--log) prev="$a" ;;
	-*) ;;
	*) cmd="$a"; break ;;
	esac
done
echo "$cmd $*" >>"$dir/calls"
if [ -e "$dir/hang-$cmd" ]; then
	exec sleep 3600
fi
if [ -e "$dir/fail-$cmd" ]; then
	msg=$(cat "$dir/fail-$cmd")
	[ -n "$msg" ] || msg="injected $cmd failure"
	if [ -n "$log" ]; then
		printf '{"level":"error","msg":"%%s","time":"2024-01-01T00:00:00Z"}\n' "$msg" >>"$log"
	fi
	echo "$msg" >&2
	exit 1
fi
exec %s "$@"
`

// cniScript delegates to the real loopback plugin unless a fault is armed.
const cniScript = `#!/bin/sh
dir=$(dirname "$0")
cmd="$CNI_COMMAND"
echo "$cmd $CNI_CONTAINERID $CNI_NETNS" >>"$dir/calls"
if [ -e "$dir/hang-$cmd" ]; then
	exec sleep 3600
fi
if [ -e "$dir/fail-$cmd" ]; then
	msg=$(cat "$dir/fail-$cmd")
	[ -n "$msg" ] || msg="injected $cmd failure"
	printf '{"cniVersion":"1.0.0","code":999,"msg":"%%s"}\n' "$msg"
	exit 1
fi
exec %s
`

// Dir is one directory holding a fault-injecting program and its controls.
type Dir string

// Path is the wrapper's executable.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Fail arms a failure of cmd with message msg ("" for a default one).
func (d Dir) Fail(cmd, msg string) error {
	return os.WriteFile(filepath.Join(string(d), "fail-"+cmd), []byte(msg), 0o644)
}

// Hang makes cmd hang until it is killed.
func (d Dir) Hang(cmd string) error {
	return os.WriteFile(filepath.Join(string(d), "hang-"+cmd), nil, 0o644)
}

// Clear disarms every fault.
func (d Dir) Clear() error {
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return fmt.Errorf("read fault dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "fail-") || strings.HasPrefix(e.Name(), "hang-") {
			if err := os.Remove(filepath.Join(string(d), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Calls returns the recorded invocations, one "<cmd> <args>" line each.
func (d Dir) Calls() []string {
	data, err := os.ReadFile(filepath.Join(string(d), "calls"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

// Count returns how many recorded invocations were of cmd.
func (d Dir) Count(cmd string) int {
	n := 0
	for _, c := range d.Calls() {
		if c == cmd || strings.HasPrefix(c, cmd+" ") {
			n++
		}
	}
	return n
}

// InstallRuntime writes the OCI runtime wrapper into dir (created if
// needed), delegating to real (a path or a name looked up in PATH).
func InstallRuntime(dir, real string) (Dir, error) {
	bin, err := exec.LookPath(real)
	if err != nil {
		return "", fmt.Errorf("find runtime %q: %w", real, err)
	}
	return install(dir, RuntimeName, fmt.Sprintf(runtimeScript, shellQuote(bin)))
}

// InstallCNI writes the CNI fault plugin into dir, delegating to the
// loopback plugin found in binDirs; a network config uses it as
// {"type": "faultcni"} with dir among the CNI bin dirs.
func InstallCNI(dir string, binDirs []string) (Dir, error) {
	var loopback string
	for _, b := range binDirs {
		p := filepath.Join(b, "loopback")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			loopback = p
			break
		}
	}
	if loopback == "" {
		return "", fmt.Errorf("no loopback CNI plugin in %v: %w", binDirs, os.ErrNotExist)
	}
	return install(dir, CNIName, fmt.Sprintf(cniScript, shellQuote(loopback)))
}

func install(dir, name, script string) (Dir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make fault dir: %w", err)
	}
	// Written under a temp name and renamed so a concurrent exec never sees
	// a half-written script (ETXTBSY or a truncated program).
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	return Dir(dir), nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
