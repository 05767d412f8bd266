package client

import (
	"context"
	"time"

	"github.com/berth-runtime/berth/shim/api"
)

// CheckpointOpts dump a running container with CRIU.
type CheckpointOpts struct {
	// ImagePath receives the CRIU images; WorkPath CRIU's dump.log.
	ImagePath string
	WorkPath  string
	// LeaveRunning keeps the container running after the dump.
	LeaveRunning bool
	// TCPEstablished dumps established TCP connections; without it a
	// container holding one cannot be checkpointed.
	TCPEstablished bool
	FileLocks      bool
	ExtUnixSk      bool
	// CriuPath overrides the CRIU given at Create.
	CriuPath string
	// Timeout bounds the dump in the shim (0: ctx's deadline alone); ctx
	// must outlast it by the shim's cleanup time.
	Timeout time.Duration
}

// Checkpoint dumps the running container.
func (c *Client) Checkpoint(ctx context.Context, o CheckpointOpts) error {
	_, err := c.svc.Checkpoint(ctx, &api.CheckpointRequest{
		ImagePath:      o.ImagePath,
		WorkPath:       o.WorkPath,
		LeaveRunning:   o.LeaveRunning,
		TcpEstablished: o.TCPEstablished,
		FileLocks:      o.FileLocks,
		ExtUnixSk:      o.ExtUnixSk,
		CriuPath:       o.CriuPath,
		TimeoutMs:      uint64(o.Timeout.Milliseconds()),
	})
	return toNative("checkpoint", err)
}

// Pause freezes every process of the container.
func (c *Client) Pause(ctx context.Context) error {
	_, err := c.svc.Pause(ctx, &api.PauseRequest{})
	return toNative("pause", err)
}

// Resume thaws a paused container.
func (c *Client) Resume(ctx context.Context) error {
	_, err := c.svc.Resume(ctx, &api.ResumeRequest{})
	return toNative("resume", err)
}
