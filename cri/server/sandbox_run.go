package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/netplugin"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/sandbox/rollback"
)

func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// podKey is the name a pod reserves: kubelet identifies a pod attempt by
// these four fields, so two sandboxes may not share them.
func podKey(m *runtime.PodSandboxMetadata) string {
	return strings.Join([]string{"pod", m.GetName(), m.GetNamespace(), m.GetUid(), fmt.Sprint(m.GetAttempt())}, "_")
}

func validatePodConfig(c *runtime.PodSandboxConfig) error {
	switch {
	case c == nil:
		return fmt.Errorf("pod sandbox config is required: %w", errdefs.ErrInvalidArgument)
	case c.GetMetadata() == nil:
		return fmt.Errorf("pod sandbox config metadata is required: %w", errdefs.ErrInvalidArgument)
	case c.GetMetadata().GetName() == "":
		return fmt.Errorf("pod sandbox config metadata.name is required: %w", errdefs.ErrInvalidArgument)
	case c.GetMetadata().GetNamespace() == "":
		return fmt.Errorf("pod sandbox config metadata.namespace is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := noNUL(podNames(c)); err != nil {
		return err
	}
	for _, key := range []string{"kubernetes.io/ingress-bandwidth", "kubernetes.io/egress-bandwidth"} {
		if _, err := parseBandwidth(c.GetAnnotations()[key]); err != nil {
			return fmt.Errorf("annotation %s: %w", key, err)
		}
	}
	if d := c.GetLogDirectory(); d != "" && !filepath.IsAbs(d) {
		return fmt.Errorf("pod sandbox config log_directory %q is not absolute: %w", d, errdefs.ErrInvalidArgument)
	}
	return nil
}

func namespaceOptions(c *runtime.PodSandboxConfig) *runtime.NamespaceOption {
	return c.GetLinux().GetSecurityContext().GetNamespaceOptions()
}

// podPlan is what the steps of RunPodSandbox share: each reads what the
// earlier ones set, and records the undo of what it makes in cl.
type podPlan struct {
	id, name string
	cfg      *runtime.PodSandboxConfig
	handler  string
	hostNet  bool
	spec     sandbox.Spec
	rec      store.Sandbox
	ips      []string
	cl       *rollback.Steps
}

// RunPodSandbox creates the pod's namespaces, files and network.
func (s *Server) RunPodSandbox(ctx context.Context, r *runtime.RunPodSandboxRequest) (_ *runtime.RunPodSandboxResponse, retErr error) {
	p := &podPlan{cfg: r.GetConfig(), handler: r.GetRuntimeHandler()}
	if err := validatePodConfig(p.cfg); err != nil {
		return nil, err
	}
	var err error
	if p.handler, err = s.runtimeHandler(p.handler); err != nil {
		return nil, err
	}
	if err := s.checkPodUserns(p.cfg, p.handler); err != nil {
		return nil, err
	}
	// Unblocked last, once the pod is visible: a plugin that connects
	// meanwhile is synchronised with it or gets its event.
	defer s.nri.BlockSync()()
	ctx, cancel := detachCreate(ctx)
	defer cancel()
	p.id = newID()
	ctx = interceptor.With(ctx, "sandbox_id", p.id)
	log := interceptor.Logger(ctx)
	// Held from before the name is reserved until the rollback is done, so
	// a retry that finds the name taken can wait for this call to end.
	unlock := s.locks.lock(p.id)
	defer unlock()
	// Hidden until the call ends, rollback included, and shown before a
	// retry waiting on the lock goes on.
	defer s.creating.add(p.id)()
	p.cl = rollback.New(log)
	defer p.cl.OnError(ctx, &retErr)
	p.name = podKey(p.cfg.GetMetadata())
	existing, err := s.reserveOrExisting(p.name, p.id, func(holder string) bool { return s.sandboxDone(holder, p.cfg, p.handler) })
	if err != nil {
		return nil, fmt.Errorf("reserve pod name %q: %w", p.name, err)
	}
	if existing != "" {
		log.Info("pod sandbox creation retried: returning the sandbox made meanwhile", "existing_id", existing)
		return &runtime.RunPodSandboxResponse{PodSandboxId: existing}, nil
	}
	p.cl.Add("release name", func(context.Context) error { s.store.Release(p.name, p.id); return nil })

	for _, step := range []func(context.Context, *podPlan) error{
		s.recordSandbox, // first, so a daemon killed later finds what to clean up
		s.createSandbox,
		s.setupNetwork,
		s.nriRunPod,
		s.markReady,
	} {
		if err := step(ctx, p); err != nil {
			return nil, err
		}
	}
	s.sandboxEvent(p.rec, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	s.sandboxEvent(p.rec, runtime.ContainerEventType_CONTAINER_STARTED_EVENT)
	log.Info("pod sandbox running", "pod", p.cfg.GetMetadata().GetNamespace()+"/"+p.cfg.GetMetadata().GetName(), "ips", p.ips)
	return &runtime.RunPodSandboxResponse{PodSandboxId: p.id}, nil
}

// recordSandbox persists the pod's record, NOTREADY, before anything of it
// exists, and describes the sandbox to create.
func (s *Server) recordSandbox(ctx context.Context, p *podPlan) error {
	nsOpts := namespaceOptions(p.cfg)
	p.hostNet = nsOpts.GetNetwork() == runtime.NamespaceMode_NODE
	p.spec = sandbox.Spec{
		ID:          p.id,
		Dir:         filepath.Join(s.sandboxesDir(), p.id),
		Hostname:    p.cfg.GetHostname(),
		HostNetwork: p.hostNet,
		HostIPC:     nsOpts.GetIpc() == runtime.NamespaceMode_NODE,
		SharePID:    nsOpts.GetPid() == runtime.NamespaceMode_POD,
	}
	p.spec.UIDMappings, p.spec.GIDMappings = infraIDMaps(p.cfg)
	if dns := p.cfg.GetDnsConfig(); dns != nil {
		p.spec.DNS = &sandbox.DNS{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	cgroupParent := p.cfg.GetLinux().GetCgroupParent()
	if cgroupParent == "" {
		cgroupParent = s.cfg.CgroupParent
	}
	m := p.cfg.GetMetadata()
	p.rec = store.Sandbox{
		SandboxMeta: store.SandboxMeta{
			ID:             p.id,
			Name:           p.name,
			Metadata:       store.PodMetadata{Name: m.GetName(), UID: m.GetUid(), Namespace: m.GetNamespace(), Attempt: m.GetAttempt()},
			Labels:         p.cfg.GetLabels(),
			Annotations:    p.cfg.GetAnnotations(),
			Config:         p.cfg,
			RuntimeHandler: p.handler,
			CgroupParent:   cgroupParent,
			CreatedAt:      time.Now().UnixNano(),
		},
		Status: store.SandboxStatus{
			State:     store.SandboxNotReady,
			Pod:       store.Pod{ID: p.id, Dir: p.spec.Dir, NoInfra: !p.spec.SharePID},
			Resources: store.ResourcesFromCRI(p.cfg.GetLinux().GetResources()),
			Overhead:  store.ResourcesFromCRI(p.cfg.GetLinux().GetOverhead()),
		},
	}
	if err := s.store.AddSandbox(p.rec); err != nil {
		return err
	}
	p.cl.Add("delete record", func(context.Context) error { return s.store.DeleteSandbox(p.id) })
	return nil
}

// createSandbox has the sandbox controller make the pod's namespaces, its
// files and, when the pod shares a PID namespace, its infra process.
func (s *Server) createSandbox(ctx context.Context, p *podPlan) error {
	pod, err := s.sandboxes.Create(ctx, p.spec)
	if err != nil {
		return fmt.Errorf("create sandbox %q: %w", p.id, err)
	}
	p.cl.Add("remove sandbox", func(ctx context.Context) error { return s.sandboxes.Remove(ctx, pod) })
	rec, err := s.store.UpdateSandboxStatus(p.id, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.Pod = store.Pod(pod)
		return st, nil
	})
	if err != nil {
		return err
	}
	p.rec = rec
	return nil
}

// setupNetwork attaches the pod's network namespace to the pod network.
func (s *Server) setupNetwork(ctx context.Context, p *podPlan) error {
	if p.hostNet {
		return nil
	}
	if err := s.awaitNetworkGC(ctx); err != nil {
		return fmt.Errorf("set up network of sandbox %q: %w", p.id, err)
	}
	pn := podNetwork(p.rec)
	res, err := s.network.Setup(ctx, pn)
	if err != nil {
		return fmt.Errorf("set up network of sandbox %q: %w", p.id, err)
	}
	p.cl.Add("tear down network", func(ctx context.Context) error { return s.network.Teardown(ctx, pn) })
	for _, ip := range res.IPs {
		p.ips = append(p.ips, ip.String())
	}
	return nil
}

func (s *Server) markReady(ctx context.Context, p *podPlan) error {
	rec, err := s.store.UpdateSandboxStatus(p.id, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.State = store.SandboxReady
		st.IPs = p.ips
		return st, nil
	})
	if err != nil {
		return err
	}
	p.rec = rec
	return nil
}

// controllerPod is the sandbox controller's view of the pod sb records.
// The conversion compiles only while store.Pod and sandbox.Pod have the
// same fields, so a field added to one is decided for the other.
func controllerPod(sb store.Sandbox) sandbox.Pod { return sandbox.Pod(sb.Status.Pod) }

// podNetwork describes a pod to the network manager; Setup and Teardown
// must get the same description.
func podNetwork(rec store.Sandbox) netplugin.PodNetwork {
	cfg := rec.Config
	pn := netplugin.PodNetwork{
		ID:         rec.ID,
		Name:       rec.Metadata.Name,
		Namespace:  rec.Metadata.Namespace,
		UID:        rec.Metadata.UID,
		NetNS:      rec.Status.Pod.NetNS,
		CgroupPath: rec.CgroupParent,
	}
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue
		}
		pn.PortMappings = append(pn.PortMappings, netplugin.PortMapping{
			Protocol:      strings.ToLower(pm.GetProtocol().String()),
			ContainerPort: pm.GetContainerPort(),
			HostPort:      pm.GetHostPort(),
			HostIP:        pm.GetHostIp(),
		})
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		pn.DNS = &netplugin.DNS{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	pn.IngressBandwidth, _ = parseBandwidth(cfg.GetAnnotations()["kubernetes.io/ingress-bandwidth"])
	pn.EgressBandwidth, _ = parseBandwidth(cfg.GetAnnotations()["kubernetes.io/egress-bandwidth"])
	return pn
}
