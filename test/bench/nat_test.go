package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The bench's own rules go, another network's stay: the shapes are those
// the bridge (masquerade chain) and portmap (DNAT chain) plugins write.
func TestRemoveNATRules(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (iptables)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables")
	}
	const (
		mine, other   = "berth-bench-test01", "berth-bench-test02"
		masq, dnat    = "CNI-0123456789abcdef01234567", "CNI-DN-0123456789abcdef01234"
		otherChain    = "CNI-fedcba9876543210fedcba98"
		comment       = `name: "%s" id: "0123"`
		commentOther  = `name: "%s" id: "4567"`
		hostportChain = "CNI-HOSTPORT-BTEST"
	)
	ipt := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}
	cmt := func(f, net string) string { return strings.Replace(f, "%s", net, 1) }
	t.Cleanup(func() {
		_ = exec.Command("sh", "-c", `iptables -w -t nat -S POSTROUTING | grep -e berth-bench-test | sed 's/^-A/-D/' | while read -r r; do eval iptables -w -t nat $r; done`).Run()
		for _, c := range []string{masq, dnat, otherChain, hostportChain} {
			_ = exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
			_ = exec.Command("iptables", "-w", "-t", "nat", "-X", c).Run()
		}
	})
	for _, c := range []string{masq, dnat, otherChain, hostportChain} {
		ipt("-N", c)
	}
	ipt("-A", masq, "-d", "10.235.0.0/24", "-m", "comment", "--comment", cmt(comment, mine), "-j", "ACCEPT")
	ipt("-A", "POSTROUTING", "-s", "10.235.0.5/32", "-m", "comment", "--comment", cmt(comment, mine), "-j", masq)
	ipt("-A", dnat, "-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "10.235.0.5:80")
	ipt("-A", hostportChain, "-p", "tcp", "-m", "comment", "--comment", "dnat "+cmt(comment, mine), "--dport", "8080", "-j", dnat)
	ipt("-A", otherChain, "-d", "10.236.0.0/24", "-m", "comment", "--comment", cmt(commentOther, other), "-j", "ACCEPT")
	ipt("-A", "POSTROUTING", "-s", "10.236.0.5/32", "-m", "comment", "--comment", cmt(commentOther, other), "-j", otherChain)

	if err := removeNATRules(mine); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("iptables", "-t", "nat", "-S").Output()
	if err != nil {
		t.Fatal(err)
	}
	rules := string(out)
	for _, gone := range []string{masq, dnat, mine} {
		if strings.Contains(rules, gone) {
			t.Errorf("%s left behind:\n%s", gone, rules)
		}
	}
	for _, kept := range []string{otherChain, other, "-N " + hostportChain} {
		if !strings.Contains(rules, kept) {
			t.Errorf("%s removed", kept)
		}
	}
}
