// Package apicheck lists the exported API of Go packages, one declaration a
// line, in the manner of the Go repository's api/*.txt files, so that a
// committed list can be compared with what the code exports. Its test keeps
// api/stable.txt in step with the stable packages (see README,
// "Compatibility").
package apicheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/constant"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Lines type-checks the packages (import paths) from the export data the go
// command builds, and returns their exported API as sorted lines.
func Lines(dir string, paths []string) ([]string, error) {
	exports, err := exportFiles(dir, paths)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("apicheck: no export data for %s", path)
		}
		return os.Open(f)
	})
	var lines []string
	for _, p := range paths {
		pkg, err := imp.Import(p)
		if err != nil {
			return nil, fmt.Errorf("apicheck: %s: %w", p, err)
		}
		lines = append(lines, pkgLines(pkg)...)
	}
	sort.Strings(lines)
	return lines, nil
}

// exportFiles asks the go command to build export data for paths and
// their dependencies, and returns where each package's file is.
func exportFiles(dir string, paths []string) (map[string]string, error) {
	args := append([]string{"list", "-export", "-deps", "-json=ImportPath,Export"}, paths...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("apicheck: go list: %w: %s", err, stderr.String())
	}
	exports := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct{ ImportPath, Export string }
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("apicheck: go list output: %w", err)
		}
		exports[p.ImportPath] = p.Export
	}
	return exports, nil
}

func pkgLines(pkg *types.Package) []string {
	q := types.RelativeTo(pkg)
	prefix := "pkg " + pkg.Path() + ", "
	var out []string
	add := func(s string) { out = append(out, prefix+s) }
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		switch o := obj.(type) {
		case *types.Const:
			add(fmt.Sprintf("const %s %s = %s", name, types.TypeString(o.Type(), q), constString(o.Val())))
		case *types.Var:
			add(fmt.Sprintf("var %s %s", name, types.TypeString(o.Type(), q)))
		case *types.Func:
			add("func " + name + strings.TrimPrefix(types.TypeString(o.Type(), q), "func"))
		case *types.TypeName:
			out = append(out, typeLines(prefix, o, q)...)
		}
	}
	return out
}

func constString(v constant.Value) string {
	if v.Kind() == constant.String {
		return v.ExactString()
	}
	return v.String()
}

func typeLines(prefix string, o *types.TypeName, q types.Qualifier) []string {
	var out []string
	name := o.Name()
	if o.IsAlias() {
		return []string{prefix + fmt.Sprintf("type %s = %s", name, types.TypeString(o.Type(), q))}
	}
	named, ok := o.Type().(*types.Named)
	if !ok {
		return nil
	}
	if tp := named.TypeParams(); tp != nil && tp.Len() > 0 {
		var ps []string
		for i := 0; i < tp.Len(); i++ {
			p := tp.At(i)
			ps = append(ps, p.Obj().Name()+" "+types.TypeString(p.Constraint(), q))
		}
		name += "[" + strings.Join(ps, ", ") + "]"
	}
	switch u := named.Underlying().(type) {
	case *types.Struct:
		out = append(out, prefix+"type "+name+" struct")
		for i := 0; i < u.NumFields(); i++ {
			f := u.Field(i)
			if !f.Exported() {
				continue
			}
			if f.Embedded() {
				out = append(out, prefix+fmt.Sprintf("type %s struct, embedded %s", name, types.TypeString(f.Type(), q)))
				continue
			}
			out = append(out, prefix+fmt.Sprintf("type %s struct, %s %s", name, f.Name(), types.TypeString(f.Type(), q)))
		}
	case *types.Interface:
		out = append(out, prefix+"type "+name+" interface")
		for i := 0; i < u.NumEmbeddeds(); i++ {
			out = append(out, prefix+fmt.Sprintf("type %s interface, embedded %s", name, types.TypeString(u.EmbeddedType(i), q)))
		}
		for i := 0; i < u.NumExplicitMethods(); i++ {
			m := u.ExplicitMethod(i)
			if !m.Exported() {
				out = append(out, prefix+fmt.Sprintf("type %s interface, unexported methods", name))
				continue
			}
			out = append(out, prefix+fmt.Sprintf("type %s interface, %s%s", name, m.Name(), strings.TrimPrefix(types.TypeString(m.Type(), q), "func")))
		}
	default:
		out = append(out, prefix+fmt.Sprintf("type %s %s", name, types.TypeString(u, q)))
	}
	for i := 0; i < named.NumMethods(); i++ {
		m := named.Method(i)
		if !m.Exported() {
			continue
		}
		sig := m.Type().(*types.Signature)
		recv := types.TypeString(sig.Recv().Type(), q)
		out = append(out, prefix+fmt.Sprintf("method (%s) %s%s", recv, m.Name(), strings.TrimPrefix(types.TypeString(sig, q), "func")))
	}
	return out
}
