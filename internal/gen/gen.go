// Package gen renders the plugin's generated request paths
// (plugin/paths_gen.go) from one template (template/paths.go) and the step
// functions the plugin defines once (gcraStep, cookieLookup, enter, leave,
// passThrough, record), and the benchmark's reference plugin's status wrapper
// (e2e/cmd/bench/floor/status_gen.go) from the plugin's. It is not part of the
// plugin: Traefik never loads it.
//
// Inlining is textual and checked: a step's parameters are renamed to the
// arguments, its named results to the variables the call assigns, and a call
// of a func parameter is replaced by the body of the func literal passed for
// it. The literal's parameters are replaced by the call's arguments when that
// means the same as the call (see substitutable: an argument that is not a
// plain name is read at most once, in the literal's first statement, outside
// loops, and the literal declares and writes no name the arguments read);
// otherwise they are bound to them in one assignment before the literal's code
// (see bound). A step has at most one return, a bare one at its end, or is a
// single return of an expression. Locals a step declares at its top level must
// not clash with the template's names, and no argument may name a local the
// step declares inside. A step must not write its parameters, nor use a
// parameter as a composite literal's key, nor name a package-level identifier
// the template declares as a local; an argument must not call anything (it
// would run at every use); a result must not be assigned to a variable an
// argument reads (see checkAlias); a func parameter must not be called inside
// a func literal of the step, and one whose literal returns only at the step's
// end. Generate fails rather than render code that means something else.
package gen

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Path is one generated request path: the features it serves.
type Path struct {
	Name                                 string
	Limit, Pick, Breaker, Stats, Rollout bool
	// Shared: the limit is shared through Redis (rateLimit.redis), and the
	// template's INLINE.limitStep is leaseStep, not gcraStep.
	Shared bool
}

// Key is the path's key in the plugin's generatedPaths: its features' initials.
func (p Path) Key() string {
	k := ""
	for _, f := range []struct {
		on bool
		c  string
	}{{p.Limit, "L"}, {p.Pick, "P"}, {p.Breaker, "B"}, {p.Stats, "S"}, {p.Rollout, "R"}, {p.Shared, "D"}} {
		if f.on {
			k += f.c
		}
	}
	return k
}

func (p Path) flags() map[string]bool {
	return map[string]bool{"limit": p.Limit, "pick": p.Pick, "breaker": p.Breaker, "stats": p.Stats, "observe": p.Breaker || p.Stats, "rollout": p.Rollout, "shared": p.Shared}
}

// limitStep is the step the template's INLINE.limitStep names on this path:
// a token of the lease with the limit shared through Redis, else the local
// GCRA step. The two have one signature.
func (p Path) limitStep() string {
	if p.Shared {
		return "leaseStep"
	}
	return "gcraStep"
}

// Paths are the generated paths: every combination the plugin serves with
// inlined steps. Observed paths (breaker or stats) with and without the
// limiter and the cookie pick, and the unobserved ones that have a step;
// the paths with the cookie pick and stats, also with a rollout.
func Paths() []Path {
	var ps []Path
	for _, limit := range []bool{false, true} {
		for _, pick := range []bool{false, true} {
			for _, obs := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				p := Path{Limit: limit, Pick: pick, Breaker: obs[0], Stats: obs[1]}
				if !limit && !obs[0] && !obs[1] && !pick {
					continue // one version, nothing on: no step to inline
				}
				p.Name = "path" + p.Key()
				variants := []Path{p}
				if pick && obs[1] {
					// A rollout: the picked version may be its version below the
					// cut. Only with stats, which its checks read.
					r := p
					r.Rollout = true
					r.Name = "path" + r.Key()
					variants = append(variants, r)
				}
				for _, v := range variants {
					ps = append(ps, v)
					if limit {
						// The limit shared through Redis: its lease's step.
						v.Shared = true
						v.Name = "path" + v.Key()
						ps = append(ps, v)
					}
				}
			}
		}
	}
	return ps
}

// Generate renders the files, keyed by their path relative to root.
func Generate(root string) (map[string][]byte, error) {
	steps, stepSrc, err := loadFuncs(filepath.Join(root, "plugin"))
	if err != nil {
		return nil, err
	}
	tmplPath := filepath.Join(root, "internal", "gen", "template", "paths.go")
	tmpl, err := os.ReadFile(tmplPath)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString(header("internal/gen/template/paths.go and the steps in plugin/"))
	out.WriteString("package plugin\n\nimport (\n\t\"net/http\"\n\t\"sync/atomic\"\n\t\"time\"\n)\n\n")
	out.WriteString("// generatedPaths are the request paths rendered by internal/gen, by their\n// features' initials: L limiter, P cookie pick, B breaker, S stats,\n// R rollout, D the limit shared through Redis (see serve.go).\n")
	out.WriteString("var generatedPaths = map[string]func(c *canary) http.HandlerFunc{\n")
	for _, p := range Paths() {
		fmt.Fprintf(&out, "\t%q: %s,\n", p.Key(), p.Name)
	}
	out.WriteString("}\n")
	for _, p := range Paths() {
		fn, err := render(tmpl, p, steps, stepSrc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		out.WriteString("\n" + fn)
	}
	once, err := renderOnce(tmpl, steps, stepSrc)
	if err != nil {
		return nil, err
	}
	out.WriteString(once)
	paths, err := pruneImports(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("paths_gen.go does not parse: %w\n%s", err, out.Bytes())
	}
	floor, err := floorWrapper(filepath.Join(root, "plugin", "observe.go"))
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		filepath.Join("plugin", "paths_gen.go"):                        paths,
		filepath.Join("e2e", "cmd", "bench", "floor", "status_gen.go"): floor,
	}, nil
}

