//go:build !yaegi

package plugin

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCodeTourNamesWhatEachFileDeclares: the README's code tour names, for
// each plugin file, the functions and types it holds. Every plain identifier
// it names there must be declared in that file, so that a step renamed or
// removed (headersStart was, once) cannot stay in the map contributors
// follow. (Found by a review of issue 14's paths.)
func TestCodeTourNamesWhatEachFileDeclares(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(plugin/[a-z_]+\\.go)` \\| ([^|]*) \\|")
	tick := regexp.MustCompile("`([A-Za-z_][A-Za-z0-9_]*)`")
	checked := 0
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		file := filepath.Join("..", m[1])
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatalf("%s: %v", m[1], err)
		}
		declared := map[string]bool{}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				declared[d.Name.Name] = true
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						declared[s.Name.Name] = true
					case *ast.ValueSpec:
						for _, n := range s.Names {
							declared[n.Name] = true
						}
					}
				}
			}
		}
		for _, n := range tick.FindAllStringSubmatch(m[2], -1) {
			checked++
			if !declared[n[1]] {
				t.Errorf("README: the row of %s names `%s`, which %s does not declare", m[1], n[1], m[1])
			}
		}
	}
	if checked == 0 {
		t.Fatal("no README row of a plugin file found")
	}
}
