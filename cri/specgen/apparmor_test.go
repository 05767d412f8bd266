package specgen

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeAppArmor is a host whose AppArmor state a test sets.
type fakeAppArmor struct {
	enabled    bool
	loaded     []string
	defaultErr error
	defaults   int // DefaultProfile calls
}

func (f *fakeAppArmor) Enabled() bool { return f.enabled }

func (f *fakeAppArmor) DefaultProfile() (string, error) {
	f.defaults++
	if f.defaultErr != nil {
		return "", f.defaultErr
	}
	return "berth-default", nil
}

func (f *fakeAppArmor) Loaded(name string) (bool, error) { return slices.Contains(f.loaded, name), nil }

func TestAppArmor(t *testing.T) {
	rd := &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	unconfined := &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}
	local := func(ref string) *runtime.SecurityProfile {
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	enabled := &fakeAppArmor{enabled: true, loaded: []string{"k8s-deny-write", "berth-default"}}
	disabled := &fakeAppArmor{}
	broken := &fakeAppArmor{enabled: true, defaultErr: fmt.Errorf("apparmor_parser failed: %w", errdefs.ErrFailedPrecondition)}
	tests := []struct {
		name       string
		host       *fakeAppArmor
		profile    *runtime.SecurityProfile
		old        string // deprecated apparmor_profile
		privileged bool
		want       string
		wantErr    error
		errHas     string
	}{
		{name: "enabled, none asked: default", host: enabled, want: "berth-default"},
		{name: "enabled, runtime default", host: enabled, profile: rd, want: "berth-default"},
		{name: "enabled, runtime default, privileged", host: enabled, profile: rd, privileged: true, want: ""},
		{name: "enabled, unconfined", host: enabled, profile: unconfined, want: ""},
		{name: "enabled, localhost loaded", host: enabled, profile: local("k8s-deny-write"), want: "k8s-deny-write"},
		{name: "enabled, localhost with prefix", host: enabled, profile: local("localhost/k8s-deny-write"), want: "k8s-deny-write"},
		{name: "enabled, localhost privileged", host: enabled, profile: local("k8s-deny-write"), privileged: true, want: "k8s-deny-write"},
		{name: "enabled, localhost not loaded", host: enabled, profile: local("nope"), wantErr: errdefs.ErrFailedPrecondition, errHas: `"nope" is not loaded`},
		{name: "enabled, localhost empty", host: enabled, profile: local(""), wantErr: errdefs.ErrInvalidArgument},
		{name: "enabled, ref without localhost type", host: enabled, profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault, LocalhostRef: "x"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "enabled, default fails to load", host: broken, profile: rd, wantErr: errdefs.ErrFailedPrecondition, errHas: "apparmor_parser"},
		{name: "deprecated runtime/default", host: enabled, old: "runtime/default", want: "berth-default"},
		{name: "deprecated unconfined", host: enabled, old: "unconfined", want: ""},
		{name: "deprecated localhost", host: enabled, old: "localhost/k8s-deny-write", want: "k8s-deny-write"},
		{name: "deprecated garbage", host: enabled, old: "k8s-deny-write", wantErr: errdefs.ErrInvalidArgument},
		{name: "disabled, none asked", host: disabled, want: ""},
		{name: "disabled, runtime default runs unconfined", host: disabled, profile: rd, want: ""},
		{name: "disabled, unconfined", host: disabled, profile: unconfined, want: ""},
		{name: "disabled, localhost refused", host: disabled, profile: local("k8s-deny-write"), wantErr: errdefs.ErrFailedPrecondition, errHas: "k8s-deny-write"},
		{name: "disabled, deprecated localhost refused", host: disabled, old: "localhost/k8s-deny-write", wantErr: errdefs.ErrFailedPrecondition},
		{name: "no host (nil) is disabled", profile: local("x"), wantErr: errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			if tt.host != nil {
				in.AppArmor = tt.host
			}
			sc(in).Apparmor = tt.profile
			sc(in).ApparmorProfile = tt.old //nolint:staticcheck // the deprecated field older kubelets send
			sc(in).Privileged = tt.privileged
			in.Sandbox.Linux.SecurityContext.Privileged = tt.privileged
			s, err := Generate(in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "apparmor") || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %v mentioning apparmor and %q", err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Process.ApparmorProfile != tt.want {
				t.Fatalf("apparmor profile %q, want %q", s.Process.ApparmorProfile, tt.want)
			}
		})
	}
	if disabled.defaults != 0 {
		t.Errorf("a host without AppArmor was asked to load the default profile %d times", disabled.defaults)
	}
}
