package server

import (
	"context"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Every name of the CRI's Signal enum is a signal StopContainer can send,
// and ContainerStatus names it back the same way (aliases as their
// canonical name).
func TestCRIStopSignalsRoundTrip(t *testing.T) {
	aliases := map[runtime.Signal]runtime.Signal{
		runtime.Signal_SIGNAL_SIGCLD:  runtime.Signal_SIGNAL_SIGCHLD,
		runtime.Signal_SIGNAL_SIGIOT:  runtime.Signal_SIGNAL_SIGABRT,
		runtime.Signal_SIGNAL_SIGPOLL: runtime.Signal_SIGNAL_SIGIO,
	}
	for v := range runtime.Signal_name {
		sig := runtime.Signal(v)
		if sig == runtime.Signal_SIGNAL_RUNTIME_DEFAULT {
			continue
		}
		name, err := criStopSignal(sig)
		if err != nil {
			t.Fatalf("criStopSignal(%s): %v", sig, err)
		}
		n, err := parseSignal(name)
		if err != nil {
			t.Errorf("%s: parseSignal(%q): %v", sig, name, err)
			continue
		}
		want := sig
		if a, ok := aliases[sig]; ok {
			want = a
		}
		if got := statusStopSignal(n); got != want {
			t.Errorf("%s: sent as %d, reported as %s", sig, n, got)
		}
	}
	for sig, want := range map[runtime.Signal]syscall.Signal{
		runtime.Signal_SIGNAL_SIGRTMIN:        34,
		runtime.Signal_SIGNAL_SIGRTMINPLUS15:  49,
		runtime.Signal_SIGNAL_SIGRTMAXMINUS14: 50,
		runtime.Signal_SIGNAL_SIGRTMAX:        64,
		runtime.Signal_SIGNAL_SIGWINCH:        syscall.SIGWINCH,
		runtime.Signal_SIGNAL_RUNTIME_DEFAULT: syscall.SIGTERM,
		runtime.Signal_SIGNAL_SIGRTMINPLUS1:   35,
	} {
		name, _ := criStopSignal(sig)
		if got, err := parseSignal(name); err != nil || got != want {
			t.Errorf("%s: %q is %d (%v), want %d", sig, name, got, err, want)
		}
	}
	if _, err := criStopSignal(runtime.Signal(99)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("criStopSignal(99): %v, want InvalidArgument", err)
	}
}

// ContainerStatus reports the signal StopContainer sends first: the
// config's, else the image's, else SIGTERM; StopContainer sends it.
func TestContainerStatusStopSignal(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("sig"))
	img := ts.images.addImage("registry.test/systemd:1")
	img.Config.Config.StopSignal = "SIGRTMIN+3"
	ts.images.images["registry.test/systemd:1"], ts.images.images[img.ID] = img, img

	for _, tc := range []struct {
		name   string
		image  string
		config runtime.Signal
		want   runtime.Signal
		kill   string
	}{
		{"default", testImage, runtime.Signal_SIGNAL_RUNTIME_DEFAULT, runtime.Signal_SIGNAL_SIGTERM, "kill 15"},
		{"config", testImage, runtime.Signal_SIGNAL_SIGUSR2, runtime.Signal_SIGNAL_SIGUSR2, "kill 12"},
		{"config real-time", testImage, runtime.Signal_SIGNAL_SIGRTMINPLUS1, runtime.Signal_SIGNAL_SIGRTMINPLUS1, "kill 35"},
		{"image", "registry.test/systemd:1", runtime.Signal_SIGNAL_RUNTIME_DEFAULT, runtime.Signal_SIGNAL_SIGRTMINPLUS3, "kill 37"},
		{"config over image", "registry.test/systemd:1", runtime.Signal_SIGNAL_SIGINT, runtime.Signal_SIGNAL_SIGINT, "kill 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.tasks.newTask = func(ft *fakeTask) {
				ft.exitOn = []syscall.Signal{syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGINT, 35, 37}
			}
			cfg := containerConfig("c-" + tc.kill[5:])
			cfg.Image.Image = tc.image
			cfg.StopSignal = tc.config
			id := ts.startContainer(t, sb, cfg)
			st, err := ts.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
			if err != nil {
				t.Fatal(err)
			}
			if got := st.GetStatus().GetStopSignal(); got != tc.want {
				t.Errorf("status stop_signal %s, want %s", got, tc.want)
			}
			ft := ts.tasks.get(id)
			if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
				t.Fatal(err)
			}
			if got := ft.all(); len(got) != 2 || got[1] != tc.kill {
				t.Errorf("task calls %v, want start and %s", got, tc.kill)
			}
		})
	}
}

func TestCreateContainerRefusesUnknownStopSignal(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("badsig"))
	ts.images.addImage(testImage)
	cfg := containerConfig("c")
	cfg.StopSignal = runtime.Signal(99)
	_, err := ts.CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: sb, Config: cfg})
	wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
}
