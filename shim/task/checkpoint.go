package task

import (
	"context"
	"time"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/runtime"
)

// Checkpoint dumps the running container with CRIU.
func (s *Service) Checkpoint(ctx context.Context, r *api.CheckpointRequest) (*api.CheckpointResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	err = p.Checkpoint(ctx, runtime.CheckpointOpts{
		ImagePath:      r.ImagePath,
		WorkPath:       r.WorkPath,
		LeaveRunning:   r.LeaveRunning,
		TCPEstablished: r.TcpEstablished,
		FileLocks:      r.FileLocks,
		ExtUnixSk:      r.ExtUnixSk,
	}, r.CriuPath, time.Duration(r.TimeoutMs)*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return &api.CheckpointResponse{}, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, _ *api.PauseRequest) (*api.PauseResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if err := p.Pause(ctx); err != nil {
		return nil, err
	}
	return &api.PauseResponse{}, nil
}

// Resume thaws the container.
func (s *Service) Resume(ctx context.Context, _ *api.ResumeRequest) (*api.ResumeResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if err := p.Resume(ctx); err != nil {
		return nil, err
	}
	return &api.ResumeResponse{}, nil
}
