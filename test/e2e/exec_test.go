package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	uexec "k8s.io/utils/exec"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/test/testutil"
)

// TestExec covers issue 5 against one daemon of its own: exec over SPDY and
// WebSocket (TTY, resize, stdin EOF, exit codes), ExecSync (timeout, output
// cap), attach while the log is written, port-forward into the pod, the
// error codes, and that no exec'd process outlives its session or becomes a
// zombie.
func TestExec(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	cases := []sharedCase{
		{"ExecStreams", testExecStreams},
		{"ExecTTYResize", testExecTTYResize},
		{"ExecSync", testExecSync},
		{"ExecErrors", testExecErrors},
		{"ExecKilledWithContainer", testExecKilledWithContainer},
		{"Attach", testAttach},
		{"PortForward", testPortForward},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() {
				assertNoShimZombies(t, d)
				removeAllPods(t, d)
				testutil.AssertNoLeaks(t, d)
			})
			tc.fn(t, d)
		})
	}
}

// sleeper runs a pod with one long-running busybox container.
func xSleeper(t *testing.T, d *testutil.Daemon, name string) (podID, ctrID string) {
	t.Helper()
	pod := podConfig(t, d, name)
	podID = runPod(t, d, pod)
	ctrID = runCtr(t, d, podID, pod, ctrConfig(name, images.Busybox.Ref, "sleep", "3600"))
	return podID, ctrID
}

// executor builds kubelet's client for a streaming URL: SPDY or WebSocket.
func executor(t *testing.T, rawURL string, websocket bool) remotecommand.Executor {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	var ex remotecommand.Executor
	if websocket {
		// The streaming library serves WebSocket up to v4.channel.k8s.io
		// (v5, with its stdin CLOSE signal, is not served), so ask for it.
		ex, err = remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{Host: u.Host}, "GET", rawURL, "v4.channel.k8s.io")
	} else {
		ex, err = remotecommand.NewSPDYExecutor(&rest.Config{Host: u.Host}, "POST", u)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func execURL(t *testing.T, d *testutil.Daemon, req *runtimeapi.ExecRequest) string {
	t.Helper()
	resp, err := d.RuntimeClient.Exec(context.Background(), req)
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	return resp.Url
}

// exitCode is the exit code the client reports: 0 for no error.
func xExitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	// The streaming client and cri-client each use their own package's
	// type.
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ue uexec.CodeExitError
	if errors.As(err, &ue) {
		return ue.Code
	}
	t.Fatalf("stream error without exit code: %v", err)
	return -1
}

func testExecStreams(t *testing.T, d *testutil.Daemon) {
	podID, id := xSleeper(t, d, "exec")
	tests := []struct {
		name      string
		cmd       []string
		stdin     string
		wantOut   string
		wantErr   string
		wantCode  int
		websocket bool
	}{
		{"exit 0 with stdin EOF", []string{"cat"}, "hello\nworld", "hello\nworld", "", 0, false},
		{"exit 1 and stderr", []string{"sh", "-c", "echo out; echo err >&2; exit 1"}, "", "out\n", "err\n", 1, false},
		{"exit 137 when killed", []string{"sh", "-c", "kill -9 $$"}, "", "", "", 137, false},
		{"websocket exit 0 with stdin", []string{"head", "-n", "1"}, "over websocket\n", "over websocket\n", "", 0, true},
		{"websocket exit 3", []string{"sh", "-c", "echo o; echo e >&2; exit 3"}, "", "o\n", "e\n", 3, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: tc.cmd, Stdout: true, Stderr: true, Stdin: tc.stdin != ""}
			var out, errb bytes.Buffer
			opts := remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}
			if tc.stdin != "" {
				opts.Stdin = strings.NewReader(tc.stdin)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := executor(t, execURL(t, d, req), tc.websocket).StreamWithContext(ctx, opts)
			if got := xExitCode(t, err); got != tc.wantCode {
				t.Errorf("exit code %d (%v), want %d", got, err, tc.wantCode)
			}
			if out.String() != tc.wantOut || errb.String() != tc.wantErr {
				t.Errorf("output %q / %q, want %q / %q", out.String(), errb.String(), tc.wantOut, tc.wantErr)
			}
		})
	}

	// A client that goes away takes its process with it.
	marker := sleepMarker()
	req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sleep", marker}, Stdout: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- executor(t, execURL(t, d, req), false).StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
	}()
	xWaitFor(t, "exec'd sleep to run", func() bool { return len(xPidsWithArg(marker)) > 0 })
	cancel()
	<-done
	xWaitFor(t, "exec'd sleep to be killed", func() bool { return len(xPidsWithArg(marker)) == 0 })
	removePod(t, d, podID)
}