// pruneImports formats src, a file whose import block lists every package
// its code may use, without the imports its code does not select from.
func pruneImports(src []byte) ([]byte, error) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	ast.Inspect(file, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	for _, d := range file.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.IMPORT {
			continue
		}
		var kept []ast.Spec
		for _, sp := range gd.Specs {
			path := strings.Trim(sp.(*ast.ImportSpec).Path.Value, `"`)
			if used[path[strings.LastIndex(path, "/")+1:]] {
				kept = append(kept, sp)
			}
		}
		gd.Specs = kept
	}
	var out bytes.Buffer
	if err := format.Node(&out, fset, file); err != nil {
		return nil, err
	}
	return format.Source(out.Bytes())
}

func header(from string) string {
	return "// Code generated by internal/gen from " + from + "; DO NOT EDIT.\n// Run `make generate` after changing them.\n\n"
}

// loadFuncs parses the plugin's non-test, non-generated files and returns its
// functions by name, with the source text of each.
func loadFuncs(dir string) (map[string]*ast.FuncDecl, map[string]string, error) {
	fset := token.NewFileSet()
	funcs, srcs := map[string]*ast.FuncDecl{}, map[string]string{}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, "_gen.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range file.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				funcs[fd.Name.Name] = fd
				srcs[fd.Name.Name] = string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset])
			}
		}
	}
	return funcs, srcs, nil
}

type renderer struct {
	flags   map[string]bool
	steps   map[string]*ast.FuncDecl
	stepSrc map[string]string
	names   map[string]bool // identifiers the template uses, and top-level locals inlined so far
	locals  map[string]bool // names the template declares, and top-level locals inlined so far: a step's free identifier must be none of them
	fset    *token.FileSet
	err     error
}

// renderOnce renders the template's other functions, once each, with their
// INLINE calls inlined and their doc comments.
func renderOnce(tmpl []byte, steps map[string]*ast.FuncDecl, stepSrc map[string]string) (string, error) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "paths.go", tmpl, parser.ParseComments)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, d := range file.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name == "pathTemplate" {
			continue
		}
		r := &renderer{flags: map[string]bool{}, steps: steps, stepSrc: stepSrc, names: map[string]bool{}, locals: map[string]bool{}, fset: fset}
		for _, id := range variables(fd) {
			r.names[id] = true
		}
		for _, id := range allDeclared(fd) {
			r.locals[id] = true
		}
		r.walk(fd.Body)
		if r.err != nil {
			return "", fmt.Errorf("%s: %w", fd.Name.Name, r.err)
		}
		out.WriteString("\n")
		if fd.Doc != nil {
			for _, l := range strings.Split(strings.TrimRight(fd.Doc.Text(), "\n"), "\n") {
				out.WriteString(strings.TrimRight("// "+l, " ") + "\n")
			}
		}
		var b bytes.Buffer
		if err := printer.Fprint(&b, fset, &ast.FuncDecl{Name: fd.Name, Type: fd.Type, Body: fd.Body}); err != nil {
			return "", err
		}
		out.WriteString(dropBlankLines(b.String()) + "\n")
	}
	return out.String(), nil
}

func render(tmpl []byte, p Path, steps map[string]*ast.FuncDecl, stepSrc map[string]string) (string, error) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "paths.go", tmpl, 0)
	if err != nil {
		return "", err
	}
	var fn *ast.FuncDecl
	for _, d := range file.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "pathTemplate" {
			fn = fd
		}
	}
	if fn == nil {
		return "", fmt.Errorf("the template has no func pathTemplate")
	}
	pathSrc := map[string]string{}
	for k, v := range stepSrc {
		pathSrc[k] = v
	}
	if src, ok := stepSrc[p.limitStep()]; ok {
		pathSrc["limitStep"] = src
	}
	r := &renderer{flags: p.flags(), steps: steps, stepSrc: pathSrc, names: map[string]bool{}, locals: map[string]bool{}, fset: fset}
	for _, id := range variables(fn) {
		r.names[id] = true
	}
	for _, id := range allDeclared(fn) {
		r.locals[id] = true
	}
	fn.Name.Name = p.Name
	r.walk(fn.Body)
	if r.err != nil {
		return "", r.err
	}
	var b bytes.Buffer
	var feats []string
	for _, f := range []struct {
		on   bool
		name string
	}{{p.Limit && !p.Shared, "the limiter"}, {p.Shared, "the limiter shared through Redis"}, {p.Pick, "the cookie pick"}, {p.Breaker, "the breaker"}, {p.Stats, "reporting"}, {p.Rollout, "a rollout"}} {
		if f.on {
			feats = append(feats, f.name)
		}
	}
	fmt.Fprintf(&b, "// %s is the request path with %s.\n", p.Name, strings.Join(feats, ", "))
	if err := printer.Fprint(&b, fset, fn); err != nil {
		return "", err
	}
	s := dropBlankLines(b.String())
	if strings.Contains(s, "INLINE.") || strings.Contains(s, "HAS.") {
		return "", fmt.Errorf("a HAS or INLINE the generator could not resolve is left:\n%s", s)
	}
	return s + "\n", nil
}

