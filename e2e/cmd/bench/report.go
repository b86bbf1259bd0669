package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
)

// dynamicConfig defines one router per line of the table, all on the same
// entry point, told apart by Host.
func dynamicConfig(stable, canary, sidecar, redis string) string {
	var b strings.Builder
	b.WriteString("http:\n  routers:\n")
	for _, r := range routers {
		svc := "stable"
		if r.name == "native" {
			svc = "native-weighted"
		}
		mws := ""
		switch r.name {
		case "plain":
		case "native":
			mws = "[native-ratelimit, native-breaker]"
		case "native-redis":
			mws = "[native-redis-ratelimit]"
		case "floor-next", "floor-observe", "floor-limit", "floor-pick", "floor-all":
			mws = "[" + r.name + "]"
		default:
			mws = "[ec-" + r.name + "]"
		}
		fmt.Fprintf(&b, "    %s:\n      rule: Host(`%s.bench`)\n      entryPoints: [web]\n      service: %s\n", r.name, r.name, svc)
		if mws != "" {
			fmt.Fprintf(&b, "      middlewares: %s\n", mws)
		}
	}
	b.WriteString("    memory:\n      rule: Host(`memory.bench`)\n      entryPoints: [web]\n      service: stable\n      middlewares: [ec-memory]\n")
	fmt.Fprintf(&b, `  services:
    stable:
      loadBalancer:
        servers:
          - url: %q
    canary:
      loadBalancer:
        servers:
          - url: %q
    native-weighted:
      weighted:
        sticky:
          cookie:
            name: native_sticky
        services:
          - name: stable
            weight: 80
          - name: canary
            weight: 20
  middlewares:
    native-ratelimit:
      rateLimit:
        average: 100000
        burst: 1000
    native-breaker:
      circuitBreaker:
        expression: "ResponseCodeRatio(500, 600, 0, 600) > 0.5 || NetworkErrorRatio() > 0.5"
    native-redis-ratelimit:
      rateLimit:
        average: 100000
        burst: 1000
        redis:
          endpoints: [%q]
`, stable, canary, redis)
	versions := fmt.Sprintf(`          versions:
            stable:
              weight: 80
            canary:
              weight: 20
              url: %q
`, canary)
	only := `          versions:
            stable:
              weight: 100
`
	secret := `          sticky:
            cookie:
              secret: bench-secret
`
	// A limit the benchmark's single client (every wrk connection comes
	// from 127.0.0.1) stays under: the limiter runs on every request, never rejects.
	rateLimit := `          rateLimit:
            average: 100000
            burst: 1000
`
	breaker := `          circuitBreaker:
            consecutiveFailures: 5
            failureRatio: 0.5
`
	reporting := fmt.Sprintf(`          sidecar:
            address: %q
            interval: 1s
`, sidecar)
	plugin := func(name string, parts ...string) {
		fmt.Fprintf(&b, "    ec-%s:\n      plugin:\n        edgecanary:\n%s", name, strings.Join(parts, ""))
	}
	fmt.Fprintf(&b, "    floor-next:\n      plugin:\n        floor:\n          mode: next\n")
	fmt.Fprintf(&b, "    floor-observe:\n      plugin:\n        floor:\n          mode: observe\n")
	fmt.Fprintf(&b, "    floor-limit:\n      plugin:\n        floor:\n          mode: limit\n")
	fmt.Fprintf(&b, "    floor-pick:\n      plugin:\n        floor:\n          mode: pick\n")
	fmt.Fprintf(&b, "    floor-all:\n      plugin:\n        floor:\n          mode: all\n")
	plugin("canary", versions, secret)
	plugin("ratelimit", only, secret, rateLimit)
	plugin("breaker", only, secret, breaker)
	plugin("reporting", only, secret, reporting)
	plugin("all", versions, secret, rateLimit, breaker, reporting)
	plugin("redis", only, secret, rateLimit, fmt.Sprintf("            redis:\n              endpoints: [%q]\n", redis))
	plugin("all-redis", versions, secret, rateLimit, fmt.Sprintf("            redis:\n              endpoints: [%q]\n", redis), breaker, reporting)
	plugin("canary-reporting", versions, secret, reporting)
	// A rollout at step 1 for the whole run: 20%, as the other lines' weight.
	plugin("rollout", versions, secret, reporting, fmt.Sprintf(`          rollout:
            start: %q
            stepWeights: [20, 40]
            interval: 24h
`, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)))
	plugin("memory", only, secret, `          rateLimit:
            average: 1000000
            burst: 1000000
            maxSources: 65536
            sourceCriterion:
              requestHeaderName: X-Bench-Key
`)
	return b.String()
}

