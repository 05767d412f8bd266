package reference

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

const hex = "4b6b6f4e9d9b5d6a0e0a6e7c2d8f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f"

func TestParse(t *testing.T) {
	tests := []struct {
		in, want, tagRef, repo string
	}{
		{"busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"busybox:1.36", "docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36", "docker.io/library/busybox"},
		{"library/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"docker.io/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"index.docker.io/library/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"user/app:v1", "docker.io/user/app:v1", "docker.io/user/app:v1", "docker.io/user/app"},
		{"127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b"},
		{"localhost/x", "localhost/x:latest", "localhost/x:latest", "localhost/x"},
		{"localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest", "localhost:5000/x"},
		{"quay.io/a/b", "quay.io/a/b:latest", "quay.io/a/b:latest", "quay.io/a/b"},
		{"busybox@sha256:" + hex, "docker.io/library/busybox@sha256:" + hex, "", "docker.io/library/busybox"},
		{"busybox:1@sha256:" + hex, "docker.io/library/busybox:1@sha256:" + hex, "docker.io/library/busybox:1", "docker.io/library/busybox"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if got := r.TagRef(); got != tc.tagRef {
				t.Errorf("TagRef() = %q, want %q", got, tc.tagRef)
			}
			if got := r.Repository(); got != tc.repo {
				t.Errorf("Repository() = %q, want %q", got, tc.repo)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, in := range []string{
		"", "Busybox", "busy box", "busybox:", "busybox:-x", "busybox@sha256:abc",
		"busybox@md5:" + hex, "a//b", "/busybox", "busybox/", "UPPER/case", "x:" + string(make([]byte, 200)),
	} {
		if _, err := Parse(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Parse(%q) err = %v, want ErrInvalidArgument", in, err)
		}
	}
}

func TestRemote(t *testing.T) {
	r, err := Parse("127.0.0.1:5000/a:t@sha256:" + hex)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := r.Remote(true)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ref.Identifier(), "sha256:"+hex; got != want {
		t.Errorf("Identifier() = %q, want %q", got, want)
	}
	if got := ref.Context().Registry.Scheme(); got != "http" {
		t.Errorf("scheme = %q, want http", got)
	}
	r, _ = Parse("busybox")
	ref, err = r.Remote(false)
	if err != nil {
		t.Fatal(err)
	}
	if got := ref.Context().Registry.Scheme(); got != "https" {
		t.Errorf("scheme = %q, want https", got)
	}
}
