package netplugin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"go.opentelemetry.io/otel/attribute"
)

// Setup runs CNI ADD for the pod into p.NetNS. If any plugin of the chain
// fails, it runs DEL before returning so no interface or IPAM address is
// left; if that DEL fails too, a pending record makes Teardown and GC retry
// it.
func (m *Manager) Setup(ctx context.Context, p PodNetwork) (res Result, err error) {
	ctx, span := startSpan(ctx, "cni.add", p)
	defer func() { endSpan(span, err) }()
	if err := checkID(p.ID); err != nil {
		return Result{}, err
	}
	if p.NetNS == "" {
		return Result{}, fmt.Errorf("setup network for sandbox %q: no netns: %w", p.ID, errdefs.ErrInvalidArgument)
	}
	capArgs, err := capabilityArgs(p)
	if err != nil {
		return Result{}, fmt.Errorf("setup network for sandbox %q: %w", p.ID, err)
	}
	cfg, err := m.config()
	if err != nil {
		return Result{}, fmt.Errorf("setup network for sandbox %q: %w", p.ID, err)
	}
	// A second ADD for the same sandbox would fail on the existing eth0 and
	// its undo would then tear down the working attachment.
	if atts, err := m.cni.GetCachedAttachments(p.ID); err != nil || len(atts) > 0 {
		if err == nil {
			err = errdefs.ErrAlreadyExists
		}
		return Result{}, fmt.Errorf("setup network for sandbox %q: %w", p.ID, err)
	}
	list, rt := cfg.list, runtimeConf(p, capArgs)
	log := m.log.With("sandbox_id", p.ID, "network", list.Name)
	span.SetAttributes(attribute.String("cni.network", list.Name))

	rec := pendingRecord{
		ContainerID: p.ID, IfName: rt.IfName, NetNS: p.NetNS, Network: list.Name,
		Config: list.Bytes, CniArgs: rt.Args, CapabilityArgs: capArgs,
	}
	if err := m.pending.put(rec); err != nil {
		return Result{}, err
	}

	actx, cancel := m.pluginCtx(ctx)
	raw, err := m.cni.AddNetworkList(actx, list, rt)
	cancel()
	if err == nil {
		res, err = toResult(raw)
	}
	if err != nil {
		err = fmt.Errorf("cni add for sandbox %q in network %q: %w", p.ID, list.Name, err)
		if uerr := m.undo(ctx, list, rt); uerr != nil {
			log.ErrorContext(ctx, "undo of failed cni add failed; teardown or gc will retry", "error", uerr)
			return Result{}, errors.Join(err, uerr)
		}
		return Result{}, err
	}
	// libcni has cached the attachment now; that cache drives Teardown.
	if rerr := m.pending.remove(p.ID); rerr != nil {
		log.WarnContext(ctx, "pending cni record left behind", "error", rerr)
	}
	if ferr := forgetNeighbours(res.IPs); ferr != nil {
		log.WarnContext(ctx, "host neighbour entries of the pod's addresses not cleared", "error", ferr)
	}
	log.DebugContext(ctx, "pod network set up", "ips", res.IPs)
	span.SetAttributes(attribute.StringSlice("cni.ips", ipStrings(res.IPs)))
	return res, nil
}

// undo runs DEL after a failed ADD, with a context of its own so that a
// request cancelled by kubelet still gets cleaned up.
func (m *Manager) undo(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	dctx, cancel := m.pluginCtx(context.WithoutCancel(ctx))
	defer cancel()
	drt := *rt
	drt.NetNS = netnsForDel(rt.NetNS)
	if err := m.cni.DelNetworkList(dctx, list, &drt); err != nil {
		return fmt.Errorf("cni del to undo add for sandbox %q: %w", rt.ContainerID, err)
	}
	return m.pending.remove(rt.ContainerID)
}

// Teardown runs CNI DEL for every attachment recorded for the pod, with the
// config and arguments its ADD used (libcni's cache, or berth's pending
// record for an ADD that never completed). It works when the netns is gone
// and is idempotent: with nothing recorded there is nothing to undo, since a
// record is written before every ADD and removed only after a DEL succeeded.
func (m *Manager) Teardown(ctx context.Context, p PodNetwork) (err error) {
	ctx, span := startSpan(ctx, "cni.del", p)
	defer func() { endSpan(span, err) }()
	if err := checkID(p.ID); err != nil {
		return err
	}
	atts, err := m.cni.GetCachedAttachments(p.ID)
	if err != nil {
		return fmt.Errorf("read cni cache for sandbox %q: %w", p.ID, err)
	}
	var errs []error
	for _, a := range atts {
		errs = append(errs, m.delAttachment(ctx, a, p.NetNS))
	}
	errs = append(errs, m.delPending(ctx, p.ID, p.NetNS))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown network for sandbox %q: %w", p.ID, err)
	}
	m.log.DebugContext(ctx, "pod network torn down", "sandbox_id", p.ID, "attachments", len(atts))
	return nil
}

