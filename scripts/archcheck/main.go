// Command archcheck enforces two rules of the layout (docs/architecture.md)
// on the project's non-test Go files:
//
//   - no interface has more than -max methods (8), counting the methods of
//     the interfaces it embeds: a consumer that needs more gathers several
//     small interfaces in a struct;
//   - no package outside the metadata store and the composition roots names
//     the concrete store type (meta.DB): consumers declare what they use.
//
// It parses source only (go/parser), so it runs in a second with no
// dependency: embedded interfaces are resolved among the project's own
// declarations and a few standard ones.
//
// Usage: go run ./scripts/archcheck [-max 8] [root]
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// storeOwners may name meta.DB: the store itself, the wiring, the
// composition roots and the benchmarks (which assemble like the server).
var storeOwners = []string{"internal/meta", "internal/wire", "internal/server", "internal/testenv", "cmd/berth", "bench"}

// stdInterfaces are the method counts of standard interfaces the project
// embeds.
var stdInterfaces = map[string]int{
	"io.Reader": 1, "io.Writer": 1, "io.Closer": 1, "io.ReaderAt": 1, "io.Seeker": 1, "io.WriterTo": 1, "io.ReaderFrom": 1,
	"io.ReadCloser": 2, "io.WriteCloser": 2, "io.ReadSeeker": 2, "io.ReadWriter": 2, "io.ReadSeekCloser": 3,
	"http.Handler": 1, "fmt.Stringer": 1, "error": 1, "context.Context": 4, "fs.FS": 1, "hash.Hash": 5,
}

type iface struct {
	pos      token.Position
	pkg      string // import path relative to the root
	name     string
	methods  int
	embedded []string // "pkgdir.Name" or "Name" (same package), as written
	imports  map[string]string
}

func main() {
	max := flag.Int("max", 8, "most methods an interface may have")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	problems, err := check(root, *max)
	if err != nil {
		fmt.Fprintln(os.Stderr, "archcheck:", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

func check(root string, max int) ([]string, error) {
	module, err := modulePath(root)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	ifaces := map[string]*iface{} // "pkgdir.Name"
	var problems []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		dir := filepath.ToSlash(filepath.Dir(rel))
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		imports := map[string]string{}
		for _, im := range f.Imports {
			p := strings.Trim(im.Path.Value, `"`)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = p
		}
		metaName := ""
		for name, p := range imports {
			if p == module+"/internal/meta" {
				metaName = name
			}
		}
		if metaName != "" && !owner(dir) {
			ast.Inspect(f, func(n ast.Node) bool {
				if se, ok := n.(*ast.SelectorExpr); ok {
					if x, ok := se.X.(*ast.Ident); ok && x.Name == metaName && se.Sel.Name == "DB" {
						problems = append(problems, fmt.Sprintf("%s: names the concrete store type meta.DB; declare the small interfaces this package uses",
							fset.Position(se.Pos())))
					}
				}
				return true
			})
		}
		// Interfaces: named ones are recorded by name, anonymous ones
		// (a struct field's or parameter's type) checked where they are.
		named := map[*ast.InterfaceType]string{}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				if it, ok := ts.Type.(*ast.InterfaceType); ok {
					named[it] = ts.Name.Name
				}
			}
		}
		anon := 0
		ast.Inspect(f, func(n ast.Node) bool {
			it, ok := n.(*ast.InterfaceType)
			if !ok || it.Methods == nil {
				return true
			}
			name, ok := named[it]
			if !ok {
				anon++
				name = fmt.Sprintf("(anonymous #%d)", anon)
			}
			in := &iface{pos: fset.Position(it.Pos()), pkg: dir, name: name, imports: imports}
			for _, m := range it.Methods.List {
				switch t := m.Type.(type) {
				case *ast.FuncType:
					in.methods += len(m.Names)
				case *ast.Ident:
					in.embedded = append(in.embedded, t.Name)
				case *ast.SelectorExpr:
					if x, ok := t.X.(*ast.Ident); ok {
						in.embedded = append(in.embedded, x.Name+"."+t.Sel.Name)
					}
				default: // a type set (constraint): not a method
				}
			}
			ifaces[dir+"."+name] = in
			return true
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var count func(in *iface, seen map[*iface]bool) int
	count = func(in *iface, seen map[*iface]bool) int {
		if seen[in] {
			return 0
		}
		seen[in] = true
		n := in.methods
		for _, e := range in.embedded {
			key := in.pkg + "." + e
			if pkg, name, ok := strings.Cut(e, "."); ok {
				if p, ok := in.imports[pkg]; ok && strings.HasPrefix(p, module+"/") {
					key = strings.TrimPrefix(p, module+"/") + "." + name
				} else if c, ok := stdInterfaces[e]; ok {
					n += c
					continue
				}
			} else if c, ok := stdInterfaces[e]; ok {
				n += c
				continue
			}
			if sub, ok := ifaces[key]; ok {
				n += count(sub, seen)
			} else {
				n++ // unknown: counted as one
			}
		}
		return n
	}
	keys := make([]string, 0, len(ifaces))
	for k := range ifaces {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		in := ifaces[k]
		if n := count(in, map[*iface]bool{}); n > max {
			problems = append(problems, fmt.Sprintf("%s: interface %s has %d methods (at most %d): split it, or gather small ones in a struct",
				in.pos, in.name, n, max))
		}
	}
	return problems, nil
}

func owner(dir string) bool {
	for _, o := range storeOwners {
		if dir == o || strings.HasPrefix(dir, o+"/") {
			return true
		}
	}
	return false
}

func modulePath(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(rest), nil
		}
	}
	return "", fmt.Errorf("no module line in go.mod")
}