// startSidecar builds and starts the sidecar on loopback and returns its
// ingest URL.
func startSidecar(o options, root, dir string) (string, func(), error) {
	bin := o.sidecar
	if bin == "" {
		bin = filepath.Join(dir, "edgecanary-sidecar")
		// sidecar/ is its own module: build it from there.
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = filepath.Join(root, "sidecar")
		if out, err := build.CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("building the sidecar: %v\n%s", err, out)
		}
	}
	ingest, err := stage.FreePort()
	if err != nil {
		return "", nil, err
	}
	metrics, err := stage.FreePort()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin,
		fmt.Sprintf("--ingest.address=127.0.0.1:%d", ingest),
		fmt.Sprintf("--metrics.address=127.0.0.1:%d", metrics))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ingest), func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}, nil
}

type memoryResult struct {
	keys          int
	seconds       float64
	before, after int64
	maxSources    int
	errors        int
}

// microResult is one Yaegi micro-benchmark.
type microResult struct {
	name           string
	ns, bytes, all float64
}

var (
	reMicroName   = regexp.MustCompile(`^BenchmarkYaegi(\w+)-\d+`)
	reMicroFigure = regexp.MustCompile(`\s(\d+)\s+([\d.]+) ns/op\s+([\d.]+) B/op\s+([\d.]+) allocs/op`)
)

// runMicro runs the Yaegi micro-benchmarks of the per-request path. A
// benchmark's figures may come on a later line than its name when something
// logged in between.
func runMicro(e2eDir string) ([]microResult, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "Yaegi", "-benchtime", "20000x", ".")
	cmd.Dir = e2eDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("micro-benchmarks: %v\n%s", err, out)
	}
	var res []microResult
	name := ""
	for _, line := range strings.Split(string(out), "\n") {
		if m := reMicroName.FindStringSubmatch(line); m != nil {
			name = m[1]
		}
		if m := reMicroFigure.FindStringSubmatch(line); m != nil && name != "" {
			ns, _ := strconv.ParseFloat(m[2], 64)
			by, _ := strconv.ParseFloat(m[3], 64)
			al, _ := strconv.ParseFloat(m[4], 64)
			res = append(res, microResult{name, ns, by, al})
			name = ""
		}
	}
	return res, nil
}

