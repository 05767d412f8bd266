// Package api holds the ttrpc API between berthd and berth-shim: shim.proto
// and the code generated from it, plus the files a shim leaves in its state
// directory (exit record, pid) that berthd reads when the shim is gone, the
// bundle's spec (berthd writes it, the shim reads it), and the facts of
// the kernel both sides must read alike: the capability names by number,
// a process's /proc/<pid>/stat and /proc/<pid>/status. It is the only code
// the daemon and the shim share.
package api

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-ttrpc=$(go tool -n protoc-gen-go-ttrpc) --go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. shim.proto"
