package gen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedFilesAreCurrent: the committed files are what the generator
// renders (make lint checks the same).
func TestGeneratedFilesAreCurrent(t *testing.T) {
	files, err := Generate(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what internal/gen renders: run make generate", name)
		}
	}
}

// renderWith renders a one-line template body with the given step sources.
func renderWith(t *testing.T, body string, steps ...string) (string, error) {
	t.Helper()
	tmpl := "package plugin\n\nfunc pathTemplate(c *canary) http.HandlerFunc {\n" + body + "\n}\n"
	src := map[string]string{}
	for _, s := range steps {
		name := strings.TrimPrefix(s, "func ")
		name = name[:strings.IndexByte(name, '(')]
		src[name] = s
	}
	return render([]byte(tmpl), Path{Name: "pathX", Breaker: true}, nil, src)
}

func TestInline(t *testing.T) {
	for _, tc := range []struct {
		name, body, step, want, err string
	}{
		{name: "results renamed, parameters bound, field names kept",
			body: "x := INLINE.twice(b.tat)", step: "func twice(tat int64) (out int64) {\n\tout = tat + tat\n\treturn\n}",
			want: "var x int64\n\tx = b.tat + b.tat"},
		{name: "a hole gets the literal's body",
			body: "INLINE.each(k, func(v int) { use(v) })", step: "func each(n int, f func(v int)) {\n\tif n > 0 {\n\t\tf(n)\n\t}\n}",
			want: "if k > 0 {\n\t\tuse(k)\n\t}"},
		{name: "a hole's argument read once is substituted",
			body: "INLINE.each(k, func(v int) { use(v) })", step: "func each(n int, f func(v int)) {\n\tf(m[n])\n}",
			want: "use(m[k])"},
		{name: "a hole's argument read twice is evaluated once",
			body: "INLINE.each(k, func(v int) { use(v, v) })", step: "func each(n int, f func(v int)) {\n\tf(m[n])\n}",
			want: "v := m[k]\n\tuse(v, v)"},
		{name: "then, when the step goes on after the call, in a block of its own",
			body: "INLINE.each(k, func(v int) { use(v, v) })", step: "func each(n int, f func(v int)) {\n\tf(m[n])\n\tuse(n)\n}",
			want: "{\n\t\tv := m[k]\n\t\tuse(v, v)\n\t}\n\tuse(k)"},
		{name: "a read that HAS removes does not count",
			body: "INLINE.each(k, func(v int) {\n\tuse(v)\n\tif HAS.limit {\n\t\tuse(v)\n\t}\n})", step: "func each(n int, f func(v int)) {\n\tf(m[n])\n}",
			want: "use(m[k])"},
		{name: "a constant keeps the parameter's type",
			body: "INLINE.each(k, func(v int64) { use(v, v) })", step: "func each(n int, f func(v int64)) {\n\tf(5)\n\tuse(n)\n}",
			want: "use(int64(5), int64(5))"},
		{name: "an expression step",
			body: "if INLINE.big(n) {\n\tuse(n)\n}", step: "func big(n int) bool {\n\treturn n > 10\n}",
			want: "if n > 10 {"},
		{name: "HAS decides a branch",
			body: "if HAS.breaker && !HAS.limit {\n\tyes()\n} else {\n\tno()\n}", want: "\tyes()"},
		{name: "an early return is refused",
			body: "INLINE.early(n)", step: "func early(n int) {\n\tif n > 0 {\n\t\treturn\n\t}\n\tuse(n)\n}",
			err: "only a final bare return"},
		{name: "a clashing local is refused",
			body: "i := 1\n\tINLINE.loop(n)\n\tuse(i)", step: "func loop(n int) {\n\ti := n\n\tuse(i)\n}",
			err: "clashes"},
		{name: "a local hiding an argument is refused",
			body: "INLINE.hide(j)", step: "func hide(n int) {\n\tif n > 0 {\n\t\tj := 2\n\t\tuse(j, n)\n\t}\n}",
			err: "hides"},
		{name: "a condition mixing HAS and run-time values is refused",
			body: "if HAS.breaker && ok {\n\tyes()\n}", err: "mixes"},
		{name: "an unknown step is refused", body: "INLINE.nothing()", err: "no such function"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var steps []string
			if tc.step != "" {
				steps = append(steps, tc.step)
			}
			got, err := renderWith(t, tc.body, steps...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q; rendered:\n%s", err, tc.err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("rendered:\n%s\nwant it to contain:\n%s", got, tc.want)
			}
		})
	}
}
