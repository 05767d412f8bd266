package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenRefusesHostilePaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string
	}{
		{"nothing there", func(*testing.T, string) {}, ""},
		{"own stale socket", func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}, ""},
		{"symlink", func(t *testing.T, p string) {
			target := filepath.Join(filepath.Dir(p), "elsewhere")
			if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, "symlink"},
		{"regular file", func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a socket"},
		{"socket of another user", func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by uid 65534"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("/tmp", "bs")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			p := filepath.Join(dir, "berth.sock")
			tc.prepare(t, p)
			before, _ := os.Lstat(p)
			l, err := listen(p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("listen: %v", err)
				}
				defer l.Close()
				st, err := os.Stat(p)
				if err != nil || st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Uid != 0 {
					t.Errorf("socket %v mode %v, want 0660 owned by root", err, st.Mode())
				}
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("listen succeeded over a %s", tc.name)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("listen: %v, want it to say %q", err, tc.wantErr)
			}
			if after, _ := os.Lstat(p); after == nil || !os.SameFile(before, after) {
				t.Errorf("the %s at the socket path was replaced", tc.name)
			}
		})
	}
}

// TestSocketRefusesOtherUsers connects as nobody: the 0660 root socket
// must refuse it, while root connects.
func TestSocketRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// Under /usr/bin: an interpreter under /root (pyenv) is not
	// executable by the unprivileged user.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3 to connect as another user")
	}
	dir, err := os.MkdirTemp("/tmp", "bs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "berth.sock")
	l, err := listen(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	connect := func(uid uint32) error {
		cmd := exec.Command(py, "-c", "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])", p)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil && !strings.Contains(string(out), "PermissionError") {
			t.Fatalf("connect as %d failed for another reason: %v: %s", uid, err, out)
		}
		return err
	}
	if err := connect(0); err != nil {
		t.Errorf("root cannot connect: %v", err)
	}
	if err := connect(65534); err == nil {
		t.Errorf("uid 65534 connected to the CRI socket")
	}
}
