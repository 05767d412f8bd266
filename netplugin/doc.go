// Package netplugin owns pod networking through CNI: discovering and
// watching the network config directory, running the plugins' ADD, DEL,
// CHECK and GC commands through libcni with the Kubernetes arguments and
// capability arguments, remembering what must be undone, and turning CNI
// results into pod IPs.
//
// It knows nothing of CRI types: callers translate their pod metadata into
// PodNetwork.
package netplugin
