package task

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-runtime/berth/shim/api"
)

func TestErrorInterceptor(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
		is   func(error) bool
	}{
		{fmt.Errorf("x %q: %w", "id", errdefs.ErrNotFound), codes.NotFound, errdefs.IsNotFound},
		{errdefs.ErrAlreadyExists, codes.AlreadyExists, errdefs.IsAlreadyExists},
		{fmt.Errorf("w: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition, errdefs.IsFailedPrecondition},
		{errdefs.ErrInvalidArgument, codes.InvalidArgument, errdefs.IsInvalidArgument},
		{errdefs.ErrUnavailable, codes.Unavailable, errdefs.IsUnavailable},
		{fmt.Errorf("restore: %w", errdefs.ErrPermissionDenied), codes.PermissionDenied, errdefs.IsPermissionDenied},
		{errors.New("plain"), codes.Unknown, errdefs.IsUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			m := func(context.Context, func(any) error) (any, error) { return nil, tc.err }
			_, err := ErrorInterceptor(context.Background(), nil, &ttrpc.UnaryServerInfo{}, m)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v, want %v", got, tc.code)
			}
			// What the client does with it.
			if native := errgrpc.ToNative(err); !tc.is(native) {
				t.Errorf("ToNative(%v) = %v, wrong class", err, native)
			}
		})
	}
}

func TestServiceBeforeCreate(t *testing.T) {
	s := New(Options{ID: "c"})
	ctx := context.Background()
	if _, err := s.State(ctx, &api.StateRequest{}); !errdefs.IsNotFound(err) {
		t.Errorf("State: %v, want NotFound", err)
	}
	if _, err := s.Wait(ctx, &api.WaitRequest{}); !errdefs.IsNotFound(err) {
		t.Errorf("Wait: %v, want NotFound", err)
	}
	called := make(chan struct{})
	s.opts.OnShutdown = func() { close(called) }
	if _, err := s.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-called
	if _, err := s.Create(ctx, &api.CreateRequest{}); !errdefs.IsUnavailable(err) {
		t.Errorf("Create after shutdown: %v, want Unavailable", err)
	}
}
