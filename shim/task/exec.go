package task

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/process"
)

// Update changes the container's resources.
func (s *Service) Update(ctx context.Context, r *api.UpdateRequest) (*api.UpdateResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	// The runtime would say the same less clearly.
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(r.Resources, &probe); err != nil {
		return nil, fmt.Errorf("update container %q: resources are not a JSON object: %w", s.opts.ID, errdefs.ErrInvalidArgument)
	}
	if err := p.Update(ctx, r.Resources); err != nil {
		return nil, err
	}
	return &api.UpdateResponse{}, nil
}

// ReopenLog reopens the CRI log file.
func (s *Service) ReopenLog(_ context.Context, _ *api.ReopenLogRequest) (*api.ReopenLogResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if err := p.ReopenLog(); err != nil {
		return nil, err
	}
	return &api.ReopenLogResponse{}, nil
}

// Exec starts a process in the running container.
func (s *Service) Exec(ctx context.Context, r *api.ExecRequest) (*api.ExecResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	e, err := p.Exec(ctx, process.ExecConfig{
		ID: r.ExecId, Args: r.Args, Env: r.Env, Terminal: r.Terminal,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr,
	})
	if err != nil {
		return nil, err
	}
	return &api.ExecResponse{Pid: uint32(e.Pid())}, nil
}

// ResizePty resizes the terminal of init or of an exec'd process.
func (s *Service) ResizePty(_ context.Context, r *api.ResizePtyRequest) (*api.ResizePtyResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if r.ExecId == "" {
		err = p.Resize(r.Width, r.Height)
	} else {
		var e *process.Exec
		if e, err = p.LookupExec(r.ExecId); err == nil {
			err = e.Resize(r.Width, r.Height)
		}
	}
	if err != nil {
		return nil, err
	}
	return &api.ResizePtyResponse{}, nil
}

// Attach adds FIFOs to the init's stdio.
func (s *Service) Attach(_ context.Context, r *api.AttachRequest) (*api.AttachResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	err = p.Attach(process.AttachConfig{ID: r.AttachId, Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr})
	if err != nil {
		return nil, err
	}
	return &api.AttachResponse{}, nil
}

// Detach ends an attach session.
func (s *Service) Detach(_ context.Context, r *api.DetachRequest) (*api.DetachResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	p.Detach(r.AttachId)
	return &api.DetachResponse{}, nil
}
