package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestYaegiAllocationBudgets: under Yaegi, each request path allocates no
// more than its figure in BENCHMARKS.md. Yaegi's cost follows allocations
// per request, so a change that adds one to a path fails here, not only in
// make bench (issue 14: allocations do not rise on any path). The figures
// are exact and repeatable; lower one when a change saves allocations.
// (Breaker and Aggregation rose by 2 and 1 with the status wrapper's final
// flag, which keeps a superfluous WriteHeader from being counted: a
// correctness fix, measured on its own at +2 on every observed path; the
// clock read through the package's clock variable, not time.Since, took one
// back on each.)
//
// Each benchmark runs alone in a new process of this test binary: the
// goroutines that earlier tests of the suite leave running allocate too,
// and the allocation count is the process's (the CI run of bb27ad9 read 163
// for CookieReporting after the Chromium tests, 162 alone).
func TestYaegiAllocationBudgets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Yaegi micro-benchmarks")
	}
	for _, tc := range []struct {
		name string
		max  int64
	}{
		{"SingleVersion", 18},
		{"CookieCheck", 35},
		{"RateLimit", 47},
		{"Breaker", 123},
		{"Aggregation", 136},
		{"Everything", 205},
		{"CookieReporting", 162},
		{"Rollout", 175},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := allocsAlone("BenchmarkYaegi" + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if got > tc.max {
				t.Errorf("%d allocations per request under Yaegi, budget %d", got, tc.max)
			}
		})
	}
}

// allocsAlone runs the benchmark bench alone in a new process of this test
// binary and returns its allocations per op.
func allocsAlone(bench string) (int64, error) {
	out, err := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^"+bench+"$", "-test.benchmem").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", bench, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], bench+"-") && f[0] != bench {
			continue
		}
		for i := 1; i < len(f); i++ {
			if f[i] == "allocs/op" {
				return strconv.ParseInt(f[i-1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no allocs/op in its output:\n%s", bench, out)
}
