package task

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseFeatures(t *testing.T) {
	const runc115 = `{"ociVersionMin":"1.0.0","mountOptions":["bind","ro","rbind"],"linux":{"namespaces":["user","pid"]}}`
	const runc152 = `{"mountOptions":["rro","ro"],"linux":{"namespaces":["user","pid"],"mountExtensions":{"idmap":{"enabled":true}}}}`
	const noIdmap = `{"mountOptions":["rro"],"linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":false}}}}`
	all := Kernel{IDMap: true, RecursiveReadOnly: true}
	for _, tc := range []struct {
		name, doc string
		kernel    Kernel
		want      Features
	}{
		{"runc 1.1.5", runc115, all, Features{}},
		{"runc 1.5.2", runc152, all, Features{RecursiveReadOnly: true, UserNamespaces: true}},
		{"runc 1.5.2, kernel without idmap", runc152, Kernel{RecursiveReadOnly: true}, Features{RecursiveReadOnly: true}},
		{"runc 1.5.2, kernel before 5.12", runc152, Kernel{IDMap: true}, Features{UserNamespaces: true}},
		{"idmap disabled", noIdmap, all, Features{RecursiveReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFeatures([]byte(tc.doc), tc.kernel)
			if err != nil || got != tc.want {
				t.Errorf("parseFeatures = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := parseFeatures([]byte("runc: unknown command"), Kernel{}); err == nil {
		t.Error("garbage parsed")
	}
}

func TestOCIVersionFor(t *testing.T) {
	for _, tc := range []struct{ max, want string }{
		{"", ""},
		{"1.1.0", "1.1.0"},
		{"1.0.2-dev", "1.0.2-dev"},
		{specs.Version, ""},
		{"9.0.0", ""},
		{"garbage", ""},
	} {
		if got := ociVersionFor(tc.max); got != tc.want {
			t.Errorf("ociVersionFor(%q) = %q, want %q", tc.max, got, tc.want)
		}
	}
	if got, err := parseFeatures([]byte(`{"ociVersionMax":"1.1.0"}`), Kernel{}); err != nil || got.OCIVersion != "1.1.0" {
		t.Errorf("parseFeatures of a 1.1.0 runtime = %+v, %v", got, err)
	}
}