// dropBlankLines drops the blank lines that removed branches leave.
func dropBlankLines(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// walk rewrites every statement list under n, outermost first, so that
// statements spliced in are walked too.
func (r *renderer) walk(n ast.Node) {
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BlockStmt:
			n.List = r.stmts(n.List)
		case *ast.CaseClause:
			n.Body = r.stmts(n.Body)
		case *ast.IfStmt:
			n.Cond = r.expr(n.Cond)
		case *ast.AssignStmt:
			for i, e := range n.Rhs {
				if _, _, ok := r.inlineCall(e); !ok {
					n.Rhs[i] = r.expr(e)
				}
			}
		}
		return true
	})
}

// stmts decides HAS conditions and inlines INLINE statements of one list.
func (r *renderer) stmts(list []ast.Stmt) []ast.Stmt {
	var out []ast.Stmt
	for _, s := range list {
		out = append(out, r.stmt(s)...)
	}
	return out
}

func (r *renderer) stmt(s ast.Stmt) []ast.Stmt {
	switch s := s.(type) {
	case *ast.IfStmt:
		if kept, pure := r.hasBranch(s); pure {
			if s.Init != nil {
				r.fail("an if on HAS has an init statement")
			}
			switch e := kept.(type) {
			case *ast.BlockStmt:
				return r.stmts(e.List)
			case *ast.IfStmt:
				return r.stmt(e)
			}
			return nil
		}
	case *ast.ExprStmt:
		if name, args, ok := r.inlineCall(s.X); ok {
			return r.stmts(r.inline(name, args, nil, token.ASSIGN))
		}
	case *ast.AssignStmt:
		if len(s.Rhs) == 1 {
			if name, args, ok := r.inlineCall(s.Rhs[0]); ok {
				return r.stmts(r.inline(name, args, s.Lhs, s.Tok))
			}
		}
	}
	return []ast.Stmt{s}
}

// hasBranch is, for an if on HAS alone (pure), the branch that stays: its
// body, its else (a block or an if), or nil.
func (r *renderer) hasBranch(s *ast.IfStmt) (kept ast.Stmt, pure bool) {
	v, pure := r.cond(s.Cond)
	switch {
	case !pure:
		return nil, false
	case v:
		return s.Body, true
	}
	return s.Else, true
}

// cond evaluates an expression made only of HAS.x, !, && and ||.
func (r *renderer) cond(e ast.Expr) (value, pure bool) {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return r.cond(e.X)
	case *ast.UnaryExpr:
		if e.Op == token.NOT {
			v, p := r.cond(e.X)
			return !v, p
		}
	case *ast.BinaryExpr:
		a, pa := r.cond(e.X)
		b, pb := r.cond(e.Y)
		if pa != pb {
			r.fail("a condition mixes HAS with run-time values: " + r.text(e))
		}
		switch e.Op {
		case token.LAND:
			return a && b, pa && pb
		case token.LOR:
			return a || b, pa && pb
		}
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && x.Name == "HAS" {
			v, known := r.flags[e.Sel.Name]
			if !known {
				r.fail("unknown feature HAS." + e.Sel.Name)
			}
			return v, true
		}
	}
	return false, false
}

// inlineCall recognises INLINE.f(args).
func (r *renderer) inlineCall(e ast.Expr) (string, []ast.Expr, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return "", nil, false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return "", nil, false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "INLINE" {
		return "", nil, false
	}
	return sel.Sel.Name, call.Args, true
}

// expr replaces INLINE calls of single-expression steps inside e.
func (r *renderer) expr(e ast.Expr) ast.Expr {
	switch x := e.(type) {
	case *ast.ParenExpr:
		x.X = r.expr(x.X)
	case *ast.UnaryExpr:
		x.X = r.expr(x.X)
	case *ast.BinaryExpr:
		x.X, x.Y = r.expr(x.X), r.expr(x.Y)
	case *ast.CallExpr:
		if name, args, ok := r.inlineCall(x); ok {
			fd, body := r.step(name)
			if fd == nil {
				return e
			}
			if len(body.List) != 1 {
				r.fail(name + " is used as an expression but is not one return")
				return e
			}
			ret, ok := body.List[0].(*ast.ReturnStmt)
			if !ok || len(ret.Results) != 1 {
				r.fail(name + " is used as an expression but is not one return")
				return e
			}
			b := r.bindParams(name, fd, args, nil)
			r.checkStep(name, fd, body, b)
			r.rename(body, b)
			return &ast.ParenExpr{X: ret.Results[0]}
		}
	}
	return e
}

// step parses a fresh copy of the step function name.
func (r *renderer) step(name string) (*ast.FuncDecl, *ast.BlockStmt) {
	src, ok := r.stepSrc[name]
	if !ok {
		r.fail("INLINE." + name + ": the plugin has no such function")
		return nil, nil
	}
	file, err := parser.ParseFile(r.fset, name+".go", "package p\n\n"+src, 0)
	if err != nil {
		r.fail(err.Error())
		return nil, nil
	}
	fd := file.Decls[0].(*ast.FuncDecl)
	return fd, fd.Body
}

