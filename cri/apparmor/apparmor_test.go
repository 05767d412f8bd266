package apparmor

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	mobyapparmor "github.com/moby/profiles/apparmor"
)

// fakeHost lays out an AppArmor securityfs and module parameter in a
// temporary directory and returns them with the profiles list.
func fakeHost(t *testing.T, enabled, profiles string) (param, fsDir string) {
	t.Helper()
	dir := t.TempDir()
	param = filepath.Join(dir, "enabled")
	fsDir = filepath.Join(dir, "apparmor")
	if err := os.WriteFile(param, []byte(enabled), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fsDir, "profiles"), []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	return param, fsDir
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestEnabled(t *testing.T) {
	param, fsDir := fakeHost(t, "Y\n", "")
	if !newHost(param, fsDir, nil, quiet()).Enabled() {
		t.Error("Y with securityfs: not enabled")
	}
	param, fsDir = fakeHost(t, "N\n", "")
	if newHost(param, fsDir, nil, quiet()).Enabled() {
		t.Error("N: enabled")
	}
	param, _ = fakeHost(t, "Y\n", "")
	if newHost(param, filepath.Join(t.TempDir(), "none"), nil, quiet()).Enabled() {
		t.Error("Y without securityfs: enabled")
	}
	if newHost(filepath.Join(t.TempDir(), "none"), fsDir, nil, quiet()).Enabled() {
		t.Error("no module parameter: enabled")
	}
}

func TestLoaded(t *testing.T) {
	param, fsDir := fakeHost(t, "Y\n", "berth-default-old (enforce)\n/usr/bin/man (enforce)\nk8s-deny-write (complain)\n"+
		"ubuntu_pro//apt_methods (enforce)\nspaced name (enforce)\n")
	h := newHost(param, fsDir, nil, quiet())
	for name, want := range map[string]bool{
		"berth-default": false, "/usr/bin/man": true, "k8s-deny-write": true, "k8s": false,
		"ubuntu_pro//apt_methods": true, "ubuntu_pro": false, "spaced name": true, "spaced": false,
	} {
		if got, err := h.Loaded(name); err != nil || got != want {
			t.Errorf("Loaded(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
}

// fakeParser puts an apparmor_parser in PATH that records its arguments,
// keeps the profile file it was given and marks berth-default loaded in
// the fake securityfs; fail makes it exit 1 with a message instead.
func fakeParser(t *testing.T, fsDir string, fail bool) (argsFile, profileFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	profileFile = filepath.Join(dir, "profile")
	script := "#!/bin/sh\necho \"$@\" >> " + argsFile + "\n"
	if fail {
		script += "echo 'apparmor_parser: Unable to replace \"berth-default\"' >&2\nexit 1\n"
	} else {
		script += "cp \"$2\" " + profileFile + "\necho 'berth-default (enforce)' >> " + filepath.Join(fsDir, "profiles") + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "apparmor_parser"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return argsFile, profileFile
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// The real loader (moby's template and apparmor_parser -Kr) runs against
// a fake apparmor_parser: the profile text is what Docker, containerd and
// CRI-O load, named berth-default; DefaultProfile loads it only when the
// kernel lacks it.
func TestDefaultProfileLoads(t *testing.T) {
	param, fsDir := fakeHost(t, "Y\n", "/usr/bin/man (enforce)\n")
	argsFile, profileFile := fakeParser(t, fsDir, false)
	h := newHost(param, fsDir, mobyapparmor.InstallDefault, quiet())
	if err := h.LoadDefault(); err != nil {
		t.Fatal(err)
	}
	args := lines(t, argsFile)
	if len(args) != 1 || !strings.HasPrefix(args[0], "-Kr ") {
		t.Fatalf("apparmor_parser args %q, want one -Kr load", args)
	}
	text, err := os.ReadFile(profileFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"profile berth-default flags=(attach_disconnected,mediate_deleted) {",
		"deny mount,",
		"signal (send,receive) peer=berth-default,",
		"ptrace (trace,read,tracedby,readby) peer=berth-default,",
		"deny @{PROC}/sysrq-trigger rwklx,",
		"deny /sys/firmware/** rwklx,",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("profile lacks %q:\n%s", want, text)
		}
	}
	for range 2 {
		if name, err := h.DefaultProfile(); err != nil || name != DefaultProfileName {
			t.Fatalf("DefaultProfile() = %q, %v", name, err)
		}
	}
	if n := len(lines(t, argsFile)); n != 1 {
		t.Fatalf("apparmor_parser ran %d times, want once: DefaultProfile reloads a loaded profile", n)
	}
	// Removed behind berthd's back: the next use loads it again.
	if err := os.WriteFile(filepath.Join(fsDir, "profiles"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if name, err := h.DefaultProfile(); err != nil || name != DefaultProfileName {
		t.Fatalf("DefaultProfile() after removal = %q, %v", name, err)
	}
	if n := len(lines(t, argsFile)); n != 2 {
		t.Fatalf("apparmor_parser ran %d times, want a reload after removal", n)
	}
}

func TestDefaultProfileLoadFails(t *testing.T) {
	param, fsDir := fakeHost(t, "Y\n", "")
	fakeParser(t, fsDir, true)
	h := newHost(param, fsDir, mobyapparmor.InstallDefault, quiet())
	err := h.LoadDefault()
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "Unable to replace") {
		t.Fatalf("LoadDefault() = %v, want FailedPrecondition with apparmor_parser's output", err)
	}
	if _, err := h.DefaultProfile(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("DefaultProfile() = %v, want FailedPrecondition", err)
	}
}

func TestDisabledNeverLoads(t *testing.T) {
	param, fsDir := fakeHost(t, "N\n", "")
	called := false
	h := newHost(param, fsDir, func(string) error { called = true; return nil }, quiet())
	if err := h.LoadDefault(); !errors.Is(err, errdefs.ErrFailedPrecondition) || called {
		t.Fatalf("LoadDefault() on a host without AppArmor = %v (installer called %v)", err, called)
	}
}