// xSizeQueue hands the client's terminal sizes to the executor.
type xSizeQueue chan remotecommand.TerminalSize

func (q xSizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

func testExecTTYResize(t *testing.T, d *testutil.Daemon) {
	podID, id := xSleeper(t, d, "tty")
	for _, websocket := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", websocket), func(t *testing.T) {
			req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "read x; busybox stty size; read y; busybox stty size; exit 7"},
				Stdin: true, Stdout: true, Tty: true}
			sizes := make(xSizeQueue, 2)
			sizes <- remotecommand.TerminalSize{Width: 100, Height: 40}
			pr, pw := io.Pipe()
			out := &xBuffer{}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- executor(t, execURL(t, d, req), websocket).StreamWithContext(ctx, remotecommand.StreamOptions{
					Stdin: pr, Stdout: out, Tty: true, TerminalSizeQueue: sizes,
				})
			}()
			// Sizes and input travel on different streams: give the
			// resize time to land before the line that makes stty run.
			time.Sleep(500 * time.Millisecond)
			_, _ = io.WriteString(pw, "a\n")
			xWaitFor(t, "first size", func() bool { return strings.Contains(out.String(), "40 100") })
			sizes <- remotecommand.TerminalSize{Width: 132, Height: 50}
			time.Sleep(500 * time.Millisecond)
			_, _ = io.WriteString(pw, "b\n")
			err := <-done
			close(sizes)
			_ = pw.Close()
			if got := xExitCode(t, err); got != 7 {
				t.Errorf("exit code %d (%v), want 7", got, err)
			}
			if !strings.Contains(out.String(), "50 132") {
				t.Errorf("tty output %q lacks the resized 50 132", out.String())
			}
		})
	}
	removePod(t, d, podID)
}

type xBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *xBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *xBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testExecSync(t *testing.T, d *testutil.Daemon) {
	podID, id := xSleeper(t, d, "execsync")
	ctx := context.Background()
	stdout, stderr, err := d.Runtime.ExecSync(ctx, id, []string{"sh", "-c", "echo out; echo err >&2"}, 10*time.Second)
	if err != nil || string(stdout) != "out\n" || string(stderr) != "err\n" {
		t.Errorf("ExecSync = %q, %q, %v", stdout, stderr, err)
	}
	_, _, err = d.Runtime.ExecSync(ctx, id, []string{"sh", "-c", "exit 1"}, 10*time.Second)
	if got := xExitCode(t, err); got != 1 {
		t.Errorf("ExecSync exit code %d (%v), want 1", got, err)
	}

	// The timeout kills the command and says so.
	marker := sleepMarker()
	start := time.Now()
	_, _, err = d.Runtime.ExecSync(ctx, id, []string{"sleep", marker}, time.Second)
	if !errors.Is(err, remote.ErrCommandTimedOut) {
		t.Errorf("ExecSync past its timeout: %v, want ErrCommandTimedOut", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("ExecSync with a 1s timeout took %s", el)
	}
	raw, err := d.RuntimeClient.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep", "5"}, Timeout: 1})
	wantCode(t, "raw ExecSync past its timeout", err, codes.DeadlineExceeded)
	_ = raw
	xWaitFor(t, "timed-out command to be killed", func() bool { return len(xPidsWithArg(marker)) == 0 })

	// 100 MiB of output: capped, the command still ends, berthd survives.
	stdout, _, err = d.Runtime.ExecSync(ctx, id, []string{"sh", "-c", "head -c 104857600 /dev/zero; echo done >&2"}, 60*time.Second)
	if err != nil {
		t.Fatalf("ExecSync of 100 MiB: %v", err)
	}
	if n := len(stdout); n < 8<<20 || n > 16<<20 {
		t.Errorf("ExecSync kept %d bytes of 100 MiB, want a cap between 8 and 16 MiB", n)
	}
	if !d.Running() {
		t.Fatal("berthd died")
	}

	// Latency: probes run this every few seconds on every pod.
	const n = 20
	start = time.Now()
	for range n {
		if _, _, err := d.Runtime.ExecSync(ctx, id, []string{"true"}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("ExecSync of true: %s on average over %d", time.Since(start)/n, n)
	removePod(t, d, podID)
}

func testExecErrors(t *testing.T, d *testutil.Daemon) {
	podID, id := xSleeper(t, d, "execerr")
	ctx := context.Background()
	pod := podConfig(t, d, "execerr-exited")
	exitedPod := runPod(t, d, pod)
	exited := runCtr(t, d, exitedPod, pod, shConfig("exited", "true"))
	waitState(t, d, exited, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	created := createCtr(t, d, exitedPod, pod, shConfig("created", "true"))

	tests := []struct {
		name string
		id   string
		cmd  []string
		want codes.Code
	}{
		{"unknown container", "nope-" + randID(), []string{"true"}, codes.NotFound},
		{"empty command", id, nil, codes.InvalidArgument},
		{"exited container", exited, []string{"true"}, codes.FailedPrecondition},
		{"created container", created, []string{"true"}, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		_, err := d.RuntimeClient.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: tc.id, Cmd: tc.cmd, Timeout: 5})
		wantCode(t, "ExecSync "+tc.name, err, tc.want)
		_, err = d.RuntimeClient.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: tc.id, Cmd: tc.cmd, Stdout: true})
		wantCode(t, "Exec "+tc.name, err, tc.want)
	}
	_, err := d.RuntimeClient.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: exited, Stdout: true})
	wantCode(t, "Attach exited container", err, codes.FailedPrecondition)
	_, err = d.RuntimeClient.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "nope-" + randID(), Port: []int32{80}})
	wantCode(t, "PortForward unknown pod", err, codes.NotFound)
	removePod(t, d, exitedPod)
	removePod(t, d, podID)
}

