package server

import (
	"errors"
	"strconv"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/imagesvc"
)

func TestLogPath(t *testing.T) {
	for _, tc := range []struct {
		dir, rel, want string
		bad            bool
	}{
		{"/var/log/pods/p", "c/0.log", "/var/log/pods/p/c/0.log", false},
		{"/var/log/pods/p", "", "", false},
		{"/var/log/pods/p", "../other/0.log", "", true},
		{"/var/log/pods/p", "c/../../x.log", "", true},
		{"/var/log/pods/p", "..", "", true},
		{"/var/log/pods/p", ".", "", true},
		{"", "c/0.log", "", true},
		{"/var/log/pods/p", "/etc/passwd", "/var/log/pods/p/etc/passwd", false},
	} {
		got, err := logPath(tc.dir, tc.rel)
		if tc.bad {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("logPath(%q, %q) = %q, %v; want InvalidArgument", tc.dir, tc.rel, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("logPath(%q, %q) = %q, %v; want %q", tc.dir, tc.rel, got, err, tc.want)
		}
	}
}

func TestValidatePodConfig(t *testing.T) {
	ok := &runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Name: "a", Namespace: "ns", Uid: "u"}}
	if err := validatePodConfig(ok); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*runtime.PodSandboxConfig{
		"nil":          nil,
		"no metadata":  {},
		"no name":      {Metadata: &runtime.PodSandboxMetadata{Namespace: "ns"}},
		"no namespace": {Metadata: &runtime.PodSandboxMetadata{Name: "a"}},
		"relative log": {Metadata: ok.Metadata, LogDirectory: "var/log"},
		"bad bandwidth": {Metadata: ok.Metadata, Annotations: map[string]string{
			"kubernetes.io/ingress-bandwidth": "fast"}},
	} {
		if err := validatePodConfig(c); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestKeysDistinguishAttempts(t *testing.T) {
	a := podKey(&runtime.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u", Attempt: 0})
	b := podKey(&runtime.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u", Attempt: 1})
	if a == b {
		t.Fatal("attempts share a pod key")
	}
	if containerKey("s", &runtime.ContainerMetadata{Name: "c"}) == containerKey("t", &runtime.ContainerMetadata{Name: "c"}) {
		t.Fatal("containers of two pods share a key")
	}
}

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "10M": 10_000_000, "1Gi": 1 << 30, "500k": 500_000, "100": 100} {
		if got, err := parseBandwidth(in); err != nil || got != want {
			t.Errorf("parseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "-1M", "1Q"} {
		if _, err := parseBandwidth(in); err == nil {
			t.Errorf("parseBandwidth(%q) succeeded", in)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{
		"": 15, "SIGUSR1": 10, "usr1": 10, "9": 9, "SIGCLD": 17, "SIGPOLL": 29,
		// Real-time signals as images (systemd's STOPSIGNAL) and runc name them.
		"SIGRTMIN+3": 37, "RTMIN": 34, "SIGRTMAX-2": 62, "SIGRTMAX": 64, "SIGRTMINPLUS1": 35,
		"SIGRTMIN+31": 0, "SIGRTMAX-31": 0, "SIGNOPE": 0, "65": 0,
	} {
		got, err := parseSignal(in)
		if want == 0 {
			if err == nil {
				t.Errorf("parseSignal(%q) = %d, want error", in, got)
			}
			continue
		}
		if err != nil || int(got) != want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestCRIImageUser(t *testing.T) {
	for user, want := range map[string]string{"": "uid=0", "1000": "uid=1000", "1000:1000": "uid=1000", "nobody": "name=nobody", "app:app": "name=app"} {
		img := imagesvc.Image{ID: "sha256:x", Config: ocispec.Image{Config: ocispec.ImageConfig{User: user}}}
		got := criImage(img)
		var desc string
		if got.Uid != nil {
			desc = "uid=" + strconv.FormatInt(got.Uid.Value, 10)
		} else {
			desc = "name=" + got.Username
		}
		if desc != want {
			t.Errorf("user %q -> %s, want %s", user, desc, want)
		}
	}
}

func TestMatchLabels(t *testing.T) {
	labels := map[string]string{"a": "1", "b": "2"}
	if !matchLabels(nil, labels) || !matchLabels(map[string]string{"a": "1"}, labels) {
		t.Fatal("matching selector rejected")
	}
	if matchLabels(map[string]string{"a": "2"}, labels) || matchLabels(map[string]string{"c": ""}, labels) {
		t.Fatal("non-matching selector accepted")
	}
}
