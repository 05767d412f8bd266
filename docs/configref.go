package docs

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/berth-runtime/berth/cri/config"
)

// ConfigReference renders the reference of every config key as Markdown:
// one table per TOML table, with each key's type, embedded default and the
// comment `berthd config default` prints for it.
func ConfigReference() []byte {
	var b bytes.Buffer
	b.WriteString(`# berthd configuration reference

<!-- Generated from cri/config by "go generate ./docs"; do not edit. -->

berthd reads ` + "`" + config.DefaultPath + "`" + ` (or the file given with ` + "`--config`" + `),
then every ` + "`*.toml`" + ` in ` + "`config.d`" + ` beside it (` + "`" + config.DropInDir(config.DefaultPath) + "`" + `)
in lexical order, merged over it: tables merge key by key, arrays and
other values replace (see the operator guide). Every key has an embedded
default, so the files may be missing or name only the keys that differ.
An unknown key or a bad value stops berthd with a message naming the key
(and the file); ` + "`berthd config check [FILE]`" + `
validates a file and its drop-ins without starting anything, ` + "`berthd config show [FILE]`" + `
prints the merged result, and ` + "`berthd config default`" + ` prints every
key with its default. Keys marked *reload* are applied on SIGHUP
(` + "`systemctl reload berth`" + `); every other change needs a restart, which
leaves running containers alone.
`)
	def := config.Default()
	writeTable(&b, "", reflect.TypeOf(def), reflect.ValueOf(def))
	return b.Bytes()
}

// machineDependent are defaults computed on the node berthd runs on.
func machineDependent(key string) (string, bool) {
	if key == "runtime.restrict_oom_score_adj" {
		return "true when berthd lacks CAP_SYS_RESOURCE", true
	}
	return "", false
}

type tableRef struct {
	name string
	t    reflect.Type
	v    reflect.Value
}

func writeTable(b *bytes.Buffer, prefix string, t reflect.Type, v reflect.Value) {
	title := "Top level"
	if prefix != "" {
		title = "`[" + strings.TrimSuffix(prefix, ".") + "]`"
	}
	fmt.Fprintf(b, "\n## %s\n\n| key | type | default | description |\n| --- | --- | --- | --- |\n", title)
	var subs []tableRef
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			subs = append(subs, tableRef{prefix + name, f.Type, fv})
			continue
		}
		key := prefix + name
		def, ok := machineDependent(key)
		if !ok {
			def = literal(fv)
		}
		desc := f.Tag.Get("comment")
		if config.Reloadable(key) {
			desc += " *(reload)*"
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", name, typeName(f.Type), def, escape(desc))
		if f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.Struct {
			elem := reflect.New(f.Type.Elem()).Elem()
			subs = append(subs, tableRef{key + ".<name>", f.Type.Elem(), elem})
		}
	}
	for _, s := range subs {
		writeTable(b, s.name+".", s.t, s.v)
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "table of " + strings.ToLower(t.Elem().Name()) + " by name"
	case reflect.Pointer: // optional: unset means decided by berthd (machineDependent)
		return typeName(t.Elem())
	}
	return t.Kind().String()
}

// literal renders a default the way it would be written in TOML.
func literal(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return "`\"\"`"
		}
		return fmt.Sprintf("`%q`", v.String())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range v.Len() {
			parts[i] = fmt.Sprintf("%q", v.Index(i).Interface())
		}
		return "`[" + strings.Join(parts, ", ") + "]`"
	case reflect.Map:
		names := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			names = append(names, k.String())
		}
		sort.Strings(names)
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("`%v`", v.Interface())
}

// escape keeps a description literal in a Markdown table cell.
func escape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}
