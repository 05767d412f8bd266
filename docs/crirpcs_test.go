package docs

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/server"
)

const rpcsFile = "cri-rpcs.md"

// unimplementedMark starts the description of a call berth answers with
// Unimplemented.
const unimplementedMark = "**Unimplemented**"

// defaultsProbe tells berth's own RPC methods from the Unimplemented
// defaults server.Server embeds: a method Server declares itself is at the
// same depth as the probe's own defaults, so the selector is ambiguous and
// the probe has no such method; a method Server only inherits from its
// embedded defaults is deeper, so the probe's own default wins.
type defaultsProbe struct {
	*server.Server
	runtime.UnimplementedRuntimeServiceServer
	runtime.UnimplementedImageServiceServer
}

// implemented reports whether server.Server answers rpc with its own code.
func implemented(rpc string) bool {
	_, inherited := reflect.TypeOf(defaultsProbe{}).MethodByName(rpc)
	return !inherited
}

// rpcs lists every call of a service from its generated descriptor.
func rpcs(d grpc.ServiceDesc) []string {
	var out []string
	for _, m := range d.Methods {
		out = append(out, m.MethodName)
	}
	for _, s := range d.Streams {
		out = append(out, s.StreamName)
	}
	return out
}

type rpcRow struct {
	service     string // "RuntimeService" or "ImageService"
	unsupported bool   // the description starts with unimplementedMark
	line        int
}

var (
	callName = regexp.MustCompile("^`([A-Za-z]+)`$")
	anyCall  = regexp.MustCompile("`([A-Z][A-Za-z]+)`")
)

// parseRPCRows reads the page's tables: a row whose first cell is only
// backquoted call names ("`A`, `B`") is the row of those calls; a row
// whose first cell says more ("`A` from a checkpoint") describes a case
// of calls that have a row of their own. Tables belong to the service the
// last "## RuntimeService..." or "## ImageService..." heading names.
func parseRPCRows(t *testing.T, page string) (rows map[string]rpcRow, mentioned map[string]int) {
	rows, mentioned = map[string]rpcRow{}, map[string]int{}
	service := ""
	for i, line := range strings.Split(page, "\n") {
		n := i + 1
		if h, ok := strings.CutPrefix(line, "## "); ok {
			service = ""
			for _, s := range []string{"RuntimeService", "ImageService"} {
				if strings.HasPrefix(h, s) {
					service = s
				}
			}
			continue
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 2 {
			t.Errorf("%s:%d: a table row with one cell", rpcsFile, n)
			continue
		}
		first := strings.TrimPrefix(cells[0], "| ")
		desc := strings.TrimSpace(cells[1])
		var names []string
		for _, part := range strings.Split(first, ", ") {
			m := callName.FindStringSubmatch(part)
			if m == nil {
				names = nil
				break
			}
			names = append(names, m[1])
		}
		if names == nil { // a case of calls described elsewhere
			for _, m := range anyCall.FindAllStringSubmatch(first, -1) {
				mentioned[m[1]] = n
			}
			continue
		}
		if service == "" {
			t.Errorf("%s:%d: call row outside a RuntimeService or ImageService section", rpcsFile, n)
		}
		for _, name := range names {
			if prev, dup := rows[name]; dup {
				t.Errorf("%s:%d: `%s` has a row already, at line %d", rpcsFile, n, name, prev.line)
			}
			rows[name] = rpcRow{service: service, unsupported: strings.HasPrefix(desc, unimplementedMark), line: n}
		}
	}
	return rows, mentioned
}

// TestCRIRPCsPage fails when cri-rpcs.md misses a call of the CRI berth
// builds against, names one that does not exist, puts one under the wrong
// service, or says Unimplemented for a call berth implements (or the
// reverse).
func TestCRIRPCsPage(t *testing.T) {
	data, err := os.ReadFile(rpcsFile)
	if err != nil {
		t.Fatal(err)
	}
	rows, mentioned := parseRPCRows(t, string(data))
	known := map[string]bool{}
	for _, svc := range []struct {
		name string
		desc grpc.ServiceDesc
	}{
		{"RuntimeService", runtime.RuntimeService_ServiceDesc},
		{"ImageService", runtime.ImageService_ServiceDesc},
	} {
		for _, rpc := range rpcs(svc.desc) {
			known[rpc] = true
			row, ok := rows[rpc]
			impl := implemented(rpc)
			switch {
			case !ok && impl:
				t.Errorf("%s has no row for %s.%s, which berth implements", rpcsFile, svc.name, rpc)
			case !ok:
				t.Errorf("%s has no row for %s.%s; berth answers it Unimplemented: add a row starting %q", rpcsFile, svc.name, rpc, unimplementedMark)
			case row.service != svc.name:
				t.Errorf("%s:%d: %s is a %s call, listed under %s", rpcsFile, row.line, rpc, svc.name, row.service)
			case impl && row.unsupported:
				t.Errorf("%s:%d: %s says Unimplemented, but berth implements it", rpcsFile, row.line, rpc)
			case !impl && !row.unsupported:
				t.Errorf("%s:%d: berth answers %s Unimplemented; start its description with %q", rpcsFile, row.line, rpc, unimplementedMark)
			}
		}
	}
	for name, row := range rows {
		if !known[name] {
			t.Errorf("%s:%d: `%s` is no call of the CRI berth builds against", rpcsFile, row.line, name)
		}
	}
	for name, line := range mentioned {
		if !known[name] {
			t.Errorf("%s:%d: `%s` is no call of the CRI berth builds against", rpcsFile, line, name)
		}
	}
}

// TestDefaultsProbe checks the method-set rule implemented relies on, on a
// type of the same shape whose calls are known.
func TestDefaultsProbe(t *testing.T) {
	type probe struct {
		*partial
		runtime.UnimplementedRuntimeServiceServer
	}
	typ := reflect.TypeOf(probe{})
	if _, inherited := typ.MethodByName("Version"); inherited {
		t.Error("a declared method looks inherited")
	}
	if _, inherited := typ.MethodByName("Status"); !inherited {
		t.Error("an inherited default looks declared")
	}
	if !implemented("Version") || !implemented("PullImage") {
		t.Error("server.Server's Version or PullImage looks unimplemented")
	}
}

// partial declares one call and inherits the rest, as server.Server does.
type partial struct {
	runtime.UnimplementedRuntimeServiceServer
}

func (*partial) Version() {}

// TestConformancePageMarkers keeps the markers test/conformance/record.sh
// rewrites between, so `make conformance` can refresh conformance.md.
func TestConformancePageMarkers(t *testing.T) {
	data, err := os.ReadFile("conformance.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(data)
	for _, section := range []string{"conformance-run", "conformance-specs"} {
		begin := strings.Index(page, "\n<!-- BEGIN "+section)
		end := strings.Index(page, "\n<!-- END "+section)
		if begin < 0 || end < begin || strings.Count(page, "<!-- BEGIN "+section) != 1 || strings.Count(page, "<!-- END "+section) != 1 {
			t.Errorf("conformance.md needs one <!-- BEGIN %s --> line and one <!-- END %s --> line after it", section, section)
		}
	}
}
