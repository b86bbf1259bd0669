package gen

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"strings"
	"testing"
)

// review18 (ce35939): a hole's literal is now walked (its HAS decided, and
// its own INLINE calls inlined) before its parameters are renamed, and an
// argument read more than once is bound with := under the literal's
// parameter name. Each test below renders a small template and resolves, with
// go/types, what one identifier of the rendered code refers to: inlining must
// not change it (or the generator must refuse the template, as it does for a
// clash it detects).

// stubs declares what the rendered test templates use.
const review18Stubs = `package plugin

import "net/http"

type canary struct{}

var (
	m  map[int]int
	xs []int
	j  int
	k  int
)

func use(...int) {}
`

// review18Resolve renders body with steps (or returns the generator's
// error), type-checks it against the stubs and returns, for the argth
// argument of the last call of use with nargs arguments, the source line of
// the declaration of the identifier it reads ("" for a package variable).
func review18Resolve(t *testing.T, body string, nargs, arg int, steps ...string) (rendered, decl string, err error) {
	t.Helper()
	got, err := renderWith(t, body, steps...)
	if err != nil {
		return "", "", err
	}
	src := review18Stubs + "\n" + got
	fset := token.NewFileSet()
	f, perr := parser.ParseFile(fset, "x.go", src, 0)
	if perr != nil {
		t.Fatalf("rendered code does not parse: %v\n%s", perr, got)
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}, Defs: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: importer.Default(), Error: func(error) {}} // "missing return" and the like: only the resolution matters
	_, _ = conf.Check("plugin", fset, []*ast.File{f}, info)
	var last *ast.CallExpr
	ast.Inspect(f, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok {
			if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "use" && len(c.Args) == nargs {
				last = c
			}
		}
		return true
	})
	if last == nil {
		t.Fatalf("no use call with %d arguments in:\n%s", nargs, got)
	}
	var id *ast.Ident
	ast.Inspect(last.Args[arg], func(n ast.Node) bool {
		if x, ok := n.(*ast.Ident); ok && id == nil && x.Name != "m" {
			id = x
		}
		return true
	})
	obj := info.Uses[id]
	if obj == nil {
		t.Fatalf("%s in %s does not resolve:\n%s", id.Name, types.ExprString(last), got)
	}
	if obj.Parent() == obj.Pkg().Scope() {
		return got, "", nil
	}
	lines := strings.Split(src, "\n")
	return got, strings.TrimSpace(lines[fset.Position(obj.Pos()).Line-1]), nil
}

// The binding v := m[k] of a hole's argument is spliced into the step's
// block, where it shadows the step's own local v for the rest of that block:
// the step's use(v) after the hole then reads m[k], not its k*2. Before
// ce35939 the argument was substituted and the step's v was untouched.
func TestReview18HoleBindingShadowsStepLocal(t *testing.T) {
	step := "func each(n int, f func(v int)) {\n\tif n > 0 {\n\t\tv := n * 2\n\t\tif v > 1 {\n\t\t\tf(m[n])\n\t\t\tuse(v)\n\t\t}\n\t}\n}"
	got, decl, err := review18Resolve(t, "INLINE.each(k, func(v int) { use(v, v) })", 1, 0, step)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	if decl != "v := k * 2" {
		t.Fatalf("the step's use(v) after the hole reads the variable declared by %q, want the step's own \"v := k * 2\"; rendered:\n%s", decl, got)
	}
}

