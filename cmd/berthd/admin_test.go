package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/imagesvc"
)

// fakeLoader records what it is sent and answers with imgs and err.
type fakeLoader struct {
	got  []byte
	imgs []imagesvc.Image
	err  error
}

func (f *fakeLoader) Load(_ context.Context, r io.Reader) ([]imagesvc.Image, error) {
	var err error
	f.got, err = io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return f.imgs, f.err
}

func TestAdminLoad(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	f := &fakeLoader{imgs: []imagesvc.Image{{ID: "sha256:abc", RepoTags: []string{"example.test/a:1"}}}}
	srv, err := serveAdmin(sock, f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("admin socket mode %o, want 600", perm)
	}

	var out bytes.Buffer
	if err := loadViaDaemon(context.Background(), sock, strings.NewReader("archive bytes"), &out); err != nil {
		t.Fatal(err)
	}
	if string(f.got) != "archive bytes" {
		t.Errorf("daemon got %q", f.got)
	}
	if want := "loaded sha256:abc [example.test/a:1]\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}

	f.err = fmt.Errorf("archive has neither index.json nor manifest.json: %w", errdefs.ErrInvalidArgument)
	f.imgs = nil
	out.Reset()
	err = loadViaDaemon(context.Background(), sock, strings.NewReader("junk"), &out)
	if err == nil || !strings.Contains(err.Error(), "neither index.json") {
		t.Errorf("failed load: %v, want the daemon's reason", err)
	}
}

func TestAdminLoadNoDaemon(t *testing.T) {
	dir := t.TempDir()
	in := strings.NewReader("archive")
	if err := loadViaDaemon(context.Background(), filepath.Join(dir, "missing.sock"), in, io.Discard); !errors.Is(err, errNoDaemon) {
		t.Errorf("missing socket: %v, want errNoDaemon", err)
	}
	// A socket left by a berthd that died refuses connections.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := loadViaDaemon(context.Background(), stale, in, io.Discard); !errors.Is(err, errNoDaemon) {
		t.Errorf("stale socket: %v, want errNoDaemon", err)
	}
	if in.Len() != len("archive") {
		t.Error("the archive was read before a daemon answered: offline load would get a short archive")
	}
}

// Go's profiles are served on the admin socket, as on containerd's debug
// socket.
func TestAdminProfiles(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	srv, err := serveAdmin(sock, &fakeLoader{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://berthd/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Errorf("goroutine profile: %s %.200q", resp.Status, body)
	}
}
