package task

import "testing"

func TestParseFeatures(t *testing.T) {
	const runc115 = `{"ociVersionMin":"1.0.0","mountOptions":["bind","ro","rbind"],"linux":{"namespaces":["user","pid"]}}`
	const runc152 = `{"mountOptions":["rro","ro"],"linux":{"namespaces":["user","pid"],"mountExtensions":{"idmap":{"enabled":true}}}}`
	const noIdmap = `{"mountOptions":["rro"],"linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":false}}}}`
	for _, tc := range []struct {
		name, doc string
		kernel    bool
		want      Features
	}{
		{"runc 1.1.5", runc115, true, Features{}},
		{"runc 1.5.2", runc152, true, Features{RecursiveReadOnly: true, UserNamespaces: true}},
		{"runc 1.5.2, kernel without idmap", runc152, false, Features{RecursiveReadOnly: true}},
		{"idmap disabled", noIdmap, true, Features{RecursiveReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFeatures([]byte(tc.doc), tc.kernel)
			if err != nil || got != tc.want {
				t.Errorf("parseFeatures = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := parseFeatures([]byte("runc: unknown command"), true); err == nil {
		t.Error("garbage parsed")
	}
}