type binding struct {
	text  map[string]string       // parameter or result -> its replacement text
	holes map[string]*ast.FuncLit // func parameter -> the literal passed
}

func (r *renderer) bindParams(name string, fd *ast.FuncDecl, args []ast.Expr, b *binding) *binding {
	if b == nil {
		b = &binding{text: map[string]string{}, holes: map[string]*ast.FuncLit{}}
	}
	var params []*ast.Ident
	for _, f := range fd.Type.Params.List {
		params = append(params, f.Names...)
	}
	if len(params) != len(args) {
		r.fail(fmt.Sprintf("INLINE.%s: %d arguments for %d parameters", name, len(args), len(params)))
		return b
	}
	for i, p := range params {
		if lit, ok := args[i].(*ast.FuncLit); ok {
			b.holes[p.Name] = lit
			continue
		}
		t := r.text(args[i])
		if hasCall(args[i]) {
			r.fail(fmt.Sprintf("INLINE.%s: the argument %s for %s has a call, which would run at every use of %s, not once: assign it to a variable first", name, t, p.Name, p.Name))
		}
		switch args[i].(type) {
		case *ast.Ident, *ast.SelectorExpr, *ast.BasicLit, *ast.IndexExpr, *ast.CallExpr, *ast.ParenExpr:
		default:
			t = "(" + t + ")"
		}
		b.text[p.Name] = t
	}
	return b
}

// mentions reports whether body uses the identifier name.
func mentions(body *ast.BlockStmt, name string) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Name == name {
			found = true
		}
		return !found
	})
	return found
}

// inline renders INLINE.name(args), its results assigned to lhs with tok.
func (r *renderer) inline(name string, args, lhs []ast.Expr, tok token.Token) []ast.Stmt {
	fd, body := r.step(name)
	if fd == nil {
		return nil
	}
	b := r.bindParams(name, fd, args, nil)
	r.checkStep(name, fd, body, b)
	var results []*ast.Field
	var nres int
	if fd.Type.Results != nil {
		results = fd.Type.Results.List
		for _, f := range results {
			if len(f.Names) == 0 {
				r.fail(name + ": results must be named to be inlined")
				return nil
			}
			nres += len(f.Names)
		}
	}
	if nres != len(lhs) {
		r.fail(fmt.Sprintf("INLINE.%s: %d results assigned to %d variables", name, nres, len(lhs)))
		return nil
	}
	var out []ast.Stmt
	i := 0
	for _, f := range results {
		for _, n := range f.Names {
			target := r.text(lhs[i])
			i++
			declare := tok == token.DEFINE
			if target == "_" {
				if !mentions(body, n.Name) {
					continue // discarded, and never set: nothing to declare
				}
				target, declare = n.Name, true // a local of its own
				r.claim(name, n.Name)
			}
			b.text[n.Name] = target
			if !declare {
				r.checkAlias(name, fd, body, args, n.Name, lhs[i-1])
			}
			if declare {
				out = append(out, &ast.DeclStmt{Decl: &ast.GenDecl{Tok: token.VAR, Specs: []ast.Spec{
					&ast.ValueSpec{Names: []*ast.Ident{ast.NewIdent(target)}, Type: f.Type},
				}}})
			}
		}
	}
	list := body.List
	if n := len(list); n > 0 {
		if ret, ok := list[n-1].(*ast.ReturnStmt); ok && len(ret.Results) == 0 {
			list = list[:n-1]
		}
	}
	for _, s := range list {
		ast.Inspect(s, func(n ast.Node) bool {
			if _, ok := n.(*ast.ReturnStmt); ok {
				r.fail(name + ": only a final bare return can be inlined")
			}
			_, lit := n.(*ast.FuncLit)
			return !lit
		})
	}
	// Locals: top-level ones join the template's scope; nested ones must not
	// hide a name an argument uses.
	argNames := map[string]bool{}
	for _, a := range args {
		own := map[string]bool{} // a literal's parameters become the step's values
		if lit, ok := a.(*ast.FuncLit); ok {
			for _, f := range lit.Type.Params.List {
				for _, id := range f.Names {
					own[id.Name] = true
				}
			}
		}
		for _, id := range variables(a) {
			if !own[id] {
				argNames[id] = true
			}
		}
	}
	for _, s := range list {
		for _, l := range declared(s, false) {
			r.claim(name, l)
		}
		for _, l := range declared(s, true) {
			if argNames[l] && b.text[l] == "" {
				r.fail(fmt.Sprintf("INLINE.%s: its local %s hides the argument's %s", name, l, l))
			}
		}
	}
	r.checkHoles(name, list, b, true)
	r.rename(&ast.BlockStmt{List: list}, b)
	return append(out, r.fill(list, b)...)
}

// variables lists the identifiers under n that are not field names. An
// identifier that an earlier inlining renamed to an argument's text (m[j])
// counts as the names that text reads.
func variables(n ast.Node) []string {
	var names []string
	eachVariable(n, func(id *ast.Ident) {
		if token.IsIdentifier(id.Name) {
			names = append(names, id.Name)
			return
		}
		if e, err := parser.ParseExpr(id.Name); err == nil {
			names = append(names, variables(e)...)
		}
	})
	return names
}