var microNotes = map[string]string{
	"BaselineNext":           "a compiled handler, for scale",
	"SingleVersion":          "the plugin with one version: entering the interpreter, then next",
	"CookieCheck":            "a returning client: cookie verified by one lookup, version chosen",
	"NewClient":              "a new client: random bucket, Set-Cookie",
	"StickyHeader":           "sticky.header: an HMAC of the header per request",
	"RateLimit":              "one client's token bucket, with the RateLimit headers",
	"RateLimitNoHeaders":     "the same, headers: false",
	"Breaker":                "a closed breaker: status observed through the wrapper, outcome recorded",
	"BreakerBody":            "the same, the backend writing a 3-byte body with its Content-Length (one Write through the wrapper)",
	"BreakerStream":          "the same without a Content-Length: the wrapper flushes after the Write",
	"Aggregation":            "the figures for the sidecar (the sender runs in the background)",
	"Everything":             "cookie, limiter, breaker and aggregation",
	"OracleXTimeRateReserve": "golang.org/x/time/rate ReserveN + DelayFrom, interpreted (the oracle)",
	"LeanLimiterTake":        "edgecanary's GCRA step, interpreted",
	"OracleGobreakerAllow":   "github.com/sony/gobreaker TwoStep Allow + done, interpreted (the oracle)",
	"LeanBreakerBeforeAfter": "edgecanary's breaker before + after (with its clock read), interpreted",
	"FloorNext":              "the reference plugin of line 5a: only calls next",
	"FloorObserve":           "the reference plugin of line 5b: status wrapper and two clock readings, nothing else",
	"FloorLimit":             "the reference plugin of line 5c: a clock reading, a lock, a store by peer and the two RateLimit fields, nothing else",
	"RedisLease":             "the rate limit shared through a real redis-server (line 6b's limits): admitted from this replica's lease, a store call in the background once per lease",
	"FloorPick":              "the reference plugin of line 5d: the handler its cookie names, nothing else",
	"FloorAll":               "the reference plugin of line 5e: 5b, 5c and 5d in one handler",
	"RedisPerRequest":        "the same below a burst of 32 (no lease): a store call in every request",
	"CookieReporting":        "a returning client's cookie pick with reporting (line 7a)",
	"Rollout":                "the same with a running rollout: the cut test of line 7b",
}

// The project's performance goals: the most a feature line may fall below
// the reference plugin that does the least that feature must do.
const (
	featureGap = 0.04
	allGap     = 0.08
)

var goals = []struct {
	line, floor, floorLine string
	gap                    float64
}{
	{"canary", "floor-pick", "5d", featureGap},
	{"ratelimit", "floor-limit", "5c", featureGap},
	{"breaker", "floor-observe", "5b", featureGap},
	{"reporting", "floor-observe", "5b", featureGap},
	{"all", "floor-observe", "5b", allGap},
	{"all", "floor-all", "5e", allGap},          // the brief's rule for every line: the reference that does the least this line must do
	{"redis", "native-redis", "6a", 0},          // at least the compiled peer's throughput
	{"rollout", "canary-reporting", "7a", 0.02}, // a running rollout costs no more than weighted routing with its counters
}

// labelOf is the table label of the router named name.
func labelOf(selected []router, name string) string {
	for _, r := range selected {
		if r.name == name {
			return r.label
		}
	}
	return name
}

