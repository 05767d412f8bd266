package store

// Counts returns how many sandboxes and containers are in each state. Every
// state is present, zero when nothing is in it, so a metric series does not
// vanish with its last object. The metrics endpoint reads it at scrape time.
func (s *Store) Counts() (sandboxes, containers map[string]int) {
	sandboxes = map[string]int{string(SandboxReady): 0, string(SandboxNotReady): 0}
	containers = map[string]int{
		string(ContainerCreated): 0, string(ContainerRunning): 0,
		string(ContainerExited): 0, string(ContainerUnknown): 0,
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sb := range s.sandboxes {
		sandboxes[string(sb.Status.State)]++
	}
	for _, c := range s.containers {
		containers[string(c.Status.State)]++
	}
	return sandboxes, containers
}
