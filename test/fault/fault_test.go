package fault

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRuntimeWrapper(t *testing.T) {
	dir := t.TempDir()
	d, err := InstallRuntime(dir, "echo")
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "runtime.log")
	run := func(args ...string) (string, error) {
		out, err := exec.Command(d.Path(RuntimeName), args...).CombinedOutput()
		return string(out), err
	}
	tests := []struct {
		name    string
		arm     func()
		args    []string
		wantErr bool
		wantOut string
	}{
		{"passes through", func() {}, []string{"--root", "/x", "create", "--bundle", "b", "id"}, false, "--root /x create --bundle b id\n"},
		{"fails create", func() { _ = d.Fail("create", "boom") }, []string{"--root", "/x", "--log", logPath, "--log-format", "json", "create", "id"}, true, "boom\n"},
		{"other commands unaffected", func() { _ = d.Fail("create", "boom") }, []string{"--root", "/x", "start", "id"}, false, "--root /x start id\n"},
		{"fails delete", func() { _ = d.Fail("delete", "") }, []string{"--root", "/x", "delete", "--force", "id"}, true, "injected delete failure\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Clear(); err != nil {
				t.Fatal(err)
			}
			tc.arm()
			out, err := run(tc.args...)
			if (err != nil) != tc.wantErr || out != tc.wantOut {
				t.Errorf("run %v: %q, %v; want %q, error %v", tc.args, out, err, tc.wantOut, tc.wantErr)
			}
		})
	}
	logData, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logData), `"level":"error","msg":"boom"`) {
		t.Errorf("runtime log %q lacks the injected error", logData)
	}
	if got := d.Count("create"); got != 2 {
		t.Errorf("Count(create) = %d, want 2 (calls %q)", got, d.Calls())
	}
}

func TestRuntimeWrapperHang(t *testing.T) {
	d, err := InstallRuntime(t.TempDir(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Hang("start"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.Path(RuntimeName), "start", "id")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("hanging start returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The wrapper exec'd sleep: killing the process leaves nothing behind.
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
	if strings.TrimSpace(string(comm)) != "sleep" {
		t.Errorf("hanging process is %q, want sleep (exec'd)", comm)
	}
	_ = cmd.Process.Kill()
	<-done
}

func TestCNIPlugin(t *testing.T) {
	bin := t.TempDir()
	fake := filepath.Join(bin, "loopback")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho real-$CNI_COMMAND\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := InstallCNI(t.TempDir(), []string{"/nonexistent", bin})
	if err != nil {
		t.Fatal(err)
	}
	run := func(cmd string) (string, error) {
		c := exec.Command(d.Path(CNIName))
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID=abc", "CNI_NETNS=/x")
		out, err := c.Output()
		return string(out), err
	}
	if out, err := run("ADD"); err != nil || out != "real-ADD\n" {
		t.Errorf("ADD without fault: %q, %v", out, err)
	}
	if err := d.Fail("ADD", "no ips"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("ADD"); err == nil || !strings.Contains(out, `"code":999,"msg":"no ips"`) {
		t.Errorf("ADD with fault: %q, %v", out, err)
	}
	if out, err := run("DEL"); err != nil || out != "real-DEL\n" {
		t.Errorf("DEL with an ADD fault: %q, %v", out, err)
	}
	if d.Count("ADD") != 2 || d.Count("DEL") != 1 {
		t.Errorf("calls %q", d.Calls())
	}
	if _, err := InstallCNI(t.TempDir(), []string{"/nonexistent"}); err == nil {
		t.Errorf("InstallCNI without a loopback plugin succeeded")
	}
}
