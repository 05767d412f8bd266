package config

// Reloadable reports whether berthd applies a change of key (dotted, as in
// "log.level") on SIGHUP. Every other key is bound at start-up: paths and
// sockets are open, and runtime handlers are recorded in the containers
// they created, so changing them needs a restart (which leaves containers
// running).
func Reloadable(key string) bool {
	switch key {
	case "log.level", "cni.conf_dir", "cni.bin_dirs":
		return true
	}
	return false
}
