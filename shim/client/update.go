package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/shim/api"
)

// Update changes the resources of the created or running container (the
// runtime's `update --resources`). A stopped container is
// errdefs.ErrFailedPrecondition.
func (c *Client) Update(ctx context.Context, resources *specs.LinuxResources) error {
	if resources == nil {
		return fmt.Errorf("update: resources required: %w", errdefs.ErrInvalidArgument)
	}
	b, err := json.Marshal(resources)
	if err != nil {
		return fmt.Errorf("update: encode resources: %w", err)
	}
	_, err = c.svc.Update(ctx, &api.UpdateRequest{Resources: b})
	return toNative("update", err)
}

// ReopenLog makes the shim reopen the container's CRI log file, after
// kubelet rotated it (ReopenContainerLog).
func (c *Client) ReopenLog(ctx context.Context) error {
	_, err := c.svc.ReopenLog(ctx, &api.ReopenLogRequest{})
	return toNative("reopen log", err)
}