// delAttachment deletes one cached attachment; libcni drops its cache entry
// when DEL succeeds. netns overrides the cached path when given.
func (m *Manager) delAttachment(ctx context.Context, a *libcni.NetworkAttachment, netns string) error {
	list, err := libcni.ConfListFromBytes(a.Config)
	if err != nil {
		return fmt.Errorf("cached config of network %q: %w", a.Network, errdefs.ErrDataLoss)
	}
	if netns == "" {
		netns = a.NetNS
	}
	rt := &libcni.RuntimeConf{
		ContainerID: a.ContainerID, NetNS: netnsForDel(netns), IfName: a.IfName,
		Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs,
	}
	dctx, cancel := m.pluginCtx(ctx)
	defer cancel()
	if err := m.cni.DelNetworkList(dctx, list, rt); err != nil {
		return fmt.Errorf("cni del in network %q: %w", a.Network, err)
	}
	return nil
}

func (m *Manager) delPending(ctx context.Context, id, netns string) error {
	rec, err := m.pending.get(id)
	if err != nil || rec == nil {
		return err
	}
	if netns == "" {
		netns = rec.NetNS
	}
	err = m.delAttachment(ctx, &libcni.NetworkAttachment{
		ContainerID: rec.ContainerID, Network: rec.Network, IfName: rec.IfName, Config: rec.Config,
		NetNS: netns, CniArgs: rec.CniArgs, CapabilityArgs: rec.CapabilityArgs,
	}, "")
	if err != nil {
		return err
	}
	return m.pending.remove(id)
}

// Check runs CNI CHECK for the pod's cached attachments. Networks whose
// config predates CHECK (cniVersion < 0.4.0) count as healthy.
func (m *Manager) Check(ctx context.Context, p PodNetwork) error {
	if err := checkID(p.ID); err != nil {
		return err
	}
	atts, err := m.cni.GetCachedAttachments(p.ID)
	if err != nil {
		return fmt.Errorf("read cni cache for sandbox %q: %w", p.ID, err)
	}
	if len(atts) == 0 {
		return fmt.Errorf("network of sandbox %q: %w", p.ID, errdefs.ErrNotFound)
	}
	for _, a := range atts {
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil {
			return fmt.Errorf("cached config of network %q for sandbox %q: %w", a.Network, p.ID, errdefs.ErrDataLoss)
		}
		netns := p.NetNS
		if netns == "" {
			netns = a.NetNS
		}
		rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		cctx, cancel := m.pluginCtx(ctx)
		err = m.cni.CheckNetworkList(cctx, list, rt)
		cancel()
		if errors.Is(err, libcni.ErrorCheckNotSupp) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cni check for sandbox %q in network %q: %w", p.ID, a.Network, err)
		}
	}
	return nil
}

// GC deletes every attachment, completed or interrupted, whose sandbox is
// not in keepIDs, then asks the current network's plugins to garbage
// collect (CNI spec 1.1 GC) what they hold beyond keepIDs. Plugins that
// predate GC are tolerated; with them the DELs are all that can be done.
func (m *Manager) GC(ctx context.Context, keepIDs []string) error {
	atts, err := m.cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("read cni cache: %w", err)
	}
	var errs []error
	for _, a := range atts {
		if slices.Contains(keepIDs, a.ContainerID) {
			continue
		}
		if err := m.delAttachment(ctx, a, ""); err != nil {
			errs = append(errs, fmt.Errorf("gc sandbox %q: %w", a.ContainerID, err))
		}
	}
	ids, err := m.pending.ids()
	errs = append(errs, err)
	for _, id := range ids {
		if slices.Contains(keepIDs, id) {
			continue
		}
		if err := m.delPending(ctx, id, ""); err != nil {
			errs = append(errs, fmt.Errorf("gc sandbox %q: %w", id, err))
		}
	}
	errs = append(errs, m.pluginGC(ctx, keepIDs))
	return errors.Join(errs...)
}

func (m *Manager) pluginGC(ctx context.Context, keepIDs []string) error {
	cfg, err := m.config()
	if err != nil {
		return nil // no network: nothing to ask
	}
	// Below 1.1 libcni's GC would only repeat the DELs done above.
	if gte, verr := versionAtLeast(cfg.list.CNIVersion, "1.1.0"); verr != nil || !gte {
		return nil
	}
	valid := make([]types.GCAttachment, 0, len(keepIDs))
	for _, id := range keepIDs {
		valid = append(valid, types.GCAttachment{ContainerID: id, IfName: IfName})
	}
	gctx, cancel := m.pluginCtx(ctx)
	defer cancel()
	err = m.cni.GCNetworkList(gctx, cfg.list, &libcni.GCArgs{ValidAttachments: valid})
	if err == nil || unsupportedOnly(err) {
		if err != nil {
			m.log.InfoContext(ctx, "cni plugins do not support gc", "network", cfg.list.Name, "error", err)
		}
		return nil
	}
	return fmt.Errorf("cni gc in network %q: %w", cfg.list.Name, err)
}

func versionAtLeast(v, min string) (bool, error) {
	return version.GreaterThanOrEqualTo(v, min)
}

// unsupportedOnly reports whether every failure joined in err is a plugin
// saying it does not know the GC command or the 1.1 version.
func unsupportedOnly(err error) bool {
	//nolint:errorlint // walks the tree of a joined error; errors.As cannot check every leaf
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			if !unsupportedOnly(c) {
				return false
			}
		}
		return true
	case *types.Error:
		return e.Code == types.ErrIncompatibleCNIVersion || e.Code == types.ErrInvalidEnvironmentVariables
	case interface{ Unwrap() error }:
		return unsupportedOnly(e.Unwrap())
	}
	return false
}
