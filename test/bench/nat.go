package main

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// podChain matches the NAT chains the bridge (CNI-<hash>) and portmap
// (CNI-DN-<hash>) plugins make per attachment; shared chains such as
// CNI-HOSTPORT-DNAT stay.
var podChain = regexp.MustCompile(`^CNI-([A-Z]+-)?[0-9a-f]{12,}$`)

// removeNATRules deletes every rule of the nat table whose comment names
// CNI network network, and the per-attachment chains those rules live in
// or jump to.
func removeNATRules(network string) error {
	out, err := exec.Command("iptables", "-t", "nat", "-S").Output()
	if err != nil {
		return fmt.Errorf("iptables -S: %w", err)
	}
	mark := fmt.Sprintf(`name: \"%s\"`, network)
	chains := map[string]bool{}
	var errs []error
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, mark) {
			continue
		}
		f := strings.Fields(line)
		if podChain.MatchString(f[1]) {
			chains[f[1]] = true
			continue
		}
		if i := strings.LastIndex(line, " -j "); i >= 0 {
			if target := strings.Fields(line[i+4:])[0]; podChain.MatchString(target) {
				chains[target] = true
			}
		}
		// -S prints each rule the way a shell would read it back.
		del := "iptables -w -t nat -D" + strings.TrimPrefix(line, "-A")
		if out, err := exec.Command("sh", "-c", del).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: %s", del, err, out))
		}
	}
	for c := range chains {
		for _, op := range []string{"-F", "-X"} {
			if out, err := exec.Command("iptables", "-w", "-t", "nat", op, c).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables %s %s: %w: %s", op, c, err, out))
			}
		}
	}
	return errors.Join(errs...)
}