// eachVariable calls f for every identifier under n that is not a field
// name: not the selected name of x.f, nor the key of a composite literal's
// key: value.
func eachVariable(n ast.Node, f func(id *ast.Ident)) {
	skip := map[*ast.Ident]bool{}
	ast.Inspect(n, func(n ast.Node) bool {
		markFieldNames(n, skip)
		if id, ok := n.(*ast.Ident); ok && !skip[id] {
			f(id)
		}
		return true
	})
}

// markFieldNames records in skip the identifiers n names as fields, not
// variables: a selector's field, a composite literal's keys.
func markFieldNames(n ast.Node, skip map[*ast.Ident]bool) {
	switch n := n.(type) {
	case *ast.SelectorExpr:
		skip[n.Sel] = true
	case *ast.KeyValueExpr:
		if id, ok := n.Key.(*ast.Ident); ok {
			skip[id] = true
		}
	}
}

// claim records a top-level local of an inlined step, which must be new.
func (r *renderer) claim(step, local string) {
	if r.names[local] {
		r.fail(fmt.Sprintf("INLINE.%s: its local %s clashes with a name of the template or another step", step, local))
	}
	r.names[local] = true
	r.locals[local] = true
}

// declared lists the names a statement declares: at its own level
// (nested false), or in its nested blocks (nested true).
func declared(s ast.Stmt, nested bool) []string {
	var names []string
	ast.Inspect(s, func(n ast.Node) bool {
		if n == nil {
			return false
		}
		inner := n != ast.Node(s)
		if _, ok := n.(*ast.BlockStmt); ok && !nested {
			return false
		}
		if inner == nested || !nested {
			switch n := n.(type) {
			case *ast.AssignStmt:
				if n.Tok == token.DEFINE {
					for _, l := range n.Lhs {
						if id, ok := l.(*ast.Ident); ok && id.Name != "_" {
							names = append(names, id.Name)
						}
					}
				}
			case *ast.ValueSpec:
				for _, id := range n.Names {
					names = append(names, id.Name)
				}
			case *ast.RangeStmt:
				if n.Tok == token.DEFINE {
					for _, e := range []ast.Expr{n.Key, n.Value} {
						if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
							names = append(names, id.Name)
						}
					}
				}
			case *ast.FuncLit:
				names = append(names, fieldNames(n.Type.Params)...)
				names = append(names, fieldNames(n.Type.Results)...)
			}
		}
		return true
	})
	sort.Strings(names)
	return names
}

func fieldNames(fl *ast.FieldList) []string {
	var names []string
	if fl != nil {
		for _, f := range fl.List {
			for _, id := range f.Names {
				names = append(names, id.Name)
			}
		}
	}
	return names
}

// allDeclared lists every name a function declares: its parameters and
// results, and the locals of every scope in it.
func allDeclared(fd *ast.FuncDecl) []string {
	names := append(fieldNames(fd.Type.Params), fieldNames(fd.Type.Results)...)
	if fd.Body != nil {
		for _, s := range fd.Body.List {
			names = append(names, declared(s, false)...)
			names = append(names, declared(s, true)...)
		}
	}
	return names
}

// hasCall reports whether e calls anything (a conversion counts: the
// generator has no types).
func hasCall(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if _, ok := n.(*ast.CallExpr); ok {
			found = true
		}
		return !found
	})
	return found
}

// checkStep refuses a step whose inlining would change what it means
// (parameters are bound in b, results not yet): a parameter written (a
// call's parameter is a copy, an inlined one is the caller's variable), a
// parameter or result as a composite literal's key (it cannot be told from
// a field name, which is not renamed), and a free identifier of the step (a
// package-level name) that the template or an inlined step declares as a
// local, which would capture it.
func (r *renderer) checkStep(name string, fd *ast.FuncDecl, body *ast.BlockStmt, b *binding) {
	bound := map[string]bool{}
	for p := range b.text {
		bound[p] = true
	}
	own := map[string]bool{}
	for _, id := range allDeclared(fd) {
		own[id] = true
	}
	written := func(e ast.Expr) {
		if id, ok := e.(*ast.Ident); ok && bound[id.Name] {
			r.fail(fmt.Sprintf("INLINE.%s: it writes its parameter %s, which inlined is the caller's %s", name, id.Name, b.text[id.Name]))
		}
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if n.Tok != token.DEFINE {
				for _, l := range n.Lhs {
					written(l)
				}
			}
		case *ast.IncDecStmt:
			written(n.X)
		case *ast.UnaryExpr:
			if n.Op == token.AND {
				written(n.X)
			}
		case *ast.RangeStmt:
			if n.Tok == token.ASSIGN {
				written(n.Key)
				written(n.Value)
			}
		case *ast.KeyValueExpr:
			if id, ok := n.Key.(*ast.Ident); ok && own[id.Name] {
				r.fail(fmt.Sprintf("INLINE.%s: %s is a composite literal's key and a name of the step: a field name is not renamed, a variable must be", name, id.Name))
			}
		}
		return true
	})
	for _, id := range variables(body) {
		if !own[id] && r.locals[id] {
			r.fail(fmt.Sprintf("INLINE.%s: its %s would be the template's local %s", name, id, id))
		}
	}
}

