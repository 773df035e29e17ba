package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// moduleRank is the import direction of the modules
// (auth ← orgs ← upstreams, certs ← vhosts ← agents ← metrics, logs): a module may
// import only modules of a lower rank.
var moduleRank = map[string]int{
	"auth":      0,
	"orgs":      1,
	"upstreams": 2,
	"certs":     2,
	"vhosts":    3,
	"agents":    4,
	"metrics":   5,
	"logs":      5,
	"replicas":  0, // imports no module: it lists the app's replicas registry
}

const modulePrefix = "github.com/nxmesh/nxmesh/modules/"

// wireDir is not a module but the master's module list and wiring: it imports
// every module, and only the master's command, tests, e2e and bench import it.
const wireDir = "wire"

// TestLayout_ImportDirection fails when a module imports a module above (or
// beside) it, when a module is missing from moduleRank, or when the plumbing
// (app/, views/, static/, proto/, agent/) imports any module or the wiring
// (modules/wire). Test files are not checked: tests may wire several modules
// together.
func TestLayout_ImportDirection(t *testing.T) {
	entries, err := os.ReadDir("modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		mod := e.Name()
		if mod == wireDir {
			continue
		}
		rank, ok := moduleRank[mod]
		if !ok {
			t.Errorf("modules/%s has no place in the import order (moduleRank in layout_test.go)", mod)
			continue
		}
		for file, imp := range moduleImports(t, filepath.Join("modules", mod)) {
			for _, other := range imp {
				if other == mod {
					continue
				}
				if other == wireDir {
					t.Errorf("%s imports modules/wire: only the master's command, tests, e2e and bench import the wiring", file)
					continue
				}
				if r, known := moduleRank[other]; !known || r >= rank {
					t.Errorf("%s imports module %s: modules import only those below them (%s)", file, other, "auth ← orgs ← upstreams, certs ← vhosts ← agents ← metrics, logs")
				}
			}
		}
	}
	for _, dir := range []string{"app", "views", "static", "proto", "agent"} {
		for file, imp := range moduleImports(t, dir) {
			if len(imp) > 0 {
				t.Errorf("%s imports module(s) %v: %s/ is plumbing and never imports a module", file, imp, dir)
			}
		}
	}
}

// moduleImports returns, per non-test Go file under dir, the modules it imports.
func moduleImports(t *testing.T, dir string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if rest, ok := strings.CutPrefix(p, modulePrefix); ok {
				out[path] = append(out[path], strings.SplitN(rest, "/", 2)[0])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