// writeReport writes the Markdown table.
func writeReport(o options, selected []router, results, latency map[string][]result, rssStart, rssEnd int64, mem *memoryResult, micro []microResult) error {
	var b strings.Builder
	plain := results["plain"]
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `make bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %s\n", machine())
	fmt.Fprintf(&b, "- Traefik %s (the cached build of `make traefik`), edgecanary as a local plugin (Yaegi)\n", stage.TraefikVersion)
	fmt.Fprintf(&b, "- Load: %s, `-t%d -c%d`, `Accept: %s` (as curl sends), %v per router per round, %d interleaved rounds (order rotated each round), %v warm-up\n",
		wrkVersion("wrk"), o.threads, o.connections, benchAccept, o.duration, o.rounds, o.warmup)
	fmt.Fprintf(&b, "- Backend: a compiled Go server on 127.0.0.1 returning 3 bytes; wrk, Traefik and the backend share the machine's cores\n")
	fmt.Fprintf(&b, "- Command: `cd e2e && go run ./cmd/bench -rounds %d -duration %v -connections %d -threads %d -latency-rounds %d` (what `make bench` runs)\n", o.rounds, o.duration, o.connections, o.threads, o.latencyRounds)
	fmt.Fprintf(&b, "- Routers with a sticky cookie are driven as one returning client of the primary (stable) version\n\n")
	fmt.Fprintf(&b, "Ratios are to router 1 in the same round; the table gives their median and, in brackets, their range across rounds.\n")
	fmt.Fprintf(&b, "p50 added is the router's p50 minus router 1's p50 in the same round (median).\n\n")
	fmt.Fprintf(&b, "| router | throughput (median req/s) | throughput ratio | p50 ratio | p50 added | p99 ratio | errors | Traefik RSS after |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range selected {
		rs := results[r.name]
		var rps, tr, p50r, p99r, added, rssv []float64
		errs := 0
		for i, x := range rs {
			rps = append(rps, x.rps)
			tr = append(tr, x.rps/plain[i].rps)
			p50r = append(p50r, x.p50/plain[i].p50)
			p99r = append(p99r, x.p99/plain[i].p99)
			added = append(added, x.p50-plain[i].p50)
			rssv = append(rssv, float64(x.rss))
			errs += x.errors
		}
		tlo, thi := minMax(tr)
		p5lo, p5hi := minMax(p50r)
		p9lo, p9hi := minMax(p99r)
		fmt.Fprintf(&b, "| %s | %.0f | **%.3f** [%.3f–%.3f] | %.2f [%.2f–%.2f] | %+.0f µs | %.2f [%.2f–%.2f] | %d | %.0f MiB |\n",
			r.label, median(rps), median(tr), tlo, thi, median(p50r), p5lo, p5hi, median(added), median(p99r), p9lo, p9hi, errs, median(rssv)/(1<<20))
	}
	fmt.Fprintf(&b, "\nTraefik's resident memory: %.0f MiB after warm-up, %.0f MiB after all rounds (one process serves every router).\n",
		float64(rssStart)/(1<<20), float64(rssEnd)/(1<<20))
	var calls []string
	for _, r := range selected {
		if !strings.Contains(r.name, "redis") {
			continue
		}
		var v []float64
		for _, x := range results[r.name] {
			if x.storeCalls > 0 {
				v = append(v, x.storeCalls)
			}
		}
		if len(v) > 0 {
			lo, hi := minMax(v)
			calls = append(calls, fmt.Sprintf("%s %.3f [%.3f–%.3f]", strings.SplitN(r.label, ".", 2)[0], median(v), lo, hi))
		}
	}
	if len(calls) > 0 {
		fmt.Fprintf(&b, "\nRedis script calls per request (Redis's `INFO commandstats` around each run, median [range]): %s.\n", strings.Join(calls, ", "))
	}
	if lp := latency["plain"]; len(lp) > 0 {
		fmt.Fprintf(&b, "\n### Latency without queueing\n\n")
		fmt.Fprintf(&b, "Under the load above every router is saturated, so its p50 is mostly time spent waiting behind other requests, and follows throughput. ")
		fmt.Fprintf(&b, "This pass sends one request at a time (`wrk -t1 -c1`, 2 s per router, %d interleaved rounds): p50 is then the time Traefik, and the middleware, spend on a request.\n\n", len(lp))
		fmt.Fprintf(&b, "| router | p50 | p50 added | p99 |\n|---|---:|---:|---:|\n")
		for _, r := range selected {
			var p50, p99, added []float64
			for i, x := range latency[r.name] {
				p50 = append(p50, x.p50)
				p99 = append(p99, x.p99)
				added = append(added, x.p50-lp[i].p50)
			}
			fmt.Fprintf(&b, "| %s | %.0f µs | %+.0f µs | %.0f µs |\n", r.label, median(p50), median(added), median(p99))
		}
	}
	med := func(name string, f func(x, p result) float64) (float64, bool) {
		rs, ok := results[name]
		if !ok {
			return 0, false
		}
		var v []float64
		for i, x := range rs {
			v = append(v, f(x, plain[i]))
		}
		return median(v), true
	}
	ratio := func(x, p result) float64 { return x.rps / p.rps }
	fmt.Fprintf(&b, "\n## Performance goals\n\n")
	fmt.Fprintf(&b, "The project's goals: each feature line within %.2f of the reference plugin that does the least such a feature must do (lines 5b to 5d; 5a, the interpreter's floor, for scale), everything on within %.2f of line 5b (issue 14's goal) and, by the same rule as the feature lines, of line 5e, which does what 5b, 5c and 5d do in one handler, the limit shared through Redis at least at the throughput of Traefik's native rateLimit.redis (6b against 6a), and a running rollout within 0.02 of the same routing without one (7b against 7a), as medians of the throughput ratios of this run.\n\n", featureGap, allGap)
	fmt.Fprintf(&b, "| line | reference | reference ratio | line ratio | gap | goal | verdict |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, g := range goals {
		v, ok := med(g.line, ratio)
		f, okf := med(g.floor, ratio)
		if !ok || !okf {
			continue
		}
		verdict := "**met**"
		if f-v > g.gap {
			verdict = fmt.Sprintf("**missed** by %.3f", f-v-g.gap)
		}
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %.3f | %.2f | %s |\n", labelOf(selected, g.line), g.floorLine, f, v, f-v, g.gap, verdict)
	}
	if v, ok := med("native", ratio); ok {
		fmt.Fprintf(&b, "\nFor comparison, Traefik's own compiled chain kept %.3f in the same run.\n", v)
	}
	if rs, lp := latency["all"], latency["plain"]; len(rs) > 0 && len(rs) == len(lp) {
		var v []float64
		for i, x := range rs {
			v = append(v, x.p50-lp[i].p50)
		}
		fmt.Fprintf(&b, "Everything on added %+.0f µs to p50 with one connection (no queueing).\n", median(v))
	}
	floorNext, _ := med("floor-next", ratio)
	floorObserve, _ := med("floor-observe", ratio)
	floorLimit, _ := med("floor-limit", ratio)
	if len(micro) > 0 {
		fmt.Fprintf(&b, "\n## Where the interpreted time goes\n\n")
		fmt.Fprintf(&b, "Go micro-benchmarks of the request path run **through the Yaegi interpreter**, as Traefik runs the plugin, in isolation (one core, no load): `cd e2e && go test -run '^$' -bench Yaegi -benchtime 20000x`.\n\n")
		fmt.Fprintf(&b, "The column *before* is each benchmark's allocations at commit 42faff1, the last one with hand-inlined request paths (measured on 2026-11-29 with the same command); since then the paths are generated from one template and the steps written once (issue 14, `internal/gen`). The floors (5a–5c) now use the plugin's own status wrapper, which flushes streams, as the plugin does.\n\n")
		fmt.Fprintf(&b, "| benchmark | ns/op | B/op | allocs/op | before | what it measures |\n|---|---:|---:|---:|---:|---|\n")
		for _, m := range micro {
			before := "–"
			if n, ok := allocsBefore[m.name]; ok {
				before = strconv.Itoa(n)
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %s | %s |\n", m.name, m.ns, m.bytes, m.all, before, microNotes[m.name])
		}
	}
	floorAll, _ := med("floor-all", ratio)
	fmt.Fprintf(&b, "%s", whyText(floorNext, floorObserve, floorLimit, floorAll))
	if mem != nil {
		fmt.Fprintf(&b, "\n## Memory under 1,000,000 distinct clients\n\n")
		fmt.Fprintf(&b, "%d requests, each with its own rate-limit key (`sourceCriterion.requestHeaderName`, `maxSources: %d`), in %.0f s: Traefik RSS %.0f MiB before, %.0f MiB after (%+.0f MiB); %d non-2xx responses or socket errors. The limiter holds at most maxSources buckets, so memory stays flat past the first 65,536 keys.\n",
			mem.keys, mem.maxSources, mem.seconds, float64(mem.before)/(1<<20), float64(mem.after)/(1<<20), float64(mem.after-mem.before)/(1<<20), mem.errors)
	}
	if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}

// allocsBefore are the Yaegi micro-benchmarks' allocations per request at
// commit 42faff1, before the request paths were generated (issue 14): a
// measurement of that commit, kept to show the change.
var allocsBefore = map[string]int{
	"BaselineNext": 0, "SingleVersion": 18, "CookieCheck": 40,
	"NewClient": 164, "StickyHeader": 153, "RateLimit": 50,
	"RateLimitNoHeaders": 48, "Breaker": 190, "BreakerBody": 179,
	"BreakerStream": 226, "Aggregation": 189, "Everything": 246,
	"OracleXTimeRateReserve": 246, "LeanLimiterTake": 38, "OracleGobreakerAllow": 302,
	"LeanBreakerBeforeAfter": 124, "FloorNext": 12, "FloorObserve": 66,
	"FloorLimit": 35,
}

// whyText explains what the interpreted features cost. It states what was
// measured (see the micro-benchmarks above); the ratios it quotes are this
// run's floors.
func whyText(floorNext, floorObserve, floorLimit, floorAll float64) string {
	return fmt.Sprintf(`
## Why the interpreted features cost what they cost

Measured with the micro-benchmarks above, with a Yaegi build that prints the frame slots of each function
(`+"`cd e2e && go run ./cmd/slots -bench YaegiBreaker -func paths_gen.go:LINE`"+`),
and with the reference plugin (lines 5a and 5b). Allocations per request are exact and repeatable, and Yaegi's
cost follows them:

- **Entering the plugin** costs about 12 allocations per request before any code runs (line 5a's plugin, 0.8 µs
  in isolation): Traefik calls the interpreted handler through reflection, and Yaegi looks up the type of each of
  its two arguments. That alone kept %.3f of Traefik's throughput in this run.
- **Every variable and temporary** of an interpreted function is allocated on every call, whether its code runs
  or not: each field selection, comparison, conversion and call result is one allocation. So New returns a
  closure chosen for the configuration (plain routing, cookie routing, limiter, observed), which captures what it
  reads per request (a captured variable costs nothing, unlike c.field), and the rare cases are calls.
  An interpreted call costs its frame (two allocations) plus its parameters; a method call about fifteen; a call
  into compiled code (time.Since, rw.Header(), req.Cookie) several.
- **Observing the status code** of the router's service needs a ResponseWriter wrapper: Traefik's service writes
  the response, and nothing else reports the status (Traefik's own status recorders exist only when its
  observability is on). Converting the wrapper for compiled code costs about 18 allocations, and every
  WriteHeader calls back into the interpreter (about 12 more). With the two clock readings that a latency
  histogram needs, that is line 5b, a plugin that does nothing else. It is the floor of the breaker, reporting
  and everything-on lines: it kept %.3f in this run. No middleware that Traefik's interpreter runs can count the
  outcomes of the router's service without observing its status code. Its p50 at many connections is mostly
  queueing, which follows throughput; with one connection (the latency table), the time a request spends in
  each of these middlewares is a few tens of microseconds. Reusing converted wrappers does not work under Yaegi (the converted writer keeps the methods of
  the first wrapped writer), and Yaegi's own compiled wrapper type with per-request method values costs more.
- **The breaker and reporting above line 5b.** Besides what line 5b's closure allocates, an observed path's
  allocates the deferred abort check (about 11 allocations; without it an aborted half-open probe would never
  give its slot back, and an aborted request would not be counted), the test for upgrades and gRPC (8: those are
  served with the original writer), the override header's test (4), and then the breaker's counters or the
  histogram and counts. Whatever the closure does not inline (a breaker that is not simply closed, an upgrade, an
  override, a request the inline limiter step does not admit) is one call into the reference path
  (serveObserved, serveLimited), which costs only when it runs. Measured with a
  Yaegi build that prints each frame slot (`+"`cmd/slots`"+`): the breaker path went from 63 allocating slots to 32, and Breaker from 161
  allocations to 122, Aggregation from 159 to 136, Everything from 245 to 212, and to 206 once a cookie's
  lookup answered a bucket plus one for a 1-based table (no ok and no range test).
- **Everything on** must do what lines 5b, 5c and 5d each do: line 5e is a plugin that does only that, in one
  handler (FloorAll above). It kept %.3f in this run, against %.3f for line 5b. Everything on adds to it the
  breaker's and the histogram's locks and counts, the GCRA step, the abort check and the upgrade test.
- **Rate limiting** needs, per request, the time (a call into compiled code: about 9 allocations), a lock, the
  client's state, and with `+"`headers`"+` (the default) two response fields (rw.Header() and two map stores: about 7).
  That is line 5c, a plugin that does only this and decides nothing: 35 allocations with the entry's 12. The
  limiter's own path (line 3b) adds the GCRA step, the check that the bucket is live and the override header's
  check. Line 5c kept %.3f in this run: a limiter under Yaegi lands near it at best.
- **The limit shared through Redis** costs a store call, which costs a Yaegi plugin about 680 allocations
  (RedisPerRequest against RateLimit above), and in a saturated Traefik its reply waits 2 to
  3 ms behind the requests ready to run. Traefik's native limiter (line 6a) makes that call, compiled, in every
  request. edgecanary leases tokens to each replica (line 6b): the request path spends them inline, as it does the
  local GCRA step, and the next lease is taken in the background; the Redis calls per request are in the line
  above the latency table. A lease lives at most the reserve's worth of token intervals (20 ms where the burst
  allows, see the README): at line 6b's limits (100,000/s, burst 1,000) that is 7.5 ms. Before this, with
  leases of a 2.5 ms life, a call every 3 to 5 requests and 40%% of requests waiting for one kept 0.47, and
  RedisLease took 138 allocations (commit 00f1de7).