// A hole's literal is walked (its INLINE calls inlined) before its
// parameters are renamed, so renaming the literal's v to the argument k also
// renames the local v of the step inlined inside the literal: `v := k * 2;
// use(v, k)` becomes `k := k * 2; use(k, k)`, whose second k is no longer the
// template's k. Before ce35939 the literal was renamed first.
func TestReview18HoleRenameReachesNestedStepLocals(t *testing.T) {
	each := "func each(n int, f func(v int)) {\n\tf(n)\n}"
	inner := "func inner(n int) {\n\tif n > 0 {\n\t\tv := n * 2\n\t\tuse(v, n)\n\t}\n}"
	got, decl, err := review18Resolve(t, "INLINE.each(k, func(v int) {\n\tuse(v)\n\tINLINE.inner(k)\n})", 2, 1, each, inner)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	if decl != "" {
		t.Fatalf("inner's use(v, n) reads, for n, the variable declared by %q, want the template's k (a package variable here); rendered:\n%s", decl, got)
	}
}

// The same ordering lets a nested step's local capture a name of the
// argument: the literal's INLINE.inner(v) is inlined while its argument is
// still the plain v, so inner's range variable j does not count as hiding an
// argument's name; v is then replaced by m[j] inside the loop, where j is the
// range variable. Before ce35939 the generator refused this ("its local j
// hides the argument's j").
func TestReview18HoleArgumentCapturedByNestedStepLocal(t *testing.T) {
	each := "func each(n int, f func(v int)) {\n\tf(m[n])\n}"
	inner := "func inner(n int) {\n\tif len(xs) > 0 {\n\t\tfor _, j := range xs {\n\t\t\tuse(j, n)\n\t\t}\n\t}\n}"
	got, decl, err := review18Resolve(t, "INLINE.each(j, func(v int) {\n\tINLINE.inner(v)\n})", 2, 1, each, inner)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	if decl != "" && decl != "v := m[j]" { // bound at the hole's call: evaluated with the template's j
		t.Fatalf("m[j] (the hole's argument) reads, for j, the variable declared by %q, want the template's j (a package variable here); rendered:\n%s", decl, got)
	}
}

// The same binding, under the literal's own parameter name, captures a
// later parameter whose argument is a plain name spelled the same: with
// f(m[n], n) and the template's literal func(v, w int) over its own v, w is
// renamed to v after v := m[v] is bound, so w reads m[v], not the template's
// v. Before ce35939: use(m[v], m[v], v).
func TestReview18HoleBindingCapturesAnotherParameter(t *testing.T) {
	step := "func each(n int, f func(a, b int)) {\n\tf(m[n], n)\n}"
	got, decl, err := review18Resolve(t, "INLINE.each(k, func(k, w int) { use(k, k, w) })", 3, 2, step)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	// Bound with the others in one assignment, w holds the template's k,
	// evaluated before the literal's k is declared: that is the call's meaning.
	if decl != "" && decl != "k, w := m[k], k" {
		t.Fatalf("w (the hole's second argument, the template's k) reads the variable declared by %q; rendered:\n%s", decl, got)
	}
}

// The commit's rule is that an argument the literal reads more than once is
// evaluated once; it counts reads in the text, so a single read inside a
// loop of the literal is substituted and evaluated at every iteration, after
// the loop's own writes: here m[k] is read after m[x] = 0 has run for every
// x before it, where the call evaluated it once, before the loop.
func TestReview18HoleArgumentReadInLoopIsEvaluatedEachIteration(t *testing.T) {
	step := "func each(n int, f func(v int)) {\n\tf(m[n])\n}"
	got, err := renderWith(t, "INLINE.each(k, func(v int) {\n\tfor _, x := range xs {\n\t\tm[x] = 0\n\t\tuse(v)\n\t}\n})", step)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	f, perr := parser.ParseFile(token.NewFileSet(), "x.go", review18Stubs+"\n"+got, 0)
	if perr != nil {
		t.Fatal(perr)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if r, ok := n.(*ast.RangeStmt); ok {
			ast.Inspect(r.Body, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "use" {
						if _, ix := c.Args[0].(*ast.IndexExpr); ix {
							t.Errorf("the hole's argument %s is evaluated inside the loop, at every iteration; rendered:\n%s", types.ExprString(c.Args[0]), got)
						}
					}
				}
				return true
			})
		}
		return true
	})
}
