// Package kubelet holds berth's own kubelet scenarios: a real kubelet
// (standalone, static pods only) drives a real berthd through what a node
// sees every day and the shared kubelet kit does not cover: graceful
// termination, sidecars, host and shared namespaces, security contexts, a
// missing image, kubelet and berthd restarts under running pods, many pods
// at once, and kubelet's own stats and logs endpoints. kubelet's log is
// scanned for runtime errors and warnings.
//
// The scenarios are tests only. They need root, /usr/local/bin/kubelet
// (../shared/kubelet/setup) and the conformance kit's registry and mirror
// tree (../shared/conformance/setup), and take several minutes, so they run
// only when BERTH_KUBELET_E2E=1: test/kubelet/run.sh (make kubelet-e2e)
// sets it.
package kubelet
