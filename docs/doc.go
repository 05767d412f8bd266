// Package docs holds berth's operator documentation. The config reference
// (config-reference.md) is generated from the config struct, its comments
// and its embedded defaults; TestConfigReferenceUpToDate fails when it is
// stale. Regenerate it with `go generate ./docs`. TestCRIRPCsPage holds
// cri-rpcs.md to the CRI: a row for every call, marked Unimplemented exactly
// when server.Server leaves the call to its embedded defaults.
// conformance.md is rewritten by `make conformance`
// (test/conformance/record.sh) between its generated-section markers.
package docs

//go:generate go test -run TestConfigReferenceUpToDate -update .