// Exec'd processes end with the container even in a pod that shares one
// PID namespace, where the kernel would not end them.
func testExecKilledWithContainer(t *testing.T, d *testutil.Daemon) {
	pod := sharePID(podConfig(t, d, "execstop"))
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, ctrConfig("execstop", images.Busybox.Ref, "sleep", "3600"))
	marker := sleepMarker()
	req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sleep", marker}, Stdout: true}
	done := make(chan error, 1)
	go func() {
		done <- executor(t, execURL(t, d, req), false).StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard})
	}()
	xWaitFor(t, "exec'd sleep to run", func() bool { return len(xPidsWithArg(marker)) > 0 })
	if err := d.Runtime.StopContainer(context.Background(), id, 1); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	select {
	case err := <-done:
		if got := xExitCode(t, err); got != 137 {
			t.Errorf("exec ended with %d (%v), want 137", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("exec session still open after the container stopped")
	}
	if p := xPidsWithArg(marker); len(p) > 0 {
		t.Errorf("exec'd process %v outlived its container", p)
	}
	removePod(t, d, podID)
}

func testAttach(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "attach")
	podID := runPod(t, d, pod)
	cfg := shConfig("attach", "while read l; do echo got:$l; echo err:$l >&2; done; echo bye")
	cfg.Stdin, cfg.StdinOnce = true, true
	id := runCtr(t, d, podID, pod, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	attach := func(stdin io.Reader, stdout, stderr io.Writer, websocket bool) error {
		resp, err := d.RuntimeClient.Attach(ctx, &runtimeapi.AttachRequest{
			ContainerId: id, Stdin: stdin != nil, Stdout: true, Stderr: stderr != nil,
		})
		if err != nil {
			return err
		}
		return executor(t, resp.Url, websocket).StreamWithContext(ctx, remotecommand.StreamOptions{
			Stdin: stdin, Stdout: stdout, Stderr: stderr,
		})
	}
	// A watcher over WebSocket, then a writer over SPDY: both see it all.
	watch := &xBuffer{}
	watchDone := make(chan error, 1)
	go func() { watchDone <- attach(nil, watch, nil, true) }()
	time.Sleep(time.Second)
	pr, pw := io.Pipe()
	out, errb := &xBuffer{}, &xBuffer{}
	writerDone := make(chan error, 1)
	go func() { writerDone <- attach(pr, out, errb, false) }()
	time.Sleep(time.Second)
	// Not inline: a session that failed would never read it.
	go func() { _, _ = io.WriteString(pw, "a\nb\n") }()
	xWaitFor(t, "attached echo", func() bool { return strings.Contains(watch.String(), "got:b") })
	// stdin_once: this session's EOF ends the container's input.
	_ = pw.Close()
	for name, ch := range map[string]chan error{"watcher": watchDone, "writer": writerDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s attach: %v", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s attach did not end with the container", name)
		}
	}
	if want := "got:a\ngot:b\nbye\n"; out.String() != want || watch.String() != want {
		t.Errorf("attached stdout %q and %q, want %q", out.String(), watch.String(), want)
	}
	if want := "err:a\nerr:b\n"; errb.String() != want {
		t.Errorf("attached stderr %q, want %q", errb.String(), want)
	}
	st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	stdout, stderr := readLogs(t, d, st.LogPath)
	if stdout != "got:a\ngot:b\nbye\n" || stderr != "err:a\nerr:b\n" {
		t.Errorf("log while attached: %q / %q", stdout, stderr)
	}
	removePod(t, d, podID)
}

