package logging

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/cri-client/pkg/logs"
)

type wantLine struct {
	stream Stream
	tag    byte
	size   int
}

func TestCopyFormat(t *testing.T) {
	big := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	tests := []struct {
		name  string
		input string
		want  []wantLine
	}{
		{"short lines", "a\nbc\n", []wantLine{{Stdout, 'F', 1}, {Stdout, 'F', 2}}},
		{"empty line", "\n", []wantLine{{Stdout, 'F', 0}}},
		{"exactly max", big(16384, 'x') + "\n", []wantLine{{Stdout, 'F', 16384}}},
		{"max plus one", big(16385, 'x') + "\n", []wantLine{{Stdout, 'P', 16384}, {Stdout, 'F', 1}}},
		{"40000", big(40000, 'y') + "\n", []wantLine{
			{Stdout, 'P', 16384}, {Stdout, 'P', 16384}, {Stdout, 'F', 40000 - 2*16384}}},
		{"no trailing newline", "a\npartial", []wantLine{{Stdout, 'F', 1}, {Stdout, 'P', 7}}},
		{"long without newline", big(32768, 'z'), []wantLine{{Stdout, 'P', 16384}, {Stdout, 'P', 16384}}},
		{"nothing", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.log")
			w, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Copy(Stdout, strings.NewReader(tc.input)); err != nil {
				t.Fatalf("Copy: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := parseLines(t, raw)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d lines %v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("line %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			// kubelet's reader must reassemble the original content,
			// without a newline the container never wrote.
			stdout, stderr := readBack(t, path)
			wantOut := tc.input
			if stdout != wantOut {
				t.Errorf("read back %d bytes, want %d", len(stdout), len(wantOut))
			}
			if stderr != "" {
				t.Errorf("stderr = %q", stderr)
			}
		})
	}
}

// parseLines checks every line's shape and returns stream, tag and size.
func parseLines(t *testing.T, raw []byte) []wantLine {
	t.Helper()
	var out []wantLine
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			t.Fatalf("unterminated line %q", raw)
		}
		line := string(raw[:i])
		raw = raw[i+1:]
		parts := strings.SplitN(line, " ", 4)
		if len(parts) != 4 {
			t.Fatalf("malformed line %.80q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("bad timestamp: %v", err)
		}
		if len(parts[2]) != 1 || (parts[2] != "P" && parts[2] != "F") {
			t.Fatalf("bad tag %q", parts[2])
		}
		out = append(out, wantLine{Stream(parts[1]), parts[2][0], len(parts[3])})
	}
	return out
}

func readBack(t *testing.T, path string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := logs.ReadLogs(context.Background(), path, "", &logs.LogOptions{}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	return stdout.String(), stderr.String()
}

func TestCopyInterleaved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	var wg sync.WaitGroup
	for _, s := range []struct {
		stream Stream
		r      io.Reader
	}{{Stdout, outR}, {Stderr, errR}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Copy(s.stream, s.r); err != nil {
				t.Errorf("Copy %s: %v", s.stream, err)
			}
		}()
	}
	long := strings.Repeat("L", 20000)
	go func() {
		for i := 0; i < n; i++ {
			_, _ = io.WriteString(outW, "out line\n")
		}
		_, _ = io.WriteString(outW, long+"\n")
		_ = outW.Close()
	}()
	go func() {
		for i := 0; i < n; i++ {
			_, _ = io.WriteString(errW, "err line\n")
		}
		_ = errW.Close()
	}()
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := readBack(t, path)
	if want := strings.Repeat("out line\n", n) + long + "\n"; stdout != want {
		t.Errorf("stdout: got %d bytes, want %d", len(stdout), len(want))
	}
	if want := strings.Repeat("err line\n", n); stderr != want {
		t.Errorf("stderr: got %d bytes, want %d", len(stderr), len(want))
	}
}

func TestDiscardAndReopen(t *testing.T) {
	w, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Copy(Stdout, strings.NewReader("x\n")); err != nil {
		t.Fatalf("discard Copy: %v", err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	w, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Copy(Stdout, strings.NewReader("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := w.Copy(Stderr, strings.NewReader("after\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o640 != 0 {
		t.Errorf("mode %v wider than 0640", perm)
	}
	if out, errOut := readBack(t, path); out != "" || errOut != "after\n" {
		t.Errorf("new file: stdout %q stderr %q", out, errOut)
	}
	if out, _ := readBack(t, path+".1"); out != "before\n" {
		t.Errorf("rotated file: stdout %q", out)
	}
}
