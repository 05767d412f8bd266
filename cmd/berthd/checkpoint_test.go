package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckpointCmdUsage(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "ck.tar")
	if err := os.WriteFile(archive, []byte("not a tar"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "layout")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"checkpoint"}, "usage: berthd checkpoint"},
		{"unknown subcommand", []string{"checkpoint", "import"}, "usage: berthd checkpoint"},
		{"missing DIR", []string{"checkpoint", "export-containerd", "--netns", "/n", archive}, "usage: berthd checkpoint"},
		{"relative bind", []string{"checkpoint", "export-containerd", "--bind", "etc/hosts=/x", archive, out}, "both absolute"},
		{"bind without source", []string{"checkpoint", "export-containerd", "--bind", "/etc/hosts", archive, out}, "DEST=SRC"},
		{"corrupt archive", []string{"checkpoint", "export-containerd", "--netns", "/n", archive, out}, "corrupt"},
	} {
		err := run(tc.args, io.Discard, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if _, serr := os.Lstat(out); serr == nil {
			t.Errorf("%s: output directory left behind", tc.name)
		}
	}
	// Nothing unpacked is left beside the output either.
	if e, _ := os.ReadDir(filepath.Dir(out)); len(e) > 0 {
		t.Errorf("left beside the output: %v", e)
	}
}
