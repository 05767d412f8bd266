package e2e

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

var logCases = []sharedCase{
	{"Logs", testLogs},
}

// criLine is one line of the CRI log format.
var criLine = regexp.MustCompile(`^(\S+) (stdout|stderr) (F|P) (.*)$`)

func testLogs(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "logs")
	podID := runPod(t, d, pod)
	const long = 40000
	script := `echo out1; echo err1 >&2; echo out2; head -c 40000 /dev/zero | tr '\0' x; echo; echo err2 >&2; printf 'no-newline'`
	st, stdout, stderr := runToExit(t, d, podID, pod, shConfig("logs", script))
	if st.ExitCode != 0 {
		t.Fatalf("exit %d", st.ExitCode)
	}
	wantOut := "out1\nout2\n" + strings.Repeat("x", long) + "\nno-newline"
	// The last line has no newline: it is written as a partial line, so
	// kubelet reads back no newline the container never wrote.
	if stdout != wantOut {
		t.Errorf("stdout: %d bytes, want %d; starts %.40q, ends %q", len(stdout), len(wantOut), stdout, tail(stdout, 40))
	}
	if want := "err1\nerr2\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	// The raw file: every line parses, timestamps are RFC3339Nano and do not
	// go backwards per stream, the long line is split into P parts.
	f, err := os.Open(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	partial := 0
	last := map[string]time.Time{}
	for sc.Scan() {
		m := criLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Errorf("log line is not CRI format: %.80q", sc.Text())
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Errorf("log timestamp %q: %v", m[1], err)
		}
		if ts.Before(last[m[2]]) {
			t.Errorf("%s timestamps go backwards: %s after %s", m[2], ts, last[m[2]])
		}
		last[m[2]] = ts
		if m[3] == "P" {
			partial++
			if len(m[4]) > 16*1024 {
				t.Errorf("partial line of %d bytes, want at most 16 KiB", len(m[4]))
			}
		}
	}
	if partial < 2 {
		t.Errorf("%d partial (P) lines for a %d-byte line, want at least 2", partial, long)
	}
	removePod(t, d, podID)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
