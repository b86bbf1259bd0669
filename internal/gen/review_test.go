package gen

import (
	"strings"
	"testing"
)

// Review: the package doc promises that "Generate fails rather than render
// code that means something else". Each case below renders code whose
// meaning differs from calling the step (Go's call semantics, which the
// reference path uses), without an error. Each test fails while the
// generator accepts the template.
func TestReviewInlineMustNotChangeMeaning(t *testing.T) {
	for _, tc := range []struct {
		name, body, step string
		wrong            string // what the rendering must not contain
	}{
		{
			// Parameters are not copies: a step that writes a parameter
			// writes the caller's variable.
			name:  "a step writing its parameter writes the argument",
			body:  "x := int64(1)\n\ty := INLINE.bump(x)\n\tuse(x, y)",
			step:  "func bump(n int64) (out int64) {\n\tn++\n\tout = n\n\treturn\n}",
			wrong: "x++",
		},
		{
			// A result assigned to a variable that is also an argument: the
			// step's first write to its result clobbers the argument before
			// the step reads it.
			name:  "a result aliased with an argument",
			body:  "x := int64(5)\n\tx = INLINE.addOne(x)\n\tuse(x)",
			step:  "func addOne(a int64) (out int64) {\n\tout = 1\n\tout += a\n\treturn\n}",
			wrong: "x += x",
		},
		{
			// A call argument is substituted as text: evaluated at each use
			// of the parameter (twice here, or never), not once.
			name:  "a call argument is evaluated at every use",
			body:  "y := INLINE.twice(tick())\n\tuse(y)",
			step:  "func twice(n int64) (out int64) {\n\tout = n + n\n\treturn\n}",
			wrong: "tick() + tick()",
		},
		{
			// A step's free identifier (a package-level name) is captured by
			// a template local of the same name.
			name:  "a package-level name of the step captured by a template local",
			body:  "numBuckets := 2\n\tuse(numBuckets)\n\tok := INLINE.valid(b)\n\tuse(ok)",
			step:  "func valid(b int) (ok bool) {\n\tok = b < numBuckets\n\treturn\n}",
			wrong: "ok = b < numBuckets",
		},
		{
			// A composite-literal key that is a parameter (a map key, not a
			// field name) is not renamed: it refers to whatever the template
			// calls k.
			name:  "a parameter used as a map literal key is not renamed",
			body:  "k := \"other\"\n\tuse(k)\n\tm := INLINE.one(name)\n\tuse(m)",
			step:  "func one(k string) (m map[string]int) {\n\tm = map[string]int{k: 1}\n\treturn\n}",
			wrong: "{k: 1}",
		},
		{
			// A range variable of the step hides the template's variable
			// the hole reads (the := of an assignment is checked, a range
			// clause is not).
			name:  "a range variable of the step hides the hole's variable",
			body:  "x := 7\n\tINLINE.each(xs, func(v int) { use(v, x) })",
			step:  "func each(xs []int, f func(v int)) {\n\tfor _, x := range xs {\n\t\tf(x * 2)\n\t}\n}",
			wrong: "use(x * 2, x)",
		},
		{
			// A hole called inside a func literal of the step: its return
			// returns from that literal, not from the path as documented.
			name:  "a hole called inside a func literal of the step",
			body:  "INLINE.later(func() {\n\t\tstop()\n\t\treturn\n\t})\n\tafterwards()",
			step:  "func later(f func()) {\n\tdefer func() {\n\t\tf()\n\t}()\n}",
			wrong: "defer func() {\n\t\tstop()\n\t\treturn",
		},
		{
			// A hole called in a loop: with call semantics its return ends
			// one iteration; inlined, it leaves the path.
			name:  "a hole whose return is inside a loop of the step",
			body:  "INLINE.each(3, func(i int) {\n\t\tif i == 1 {\n\t\t\treturn\n\t\t}\n\t\tuse(i)\n\t})",
			step:  "func each(n int, f func(i int)) {\n\tfor j := 0; j < n; j++ {\n\t\tf(j)\n\t}\n}",
			wrong: "if j == 1 {\n\t\t\treturn",
		},
		{
			// A hole with a return called before the step's end: called, the
			// step goes on after it; inlined, the return skips the rest.
			name:  "a hole whose return would skip the rest of the step",
			body:  "INLINE.two(func() {\n\t\tstop()\n\t\treturn\n\t})\n\tuse()",
			step:  "func two(f func()) {\n\tif ok {\n\t\tf()\n\t}\n\tafter()\n}",
			wrong: "return\n\t}\n\tafter()",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderWith(t, tc.body, tc.step)
			if err != nil {
				return // refused: what the package doc promises
			}
			if strings.Contains(got, tc.wrong) {
				t.Errorf("rendered code that means something else (%q), without an error:\n%s", tc.wrong, got)
			}
		})
	}
}
