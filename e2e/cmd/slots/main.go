// Command slots prints the frame slots that Yaegi allocates on every call of
// the plugin's interpreted functions: under Yaegi every variable and
// temporary of a function (each field selection, comparison, conversion and
// call result) is one allocation per call, whether its branch runs or not.
// It builds a copy of the Yaegi module that e2e uses with a hook in its
// compiler (cfg.go) that prints, for each function whose file:line (or name)
// contains -func, every slot whose type has a size, with the first node that
// uses it, and runs one of e2e's Yaegi micro-benchmarks with that copy.
//
//	cd e2e && go run ./cmd/slots -bench YaegiBreaker -func paths_gen.go:59
//
// The line is the one of the closure's `return func(` (or of a func
// declaration). Nothing here is shipped: it is a measuring tool.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// hook is added to Yaegi's interp package; dumpSlots is called where the
// compiler has just laid out a function's frame (see patches).
const hook = `package interp

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
)

func dumpSlots(interp *Interpreter, n *node, types []reflect.Type) {
	pat := os.Getenv("YAEGI_SLOTS")
	if pat == "" {
		return
	}
	pos := interp.fset.Position(n.pos)
	name := ""
	if n.kind == funcDecl {
		name = n.child[1].ident
	}
	where := fmt.Sprintf("%s:%d %s", pos.Filename, pos.Line, name)
	if !strings.Contains(where, pat) {
		return
	}
	first := map[int]*node{}
	var walk func(m *node, top bool)
	walk = func(m *node, top bool) {
		if !top && m.kind == funcLit {
			return
		}
		if m.level == 0 && m.findex >= 0 && m.findex < len(types) {
			if f, ok := first[m.findex]; !ok || m.pos < f.pos {
				first[m.findex] = m
			}
		}
		for _, c := range m.child {
			walk(c, false)
		}
	}
	walk(n, true)
	var lines []string
	for i, t := range types {
		if t.Size() == 0 {
			continue // reflect.New of a zero-size type does not allocate
		}
		desc := "?"
		if m := first[i]; m != nil {
			p := interp.fset.Position(m.pos)
			desc = fmt.Sprintf("line %d col %d: %s %s", p.Line, p.Column, m.kind, m.ident)
		}
		ts := t.String()
		if len(ts) > 30 {
			ts = ts[:30] + "..."
		}
		lines = append(lines, fmt.Sprintf("  slot %3d %-33s %s", i, ts, desc))
	}
	sort.Strings(lines)
	fmt.Fprintf(os.Stderr, "SLOTS %s: %d allocating of %d\n%s\n", where, len(lines), len(types), strings.Join(lines, "\n"))
}
`

// patches are the edits to Yaegi's cfg.go, each of which must apply once.
var patches = [][2]string{
	{"\t\tcase funcDecl:\n\t\t\tn.start = n.child[3].start\n\t\t\tn.types, n.scope = sc.types, sc\n",
		"\t\tcase funcDecl:\n\t\t\tn.start = n.child[3].start\n\t\t\tn.types, n.scope = sc.types, sc\n\t\t\tdumpSlots(interp, n, sc.types)\n"},
	{"\t\tcase funcLit:\n\t\t\tn.types, n.scope = sc.types, sc\n",
		"\t\tcase funcLit:\n\t\t\tn.types, n.scope = sc.types, sc\n\t\t\tdumpSlots(interp, n, sc.types)\n"},
}

func main() {
	bench := flag.String("bench", "YaegiBreaker", "the e2e micro-benchmark to run (without the Benchmark prefix)")
	fn := flag.String("func", "paths_gen.go:", "print the functions whose file:line or name contains this")
	flag.Parse()
	if err := run(*bench, *fn); err != nil {
		log.Fatal(err)
	}
}

func run(bench, fn string) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/traefik/yaegi").Output()
	if err != nil {
		return fmt.Errorf("finding yaegi (run from e2e/): %w", err)
	}
	src := strings.TrimSpace(string(out))
	tmp, err := os.MkdirTemp("", "yaegi-slots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "yaegi")
	if err := copyTree(src, dst); err != nil {
		return err
	}
	cfg := filepath.Join(dst, "interp", "cfg.go")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	for _, p := range patches {
		if bytes.Count(b, []byte(p[0])) != 1 {
			return fmt.Errorf("this Yaegi's cfg.go differs from the one the hook was written for (v0.16.1): %q", p[0])
		}
		b = bytes.Replace(b, []byte(p[0]), []byte(p[1]), 1)
	}
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "interp", "slots_hook.go"), []byte(hook), 0o644); err != nil {
		return err
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		return err
	}
	sum, err := os.ReadFile("go.sum")
	if err != nil {
		return err
	}
	mod = append(mod, []byte("\nreplace github.com/traefik/yaegi => "+dst+"\n")...)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), mod, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "go.sum"), sum, 0o644); err != nil {
		return err
	}
	cmd := exec.Command("go", "test", "-modfile="+filepath.Join(tmp, "go.mod"), "-run", "^$",
		"-bench", "^Benchmark"+bench+"$", "-benchtime", "1x", ".")
	cmd.Env = append(os.Environ(), "YAEGI_SLOTS="+fn)
	all, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, all)
	}
	// The benchmark compiles the plugin more than once: print each function once.
	seen := map[string]bool{}
	printing := false
	sc := bufio.NewScanner(bytes.NewReader(all))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "SLOTS ") {
			key := line[strings.LastIndex(line, "/")+1:]
			printing = !seen[key]
			seen[key] = true
			line = "SLOTS " + key
		} else if !strings.HasPrefix(line, "  slot ") {
			printing = false
		}
		if printing {
			fmt.Println(line)
		}
	}
	if len(seen) == 0 {
		return fmt.Errorf("no function matched %q in Benchmark%s", fn, bench)
	}
	return nil
}

// copyTree copies the module's Go sources (not its tests), writable.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == "testdata" || d.Name() == "_test" || d.Name() == ".github" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}