// checkAlias refuses a result assigned to a variable an argument reads:
// inlined, every write to the result changes that argument's parameter,
// which called is a copy.
func (r *renderer) checkAlias(step string, fd *ast.FuncDecl, body *ast.BlockStmt, args []ast.Expr, result string, target ast.Expr) {
	roots := map[string]bool{}
	for _, v := range variables(target) {
		roots[v] = true
	}
	var params []*ast.Ident
	for _, f := range fd.Type.Params.List {
		params = append(params, f.Names...)
	}
	for i, p := range params {
		if i >= len(args) {
			return
		}
		if _, lit := args[i].(*ast.FuncLit); lit {
			continue
		}
		shared := false
		for _, v := range variables(args[i]) {
			shared = shared || roots[v]
		}
		if !shared {
			continue
		}
		r.fail(fmt.Sprintf("INLINE.%s: its result %s is assigned to %s, which the argument for %s reads: inlined, writing %s would change %s", step, result, r.text(target), p.Name, result, p.Name))
	}
}

// checkHoles refuses a call of a func parameter whose literal would not
// mean, inlined, what it means called: inside a func literal of the step
// (the body would run when that literal runs, and its return return from
// it), or, for a literal with a return, anywhere but the step's tail (the
// return leaves the path, where called it would go on with the step).
func (r *renderer) checkHoles(step string, list []ast.Stmt, b *binding, tail bool) {
	for i, s := range list {
		last := tail && i == len(list)-1
		switch s := s.(type) {
		case *ast.ExprStmt:
			if lit := r.holeCall(s, b); lit != nil {
				if !last && returns(lit.Body) {
					r.fail(fmt.Sprintf("INLINE.%s: a func parameter whose literal returns is called before the step's end: the return would skip the rest of the step", step))
				}
				continue
			}
		case *ast.IfStmt:
			r.noHoleIn(step, s.Init, b, false)
			r.noHoleIn(step, s.Cond, b, false)
			r.checkHoles(step, s.Body.List, b, last)
			switch e := s.Else.(type) {
			case *ast.BlockStmt:
				r.checkHoles(step, e.List, b, last)
			case *ast.IfStmt:
				r.checkHoles(step, []ast.Stmt{e}, b, last)
			}
			continue
		case *ast.BlockStmt:
			r.checkHoles(step, s.List, b, last)
			continue
		}
		r.noHoleIn(step, s, b, true)
	}
}

// noHoleIn refuses, under n, a call of a func parameter inside a func
// literal, and (when returning is set) one whose literal returns.
func (r *renderer) noHoleIn(step string, n ast.Node, b *binding, returning bool) {
	if n == nil {
		return
	}
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			ast.Inspect(n.Body, func(m ast.Node) bool {
				if es, ok := m.(*ast.ExprStmt); ok && r.holeCall(es, b) != nil {
					r.fail(fmt.Sprintf("INLINE.%s: a func parameter is called inside a func literal of the step", step))
				}
				return true
			})
			return false
		case *ast.ExprStmt:
			if lit := r.holeCall(n, b); lit != nil && returning && returns(lit.Body) {
				r.fail(fmt.Sprintf("INLINE.%s: a func parameter whose literal returns is called in a loop or a switch of the step: the return would leave the path", step))
			}
		}
		return true
	})
}

// holeCall returns the literal passed for the func parameter s calls, or nil.
func (r *renderer) holeCall(s *ast.ExprStmt, b *binding) *ast.FuncLit {
	if call, ok := s.X.(*ast.CallExpr); ok {
		if id, ok := call.Fun.(*ast.Ident); ok {
			return b.holes[id.Name]
		}
	}
	return nil
}

// substitutable reports whether calling lit with args means the same as
// lit's body with each parameter replaced by its argument's text. It does
// when, once lit's HAS are decided, each argument that is not a plain name or
// a literal is read at most once, in lit's first statement and outside any
// loop or func literal of it (the call evaluated it once, before lit ran),
// and lit declares and writes none of the names the arguments read.
func (r *renderer) substitutable(lit *ast.FuncLit, ps []*ast.Ident, args []ast.Expr) bool {
	argNames := map[string]bool{}
	for _, a := range args {
		for _, name := range variables(a) {
			argNames[name] = true
		}
	}
	clash := false
	r.liveInspect(lit.Body, func(n ast.Node) bool {
		for _, id := range boundOrWritten(n) {
			if argNames[id.Name] {
				clash = true
			}
		}
		return true
	})
	if clash {
		return false
	}
	first := r.firstLive(lit.Body.List)
	for i, p := range ps {
		switch args[i].(type) {
		case *ast.Ident, *ast.BasicLit:
			continue
		}
		n := r.liveUses(lit.Body, p.Name, false)
		if n == 0 {
			continue
		}
		if n > 1 || first == nil || r.liveUses(first, p.Name, true) != 1 {
			return false
		}
	}
	return true
}

