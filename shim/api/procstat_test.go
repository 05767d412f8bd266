package api

import (
	"os"
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
