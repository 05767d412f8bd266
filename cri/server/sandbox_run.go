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
	"google.golang.org/protobuf/proto"
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

// RunPodSandbox creates the pod's namespaces, files and network.
func (s *Server) RunPodSandbox(ctx context.Context, r *runtime.RunPodSandboxRequest) (_ *runtime.RunPodSandboxResponse, retErr error) {
	cfg := r.GetConfig()
	if err := validatePodConfig(cfg); err != nil {
		return nil, err
	}
	handler := r.GetRuntimeHandler()
	if handler == "" {
		handler = s.cfg.Runtime.DefaultHandler
	}
	if _, ok := s.cfg.Runtime.Handlers[handler]; !ok {
		return nil, fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrInvalidArgument)
	}
	if err := s.checkPodUserns(cfg, handler); err != nil {
		return nil, err
	}
	id := newID()
	ctx = interceptor.With(ctx, "sandbox_id", id)
	log := interceptor.Logger(ctx)
	name := podKey(cfg.GetMetadata())
	if _, err := s.store.Reserve(name, id); err != nil {
		return nil, fmt.Errorf("reserve pod name %q: %w", name, err)
	}
	cl := rollback.New(log)
	defer cl.OnError(ctx, &retErr)
	cl.Add("release name", func(context.Context) error { s.store.Release(name, id); return nil })

	unlock := s.locks.lock(id)
	defer unlock()

	rawCfg, err := proto.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode pod config: %w", err)
	}
	nsOpts := namespaceOptions(cfg)
	hostNet := nsOpts.GetNetwork() == runtime.NamespaceMode_NODE
	spec := sandbox.Spec{
		ID:          id,
		Dir:         filepath.Join(s.sandboxesDir(), id),
		Hostname:    cfg.GetHostname(),
		HostNetwork: hostNet,
		HostIPC:     nsOpts.GetIpc() == runtime.NamespaceMode_NODE,
		SharePID:    nsOpts.GetPid() == runtime.NamespaceMode_POD,
	}
	spec.UIDMappings, spec.GIDMappings = infraIDMaps(cfg)
	if dns := cfg.GetDnsConfig(); dns != nil {
		spec.DNS = &sandbox.DNS{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	cgroupParent := cfg.GetLinux().GetCgroupParent()
	if cgroupParent == "" {
		cgroupParent = s.cfg.CgroupParent
	}
	// The record goes to disk before anything is created, so a daemon
	// killed half way finds it on restart and removes what was made.
	rec := store.Sandbox{
		ID:   id,
		Name: name,
		Metadata: store.PodMetadata{
			Name: cfg.GetMetadata().GetName(), UID: cfg.GetMetadata().GetUid(),
			Namespace: cfg.GetMetadata().GetNamespace(), Attempt: cfg.GetMetadata().GetAttempt(),
		},
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		Config:         rawCfg,
		RuntimeHandler: handler,
		CgroupParent:   cgroupParent,
		CreatedAt:      time.Now().UnixNano(),
		Pod:            sandbox.Pod{ID: id, Dir: spec.Dir, NoInfra: !spec.SharePID},
		Status:         store.SandboxStatus{State: store.SandboxNotReady},
	}
	if err := s.store.AddSandbox(rec); err != nil {
		return nil, err
	}
	cl.Add("delete record", func(context.Context) error { return s.store.DeleteSandbox(id) })

	pod, err := s.sandboxes.Create(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %q: %w", id, err)
	}
	cl.Add("remove sandbox", func(ctx context.Context) error { return s.sandboxes.Remove(ctx, pod) })
	if _, err := s.store.UpdateSandbox(id, func(sb *store.Sandbox) error { sb.Pod = pod; return nil }); err != nil {
		return nil, err
	}

	var ips []string
	if !hostNet {
		pn := podNetwork(rec, pod, cfg)
		res, err := s.network.Setup(ctx, pn)
		if err != nil {
			return nil, fmt.Errorf("set up network of sandbox %q: %w", id, err)
		}
		cl.Add("tear down network", func(ctx context.Context) error { return s.network.Teardown(ctx, pn) })
		for _, ip := range res.IPs {
			ips = append(ips, ip.String())
		}
	}
	if _, err := s.store.UpdateSandbox(id, func(sb *store.Sandbox) error {
		sb.Status.State = store.SandboxReady
		sb.Status.IPs = ips
		return nil
	}); err != nil {
		return nil, err
	}
	s.sandboxEvent(rec, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	s.sandboxEvent(rec, runtime.ContainerEventType_CONTAINER_STARTED_EVENT)
	log.Info("pod sandbox running", "pod", cfg.GetMetadata().GetNamespace()+"/"+cfg.GetMetadata().GetName(), "ips", ips)
	return &runtime.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// podNetwork describes a pod to the network manager; Setup and Teardown
// must get the same description.
func podNetwork(rec store.Sandbox, pod sandbox.Pod, cfg *runtime.PodSandboxConfig) netplugin.PodNetwork {
	pn := netplugin.PodNetwork{
		ID:         rec.ID,
		Name:       rec.Metadata.Name,
		Namespace:  rec.Metadata.Namespace,
		UID:        rec.Metadata.UID,
		NetNS:      pod.NetNS,
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