// bound renders lit called with args: one assignment binds every parameter
// it reads to its argument, evaluated before lit's code, as the call
// evaluated them, then lit's code. Unless the call is the last statement of
// its block (last), they are a block of their own, so that the parameters'
// names end with lit (a block costs an allocation per request under Yaegi).
func (r *renderer) bound(lit *ast.FuncLit, ps []*ast.Ident, args []ast.Expr, last bool) []ast.Stmt {
	var lhs, rhs []ast.Expr
	for i, p := range ps {
		if p.Name != "_" && r.liveUses(lit.Body, p.Name, false) > 0 {
			lhs = append(lhs, ast.NewIdent(p.Name))
			rhs = append(rhs, typed(lit, p.Name, args[i]))
		}
	}
	list := lit.Body.List
	if len(lhs) > 0 {
		list = append([]ast.Stmt{&ast.AssignStmt{Lhs: lhs, Tok: token.DEFINE, Rhs: rhs}}, list...)
	}
	if last {
		return list
	}
	return []ast.Stmt{&ast.BlockStmt{List: list}}
}

// typed is arg as lit's parameter name receives it: a constant converted
// to the parameter's type, not left to its default type. (Other arguments
// keep their own type: an argument of another type than its parameter, an
// interface, is not rendered faithfully.)
func typed(lit *ast.FuncLit, name string, arg ast.Expr) ast.Expr {
	if _, constant := arg.(*ast.BasicLit); !constant {
		return arg
	}
	for _, f := range lit.Type.Params.List {
		for _, id := range f.Names {
			if id.Name == name {
				return &ast.CallExpr{Fun: f.Type, Args: []ast.Expr{arg}}
			}
		}
	}
	return arg
}

// liveInspect is ast.Inspect over what stays of n once its HAS are decided:
// of an if on HAS alone, only the branch that stays is visited.
func (r *renderer) liveInspect(n ast.Node, f func(ast.Node) bool) {
	ast.Inspect(n, func(m ast.Node) bool {
		if s, ok := m.(*ast.IfStmt); ok {
			if kept, pure := r.hasBranch(s); pure {
				if kept != nil {
					r.liveInspect(kept, f)
				}
				return false
			}
		}
		return f(m)
	})
}

// liveUses counts the reads of the variable name in what stays of n; with
// once, a read inside a loop or a func literal counts twice (it may run more
// than once).
func (r *renderer) liveUses(n ast.Node, name string, once bool) int {
	k := 0
	var walk func(n ast.Node, repeated bool)
	walk = func(n ast.Node, repeated bool) {
		skip := map[*ast.Ident]bool{}
		r.liveInspect(n, func(m ast.Node) bool {
			markFieldNames(m, skip)
			switch m := m.(type) {
			case *ast.ForStmt, *ast.RangeStmt, *ast.FuncLit:
				if once && !repeated {
					walk(m, true)
					return false
				}
			case *ast.Ident:
				if !skip[m] && m.Name == name {
					k++
					if repeated {
						k++
					}
				}
			}
			return true
		})
	}
	walk(n, false)
	return k
}

// firstLive is the first statement of list that stays once its HAS are
// decided, or nil.
func (r *renderer) firstLive(list []ast.Stmt) ast.Stmt {
	for _, s := range list {
		if is, ok := s.(*ast.IfStmt); ok {
			if kept, pure := r.hasBranch(is); pure {
				var branch []ast.Stmt
				switch k := kept.(type) {
				case *ast.BlockStmt:
					branch = k.List
				case *ast.IfStmt:
					branch = []ast.Stmt{k}
				}
				if f := r.firstLive(branch); f != nil {
					return f
				}
				continue
			}
		}
		return s
	}
	return nil
}

// base is the variable an assignment to e writes: m of m[k] = v, p of
// p.f = v and *p = v.
func base(e ast.Expr) ast.Expr {
	for {
		switch x := e.(type) {
		case *ast.IndexExpr:
			e = x.X
		case *ast.SelectorExpr:
			e = x.X
		case *ast.StarExpr:
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		default:
			return e
		}
	}
}

// boundOrWritten lists the names n declares or assigns: the left of an
// assignment or ++/--, a var's names, a range's key and value, a func
// literal's parameters.
func boundOrWritten(n ast.Node) []*ast.Ident {
	var ids []*ast.Ident
	add := func(es ...ast.Expr) {
		for _, e := range es {
			if id, ok := base(e).(*ast.Ident); ok {
				ids = append(ids, id)
			}
		}
	}
	switch n := n.(type) {
	case *ast.AssignStmt:
		add(n.Lhs...)
	case *ast.IncDecStmt:
		add(n.X)
	case *ast.ValueSpec:
		ids = append(ids, n.Names...)
	case *ast.RangeStmt:
		add(n.Key, n.Value)
	case *ast.FuncLit:
		for _, f := range n.Type.Params.List {
			ids = append(ids, f.Names...)
		}
	}
	return ids
}

// returns reports whether a literal's body has a return of its own.
func returns(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		switch n.(type) {
		case *ast.ReturnStmt:
			found = true
		case *ast.FuncLit:
			return false
		}
		return !found
	})
	return found
}

// rename renames the identifiers of n bound in b, leaving field names alone.
func (r *renderer) rename(n ast.Node, b *binding) {
	eachVariable(n, func(id *ast.Ident) {
		if t, ok := b.text[id.Name]; ok {
			id.Name = t
		}
	})
}

