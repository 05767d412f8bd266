// Package e2e drives the real berthd, berth-shim and berth-pause over the CRI
// socket with kubelet's own client (k8s.io/cri-client), against real runc and
// an in-process registry holding busybox-static images. Every test checks
// afterwards that nothing leaked.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

// Built once per test binary in TestMain; read-only afterwards.
var (
	bins   testutil.Binaries
	reg    *testutil.Registry
	images testutil.TestImages
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips itself; nothing to build.
		return m.Run()
	}
	var cleanup func()
	var err error
	if bins, cleanup, err = testutil.BuildBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	if reg, err = testutil.StartRegistry(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if images, err = testutil.PushTestImages(ctx, reg); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// startDaemon starts a berthd that trusts the test registry over plain HTTP.
func startDaemon(t *testing.T) *testutil.Daemon {
	t.Helper()
	return testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries:      bins,
		InsecureHosts: []string{reg.Host},
	})
}

// sharedCase is one test of TestShared: it gets the package's shared daemon
// and must remove every pod it made; the runner then asserts no leaks.
type sharedCase struct {
	name string
	fn   func(t *testing.T, d *testutil.Daemon)
}

// TestShared runs every test that does not kill the daemon against one berthd.
func TestShared(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	var cases []sharedCase
	cases = append(cases, runtimeCases...)
	cases = append(cases, imageCases...)
	cases = append(cases, sandboxCases...)
	cases = append(cases, containerCases...)
	cases = append(cases, stopCases...)
	cases = append(cases, logCases...)
	cases = append(cases, badInputCases...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() {
				if !d.Running() {
					// Keep the rest of the suite meaningful after a crash.
					t.Errorf("berthd died during this test: %v", d.ExitErr())
					d.Restart(t)
				}
				removeAllPods(t, d)
				testutil.AssertNoLeaks(t, d)
			})
			tc.fn(t, d)
		})
	}
}
