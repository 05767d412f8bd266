package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestImagesRun builds every image (agnhost and nnp replaced by scripts)
// and runs, chrooted into each flattened file system, the programs the
// specs run there: a missing library or interpreter fails here, not in a
// 20-minute suite run.
func TestImagesRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	if _, err := os.Stat(busyboxStatic); err != nil {
		t.Skip("needs busybox-static")
	}
	if err := exec.Command("apt-cache", "show", "nginx").Run(); err != nil {
		t.Skip("needs Debian package lists (apt-get update) for nginx")
	}
	bin := t.TempDir()
	for name, body := range map[string]string{
		"agnhost":       "#!/bin/sh\necho agnhost \"$@\"\n",
		"nnp":           "#!/bin/sh\necho nnp\n",
		"localhost.crt": "crt", "localhost.key": "key",
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pause, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	debs := os.Getenv("NODE_E2E_DEBS") // a warm cache, else a download
	if debs == "" {
		debs = t.TempDir()
	}
	nmeter := filepath.Join(t.TempDir(), "nmeter")
	if out, err := nmeterBuild(nmeter).CombinedOutput(); err != nil {
		t.Fatalf("build nmeter: %v\n%s", err, out)
	}
	b := &imageBuilder{bin: bin, debs: debs, berthPause: pause, nmeter: nmeter}
	imgs, err := b.build(false)
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][][]string{
		busyboxRepo: {{"/bin/sh", "-c", "id -u && wget --help 2>&1 | head -1"},
			{"/bin/sh", "-c", "date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z | grep -E '^[0-9-]+T[0-9:]+[.][0-9]{3}Z$'"}},
		agnhostRepo: {{"/agnhost-2", "pause"}, {"/bin/bash", "-c", "echo ok"}, {"/usr/bin/curl", "--version"},
			{"/bin/sh", "-c", "id user-defined-in-image | grep -q 50000"}},
		nginxRepo:  {{"/usr/sbin/nginx", "-t"}},
		nonewprivs: {{"/bin/sh", "-c", "test -u /usr/local/bin/nnp && nnp"}},
		ipcUtils:   {{"/bin/sh", "-c", "ipcs -m | awk '{print $2}'"}},
		glibcDNS:   {{"/bin/sh", "-c", "echo $(hostname)';'$(hostname -f)"}},
	}
	for ref, cmds := range checks {
		root := t.TempDir()
		if err := flatten(imgs[ref], root); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		for _, c := range cmds {
			out, err := exec.Command("chroot", append([]string{root}, c...)...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: %s: %v\n%s", ref, strings.Join(c, " "), err, out)
			}
		}
	}
	for _, pair := range [][2]string{{agnhostRepo, agnhostPrev}, {nginxRepo, nginxNewRepo}} {
		d1, _ := imgs[pair[0]].Digest()
		d2, _ := imgs[pair[1]].Digest()
		if d1 == d2 {
			t.Errorf("%s and %s share digest %s", pair[0], pair[1], d1)
		}
	}
}

// flatten writes img's merged file system under root.
func flatten(img v1.Image, root string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if h.Mode&0o4000 != 0 {
				if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|os.ModeSetuid); err != nil {
					return err
				}
			}
		}
	}
}

// nmeterBuild builds the stand-in static, as run.sh does.
func nmeterBuild(out string) *exec.Cmd {
	cmd := exec.Command("go", "build", "-o", out, "../nmeter")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}
