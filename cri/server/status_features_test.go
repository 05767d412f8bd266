package server

import (
	"context"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/task"
)

// Status says what kubelet reads: per handler what its probe found (the
// default under "" too), and berth's own features.
func TestStatusFeatures(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.Runtime.DefaultHandler = "runc"
	ts.cfg.Runtime.Handlers = map[string]config.Handler{"runc": {Binary: "runc"}, "crun": {Binary: "crun"}}
	ts.features = map[string]task.Features{"runc": {RecursiveReadOnly: true, UserNamespaces: true}}
	resp, err := ts.Status(context.Background(), &runtime.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*runtime.RuntimeHandlerFeatures{}
	var order []string
	for _, h := range resp.GetRuntimeHandlers() {
		got[h.GetName()] = h.GetFeatures()
		order = append(order, h.GetName())
	}
	if len(order) != 3 || order[0] != "" || order[1] != "crun" || order[2] != "runc" {
		t.Errorf("handlers %q, want \"\", crun, runc", order)
	}
	for _, name := range []string{"", "runc"} {
		if f := got[name]; !f.GetRecursiveReadOnlyMounts() || !f.GetUserNamespaces() {
			t.Errorf("handler %q features %v, want rro and user namespaces", name, f)
		}
	}
	if f := got["crun"]; f == nil || f.GetRecursiveReadOnlyMounts() || f.GetUserNamespaces() {
		t.Errorf("handler crun features %v, want present and none", f)
	}
	f := resp.GetFeatures()
	if !f.GetSupplementalGroupsPolicy() || !f.GetUserNamespacesHostNetwork() || !f.GetMountOptions() {
		t.Errorf("runtime features %v, want supplemental groups policy, user namespaces with host network and mount options", f)
	}
}

// The probe runs beside recovery: Status asked before it ends waits for it
// rather than reporting no features.
func TestStatusWaitsForFeatureProbe(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.Runtime.DefaultHandler = "runc"
	ts.cfg.Runtime.Handlers = map[string]config.Handler{"runc": {Binary: "runc"}}
	ts.features = nil
	ts.featuresDone = make(chan struct{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		ts.features = map[string]task.Features{"runc": {UserNamespaces: true}}
		close(ts.featuresDone)
	}()
	resp, err := ts.Status(context.Background(), &runtime.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range resp.GetRuntimeHandlers() {
		if !h.GetFeatures().GetUserNamespaces() {
			t.Errorf("handler %q: no user namespaces; Status did not wait for the probe", h.GetName())
		}
	}
}
