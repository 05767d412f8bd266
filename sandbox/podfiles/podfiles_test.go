package podfiles

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
)

func TestResolvConf(t *testing.T) {
	tests := []struct {
		name                       string
		servers, searches, options []string
		want                       string
		wantErr                    error
	}{
		{name: "empty", want: ""},
		{name: "servers only", servers: []string{"1.1.1.1", "::1"}, want: "nameserver 1.1.1.1\nnameserver ::1\n"},
		{
			name:    "all",
			servers: []string{"10.0.0.10"}, searches: []string{"a.b", "c"}, options: []string{"ndots:5"},
			want: "search a.b c\nnameserver 10.0.0.10\noptions ndots:5\n",
		},
		{name: "newline injection", servers: []string{"1.1.1.1\nsearch evil"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "empty value", searches: []string{""}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolvConf(tc.servers, tc.searches, tc.options)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	if err := WriteHostname(filepath.Join(dir, "hostname"), "pod-a"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hostname")); string(b) != "pod-a\n" {
		t.Errorf("hostname = %q", b)
	}
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("nameserver 9.9.9.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyHostFile(filepath.Join(dir, "copy"), src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "copy")); string(b) != "nameserver 9.9.9.9\n" {
		t.Errorf("copy = %q", b)
	}
	if err := CopyHostFile(filepath.Join(dir, "empty"), filepath.Join(dir, "missing")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "empty")); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o644 {
		t.Errorf("copy of missing file: %v %v", fi, err)
	}
}

func TestShm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "shm")
	if err := MountShm(dir, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("zero size: %v", err)
	}
	if err := MountShm(dir, 2<<20); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mountinfo.Mounted(dir); !ok {
		t.Fatal("shm not mounted")
	}
	for i := 0; i < 2; i++ {
		if err := UnmountShm(dir); err != nil {
			t.Fatalf("unmount #%d: %v", i, err)
		}
	}
	if ok, _ := mountinfo.Mounted(dir); ok {
		t.Error("shm still mounted")
	}
	if err := UnmountShm(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("unmount of missing dir: %v", err)
	}
}