- **The libraries kept as oracles** are slower still under Yaegi (the Oracle lines against the Lean lines above),
  which is why the request path uses lean equivalents and the tests compare them with the libraries.
`, floorNext, floorObserve, floorAll, floorObserve, floorLimit)
}

// memoryScript gives every request its own rate-limit key: <prefix>-<thread>-<n>.
const memoryScript = `
local threads = {}
local prefix = "run"
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  prefix = args[1] or "run"
  n = 0
end
function request()
  n = n + 1
  return wrk.format("GET", "/", {["Host"] = "memory.bench", ["X-Bench-Key"] = prefix .. "-" .. tid .. "-" .. n})
end
`

var reRequests = regexp.MustCompile(`(?m)^\s+(\d+) requests in`)

// memoryRun drives keys distinct rate-limit keys through the memory router
// and reports Traefik's resident memory before and after.
func memoryRun(wrk, web string, pid, keys int, dir string) (*memoryResult, error) {
	script := filepath.Join(dir, "memory.lua")
	if err := os.WriteFile(script, []byte(memoryScript), 0o644); err != nil {
		return nil, err
	}
	res := &memoryResult{keys: 0, maxSources: 65536, before: rss(pid)}
	start := time.Now()
	for chunk := 0; res.keys < keys && chunk < 100; chunk++ {
		out, err := exec.Command(wrk, "-t", "2", "-c", "32", "-d", "10s", "-s", script, web+"/", "--", fmt.Sprintf("c%d", chunk)).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("wrk memory run: %v\n%s", err, out)
		}
		m := reRequests.FindStringSubmatch(string(out))
		if m == nil {
			return nil, fmt.Errorf("no request count in wrk output:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		res.keys += n
		if r, err := parseWrk(string(out)); err == nil {
			res.errors += r.errors
		}
		fmt.Fprintf(os.Stderr, "memory run: %d distinct keys so far, RSS %d MiB\n", res.keys, rss(pid)>>20)
	}
	res.seconds = time.Since(start).Seconds()
	res.after = rss(pid)
	return res, nil
}
