package api

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestExitFile(t *testing.T) {
	tests := []struct {
		name    string
		content string // written raw when set, else WriteExitFile
		in      ExitFile
		wantErr func(error) bool
	}{
		{name: "roundtrip", in: ExitFile{ExitStatus: 143, ExitedAt: 1700000000123456789}},
		{name: "with reason", in: ExitFile{ExitStatus: 137, ExitedAt: 5, Reason: "shim died"}},
		{name: "corrupt", content: "{", wantErr: errdefs.IsDataLoss},
		{name: "future version", content: `{"exit_status":1,"version":2}`, wantErr: errdefs.IsNotImplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.content != "" {
				if err := os.WriteFile(filepath.Join(dir, ExitFileName), []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := WriteExitFile(dir, tc.in); err != nil {
				t.Fatal(err)
			}
			got, err := ReadExitFile(dir)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("ReadExitFile: %v, wrong class", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.in
			want.Version = ExitFileVersion
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
			// No temp files stay behind.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("dir holds %d entries, want only %s", len(ents), ExitFileName)
			}
		})
	}
	if _, err := ReadExitFile(t.TempDir()); !errdefs.IsNotFound(err) {
		t.Errorf("missing exit file: %v, want NotFound", err)
	}
	if err := WriteExitFile("/nonexistent/dir", ExitFile{}); err == nil {
		t.Error("write into missing dir succeeded")
	}
}

func TestShimPid(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadShimPid(dir); !errdefs.IsNotFound(err) {
		t.Fatalf("ReadShimPid empty: %v, want NotFound", err)
	}
	if err := WriteShimPid(dir, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	pid, start, err := ReadShimPid(dir)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("ReadShimPid = %d, %v", pid, err)
	}
	now, err := ProcessStartTime(os.Getpid())
	if err != nil || now != start || start == 0 {
		t.Errorf("start time %d, recorded %d, err %v", now, start, err)
	}
	if _, err := ProcessStartTime(1 << 30); !errdefs.IsNotFound(err) {
		t.Errorf("start time of missing pid: %v, want NotFound", err)
	}
}