// fill replaces each call of a func parameter by the literal's body.
func (r *renderer) fill(list []ast.Stmt, b *binding) []ast.Stmt {
	used := map[string]bool{}
	var fillList func(list []ast.Stmt) []ast.Stmt
	fillList = func(list []ast.Stmt) []ast.Stmt {
		var out []ast.Stmt
		for i, s := range list {
			last := i == len(list)-1
			if es, ok := s.(*ast.ExprStmt); ok {
				if call, ok := es.X.(*ast.CallExpr); ok {
					if id, ok := call.Fun.(*ast.Ident); ok {
						if lit := b.holes[id.Name]; lit != nil {
							if used[id.Name] {
								r.fail("a func parameter is called twice: " + id.Name)
							}
							used[id.Name] = true
							hb := &binding{text: map[string]string{}}
							var ps []*ast.Ident
							for _, f := range lit.Type.Params.List {
								ps = append(ps, f.Names...)
							}
							if r.substitutable(lit, ps, call.Args) {
								for i, p := range ps {
									hb.text[p.Name] = r.text(typed(lit, p.Name, call.Args[i]))
								}
								r.rename(lit.Body, hb)
								out = append(out, lit.Body.List...)
							} else {
								out = append(out, r.bound(lit, ps, call.Args, last)...)
							}
							continue
						}
					}
				}
			}
			ast.Inspect(s, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BlockStmt:
					n.List = fillList(n.List)
					return false
				case *ast.IfStmt:
					n.Body.List = fillList(n.Body.List)
					if e, ok := n.Else.(*ast.BlockStmt); ok {
						e.List = fillList(e.List)
					} else if e != nil {
						r.fail("else if in a step: not supported")
					}
					return false
				}
				return true
			})
			out = append(out, s)
		}
		return out
	}
	return fillList(list)
}

func (r *renderer) text(e ast.Node) string {
	var b bytes.Buffer
	_ = printer.Fprint(&b, r.fset, e)
	return b.String()
}

func (r *renderer) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s", msg)
	}
}

// wrapperMethod reports whether fd is one of the methods floorWrapper keeps:
// WriteHeader and Write.
func wrapperMethod(fd *ast.FuncDecl) bool {
	return fd.Recv != nil && (fd.Name.Name == "WriteHeader" || fd.Name.Name == "Write")
}

// usedFields returns the fields that the methods floorWrapper keeps select
// on their receiver.
func usedFields(file *ast.File) map[string]bool {
	used := map[string]bool{}
	for _, d := range file.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || !wrapperMethod(fd) || len(fd.Recv.List[0].Names) == 0 {
			continue
		}
		recv := fd.Recv.List[0].Names[0].Name
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == recv {
					used[sel.Sel.Name] = true
				}
			}
			return true
		})
	}
	return used
}

// floorWrapper renders the reference plugin's status wrapper from the
// plugin's: statusWriter with only the fields its methods use, its
// WriteHeader, and flushWriter.
func floorWrapper(observe string) ([]byte, error) {
	fset := token.NewFileSet()
	src, err := os.ReadFile(observe)
	if err != nil {
		return nil, err
	}
	file, err := parser.ParseFile(fset, observe, src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	keep := usedFields(file)
	var out bytes.Buffer
	out.WriteString(header("plugin/observe.go (the plugin's status wrapper)"))
	out.WriteString("package benchfloor\n\nimport (\n\t\"net/http\"\n\t\"time\"\n)\n")
	found := 0
	for _, d := range file.Decls {
		switch d := d.(type) {
		case *ast.GenDecl:
			ts, ok := d.Specs[0].(*ast.TypeSpec)
			if !ok || ts.Name.Name != "statusWriter" && ts.Name.Name != "flushWriter" {
				continue
			}
			st := ts.Type.(*ast.StructType)
			var fields []*ast.Field
			for _, f := range st.Fields.List {
				if len(f.Names) == 0 || keep[f.Names[0].Name] {
					f.Doc = nil
					fields = append(fields, f)
				}
			}
			st.Fields.List = fields
			found++
			fmt.Fprintf(&out, "\n// %s is the plugin's, with the fields its methods use.\n", ts.Name.Name)
			d.Doc = nil
			if err := printer.Fprint(&out, fset, &ast.GenDecl{Tok: token.TYPE, Specs: d.Specs}); err != nil {
				return nil, err
			}
			out.WriteString("\n")
		case *ast.FuncDecl:
			if !wrapperMethod(d) {
				continue
			}
			found++
			d.Doc = nil
			out.WriteString("\n")
			if err := printer.Fprint(&out, fset, &ast.FuncDecl{Recv: d.Recv, Name: d.Name, Type: d.Type, Body: d.Body}); err != nil {
				return nil, err
			}
			out.WriteString("\n")
		}
	}
	if found != 4 {
		return nil, fmt.Errorf("%s: want statusWriter, flushWriter and their two methods, found %d", observe, found)
	}
	// Comments inside bodies are dropped by the re-print without the comment
	// map; format what is left.
	return pruneImports(bytes.ReplaceAll(out.Bytes(), []byte("\n\n}"), []byte("\n}")))
}
