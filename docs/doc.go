// Package docs holds berth's operator documentation. The config reference
// (config-reference.md) is generated from the config struct, its comments
// and its embedded defaults; TestConfigReferenceUpToDate fails when it is
// stale. Regenerate it with `go generate ./docs`.
package docs

//go:generate go test -run TestConfigReferenceUpToDate -update .