func testPortForward(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "pf")
	podID := runPod(t, d, pod)
	script := "mkdir -p /tmp/www && echo hello-pf > /tmp/www/index.html && exec busybox httpd -f -p 127.0.0.1:8080 -h /tmp/www"
	id := runCtr(t, d, podID, pod, shConfig("httpd", script))
	xWaitFor(t, "httpd to listen", func() bool {
		_, _, err := d.Runtime.ExecSync(context.Background(), id, []string{"sh", "-c", "busybox wget -q -O - http://127.0.0.1:8080/"}, 5*time.Second)
		return err == nil
	})
	resp, err := d.RuntimeClient.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{8080}})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	u, err := url.Parse(resp.Url)
	if err != nil {
		t.Fatal(err)
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var pfErr bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, &pfErr)
	if err != nil {
		t.Fatal(err)
	}
	fwDone := make(chan error, 1)
	go func() { fwDone <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-fwDone:
		t.Fatalf("ForwardPorts: %v", err)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("GetPorts = %v, %v", ports, err)
	}
	local := "http://127.0.0.1:" + strconv.Itoa(int(ports[0].Local)) + "/"
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			r, err := c.Get(local)
			if err != nil {
				errs <- err
				return
			}
			defer r.Body.Close()
			b, _ := io.ReadAll(r.Body)
			if string(b) != "hello-pf\n" {
				errs <- fmt.Errorf("body %q", b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent request through the forward: %v", err)
	}
	close(stop)
	<-fwDone

	// Nothing listens on 8081: the error stream says why.
	if msg := refusedPortMessage(t, d, podID, 8081); !strings.Contains(msg, "connection refused") {
		t.Errorf("error stream for a closed port: %q, want it to say connection refused", msg)
	}
	removePod(t, d, podID)
}

// refusedPortMessage opens one port-forward stream pair by hand, as
// kubectl does, and returns what the error stream says.
func refusedPortMessage(t *testing.T, d *testutil.Daemon, podID string, port int32) string {
	t.Helper()
	resp, err := d.RuntimeClient.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{port}})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	u, _ := url.Parse(resp.Url)
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u).Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatalf("dial port-forward: %v", err)
	}
	defer conn.Close()
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", strconv.Itoa(int(port)))
	h.Set("requestID", "1")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	_ = errStream.Close()
	h.Set("streamType", "data")
	data, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Reset()
	done := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(errStream); done <- b }()
	select {
	case b := <-done:
		return string(b)
	case <-time.After(20 * time.Second):
		t.Fatal("no answer on the error stream")
	}
	return ""
}

// sleepMarker is a sleep duration unique enough to find the process by.
func sleepMarker() string {
	n, _ := strconv.ParseUint(randID(), 16, 32)
	return strconv.FormatUint(100000+n%800000, 10)
}

// xPidsWithArg lists live processes with arg as a whole command-line word.
func xPidsWithArg(arg string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(append([]byte{0}, b...), []byte("\x00"+arg+"\x00")) && !xIsZombie(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func xProcStat(pid int) (state byte, ppid int, ok bool) {
	st, err := api.ReadProcStat(pid)
	return st.State, st.PPid, err == nil
}

func xIsZombie(pid int) bool {
	st, _, ok := xProcStat(pid)
	return ok && st == 'Z'
}

// assertNoShimZombies fails if a shim of d has an unreaped child.
func assertNoShimZombies(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	shims := map[int]bool{}
	for _, pid := range xPidsWithArg(d.State) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "berth-shim" {
			shims[pid] = true
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ppid, ok := xProcStat(pid); ok && st == 'Z' && shims[ppid] {
			t.Errorf("zombie %d under shim %d", pid, ppid)
		}
	}
}

func xWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
