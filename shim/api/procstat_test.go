package api

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestReadProcStat(t *testing.T) {
	st, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'R' && st.State != 'S' || st.StartTime == 0 || st.PPid != os.Getppid() || st.Gone() {
		t.Errorf("self stat = %+v", st)
	}
	if _, err := ReadProcStat(1 << 30); !errdefs.IsNotFound(err) {
		t.Errorf("stat of missing pid: %v, want NotFound", err)
	}
}

func TestParseProcStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 4242 19 20\n"
	for _, tc := range []struct {
		name, in string
		want     ProcStat
		bad      bool
	}{
		{name: "plain", in: "12 (sh) S 7" + tail, want: ProcStat{State: 'S', PPid: 7, StartTime: 4242}},
		{name: "comm with spaces and parens", in: "12 (a) b) (c) Z 1" + tail, want: ProcStat{State: 'Z', PPid: 1, StartTime: 4242}},
		{name: "no comm", in: "12 sh S 7" + tail, bad: true},
		{name: "short", in: "12 (sh) S 7 1 2 3\n", bad: true},
		{name: "long state", in: "12 (sh) SS 7" + tail, bad: true},
		{name: "bad ppid", in: "12 (sh) S x" + tail, bad: true},
		{name: "bad start time", in: "12 (sh) S 7 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 -1 19\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcStat([]byte(tc.in))
			if tc.bad {
				if !errdefs.IsDataLoss(err) {
					t.Fatalf("ParseProcStat = %+v, %v; want DataLoss", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseProcStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if !(ProcStat{State: 'X'}).Gone() || (ProcStat{State: 'D'}).Gone() {
		t.Error("Gone: X is gone, D is not")
	}
}

func TestParseProcStatus(t *testing.T) {
	in := "Name:\tsh\nUid:\t1000\t0\t1000\t1000\nGid:\t5\t5\t5\t5\nCapInh:\t0000000000000000\n" +
		"CapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n"
	st, err := ParseProcStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.UIDs, []uint32{1000, 0, 1000, 1000}) || !slices.Equal(st.GIDs, []uint32{5, 5, 5, 5}) ||
		st.CapEff != 0xa80425fb || st.CapBnd != 0x1ffffffffff || !st.NoNewPrivs || st.Seccomp != 2 || len(st.Lacks()) != 0 {
		t.Errorf("ParseProcStatus = %+v, lacks %q", st, st.Lacks())
	}
	st, err = ParseProcStatus(strings.NewReader("Name:\tsh\nCapBnd:\t0\n"))
	if err != nil || !slices.Equal(st.Lacks(), []string{"Uid", "Gid", "CapEff", "NoNewPrivs", "Seccomp"}) {
		t.Errorf("short status: lacks %q, %v", st.Lacks(), err)
	}
	for _, bad := range []string{"CapEff:\tzz\n", "Uid:\t0 x 0 0\n", "Seccomp:\t-\n"} {
		if _, err := ParseProcStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := ParseProcStatus(f); err != nil || len(st.Lacks()) != 0 || st.UIDs[1] != uint32(os.Geteuid()) {
		t.Errorf("own status = %+v, lacks %q, %v", st, st.Lacks(), err)
	}
}
