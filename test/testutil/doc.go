// Package testutil is the shared harness of berth's black-box tests: it builds
// the berth binaries once per test binary, builds test images from Debian's
// busybox-static, serves them from an in-process OCI registry on 127.0.0.1,
// starts berthd on a temporary root, state dir and socket, and checks that a
// test left no mount, netns pin, shim or pause process, runc container or
// cgroup behind. e2e tests, benchmarks, conformance and fault tests use it.
package testutil
