package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/edgecanary/edgecanary/wire"
	"github.com/traefik/paerser/cli"
)

var histBounds = []float64{0.1, 0.2, 0.4}

// vfig is one version's cumulative figures in a synthetic report.
type vfig struct {
	name        string
	primary     bool
	weight      float64
	state       int
	ok, failed  uint64    // 200s and 500s
	hist        [4]uint64 // per bucket (0.1, 0.2, 0.4, +Inf), not cumulative
	refused     uint64    // 503s the breaker refused: no duration
	transitions [3]uint64
}

// histReport is a report of one Traefik process (instance) for shop@file.
func histReport(instance string, sentAt int64, rl, dry uint64, fallbacks uint64, ro *wire.Rollout, vs ...vfig) *report {
	m := reportMWStat{Name: "shop@file", Buckets: histBounds, RateLimitRejected: rl, RateLimitDryRun: dry, Rollout: ro}
	for _, v := range vs {
		m.Versions = append(m.Versions, reportVersion{
			Name: v.name, Primary: v.primary, Weight: v.weight, Configured: true, State: v.state, Transitions: v.transitions,
			Requests: []reportRequest{{Code: 200, Method: "GET", Count: v.ok}, {Code: 500, Method: "GET", Count: v.failed}, {Code: 503, Method: "GET", Count: v.refused}},
			Hist:     v.hist[:],
		})
	}
	if fallbacks > 0 {
		m.Fallbacks = []reportFallback{{From: "canary", To: "stable", Count: fallbacks}}
	}
	return &report{Version: 1, Source: "traefik-" + instance, Instance: instance, StartedAt: 1, SentAt: sentAt, Middlewares: []reportMWStat{m}}
}

func mustMerge(t *testing.T, s *store, r *report, at time.Time) {
	t.Helper()
	if err := validate(r); err != nil {
		t.Fatalf("invalid test report: %v", err)
	}
	if !s.merge(r, at) {
		t.Fatal("report not merged")
	}
}

func findVersion(t *testing.T, d historyDoc, version string) versionHistoryDoc {
	t.Helper()
	for _, m := range d.Middlewares {
		for _, v := range m.Versions {
			if m.Name == "shop@file" && v.Name == version {
				return v
			}
		}
	}
	t.Fatalf("no history of %s in %+v", version, d)
	return versionHistoryDoc{}
}

func val(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 || math.IsNaN(a) && math.IsNaN(b) }

// TestHistoryRatesSumReplicas: two Traefik processes report to one sidecar;
// each sample's rate, error ratio and quantiles are over both, from the
// increase since the previous sample.
func TestHistoryRatesSumReplicas(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	t1, t2 := t0.Add(5*time.Second), t0.Add(10*time.Second)
	stable := func(ok uint64) vfig {
		return vfig{name: "stable", primary: true, weight: 0.8, ok: ok, hist: [4]uint64{ok, 0, 0, 0}}
	}
	canary := func(ok, failed uint64, hist [4]uint64) vfig {
		return vfig{name: "canary", weight: 0.2, ok: ok, failed: failed, hist: hist}
	}
	// t0: a first sample, which has no increase.
	mustMerge(t, s, histReport("a", 1, 0, 0, 0, nil, stable(100), canary(10, 0, [4]uint64{10, 0, 0, 0})), t0)
	mustMerge(t, s, histReport("b", 1, 0, 0, 0, nil, stable(100), canary(10, 0, [4]uint64{10, 0, 0, 0})), t0)
	h.record(s.snapshot(t0), t0)
	// t1: 50 more stable requests per process; the canary 25 + 25 (10 failed).
	mustMerge(t, s, histReport("a", 2, 7, 3, 0, nil, stable(150), canary(30, 5, [4]uint64{25, 5, 5, 0})), t1)
	mustMerge(t, s, histReport("b", 2, 0, 0, 0, nil, stable(150), canary(30, 5, [4]uint64{25, 5, 5, 0})), t1)
	h.record(s.snapshot(t1), t1)
	// t2: nothing new.
	h.record(s.snapshot(t2), t2)

	d := h.doc()
	if len(d.Times) != 3 || d.Times[0] != t0.UnixMilli() || d.Times[2] != t2.UnixMilli() {
		t.Fatalf("times %v", d.Times)
	}
	st, ca := findVersion(t, d, "stable"), findVersion(t, d, "canary")
	if st.RequestsPS[0] != nil || ca.ErrorRatio[0] != nil {
		t.Error("the first sample has a rate")
	}
	if got := val(st.RequestsPS[1]); got != 20 { // 100 requests in 5 s
		t.Errorf("stable rate %v, want 20", got)
	}
	if got := val(ca.RequestsPS[1]); got != 10 { // 50 in 5 s
		t.Errorf("canary rate %v, want 10", got)
	}
	if got := val(ca.ErrorRatio[1]); got != 0.2 { // 10 of 50
		t.Errorf("canary error ratio %v, want 0.2", got)
	}
	// The canary's increase per bucket: 30, 10, 10, 0 (cumulative 30, 40, 50, 50).
	// p50: rank 25 in the first bucket: 0.1 × 25/30. p95: rank 47.5 in the
	// third: 0.2 + 0.2 × 7.5/10. p99: rank 49.5: 0.2 + 0.2 × 9.5/10.
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", val(ca.P50[1]), 0.1 * 25 / 30}, {"p95", val(ca.P95[1]), 0.35}, {"p99", val(ca.P99[1]), 0.39},
	} {
		if math.Abs(c.got-c.want) > 1e-6 {
			t.Errorf("canary %s %v, want %v", c.name, c.got, c.want)
		}
	}
	if val(st.RequestsPS[2]) != 0 || ca.ErrorRatio[2] != nil || ca.P99[2] != nil {
		t.Errorf("an idle step: rate %v, error ratio %v, p99 %v", val(st.RequestsPS[2]), val(ca.ErrorRatio[2]), val(ca.P99[2]))
	}
	if val(ca.Weight[2]) != 0.2 || *ca.CircuitState[2] != "closed" || !st.Primary || ca.Primary {
		t.Errorf("weight %v, state %v, primary %v/%v", val(ca.Weight[2]), *ca.CircuitState[2], st.Primary, ca.Primary)
	}
	if ca.Totals.Requests != 50 || ca.Totals.Errors != 10 || st.Totals.Requests != 100 {
		t.Errorf("window totals canary %+v stable %+v", ca.Totals, st.Totals)
	}
	m := d.Middlewares[0]
	if m.Totals.RateLimited != 7 || m.Totals.DryRunRateLimited != 3 || *m.RateLimited[1] != 7 {
		t.Errorf("429s %+v", m.Totals)
	}
}

// TestHistoryCounterReset: a Traefik restart (a new process from zero) adds
// to the sums, and a sum that goes down (a histogram layout changed) counts
// as rate() counts a reset: the new value is the increase.
func TestHistoryCounterReset(t *testing.T) {
	for _, c := range []struct{ prev, cur, want uint64 }{{10, 15, 5}, {10, 10, 0}, {10, 3, 3}, {0, 0, 0}} {
		if got := increase(c.prev, c.cur); got != c.want {
			t.Errorf("increase(%d, %d) = %d, want %d", c.prev, c.cur, got, c.want)
		}
	}
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	v := func(ok uint64) vfig {
		return vfig{name: "stable", primary: true, weight: 1, ok: ok, hist: [4]uint64{ok, 0, 0, 0}}
	}
	mustMerge(t, s, histReport("old", 1, 40, 0, 0, nil, v(1000)), t0)
	h.record(s.snapshot(t0), t0)
	// The old process is gone; the new one's first report is a baseline (as
	// a new series is for rate(): a process seen late must not add its whole
	// lifetime to one step), then it counts: 25 more in 5 s.
	t1 := t0.Add(5 * time.Second)
	mustMerge(t, s, histReport("new", 1, 5, 0, 0, nil, v(25)), t1)
	h.record(s.snapshot(t1), t1)
	t2 := t1.Add(5 * time.Second)
	mustMerge(t, s, histReport("new", 2, 10, 0, 0, nil, v(50)), t2)
	h.record(s.snapshot(t2), t2)
	st := findVersion(t, h.doc(), "stable")
	if got := val(st.RequestsPS[1]); got != 0 {
		t.Errorf("rate at a restart %v, want 0 (the new process's first report is a baseline)", got)
	}
	if got := val(st.RequestsPS[2]); got != 5 {
		t.Errorf("rate after a restart %v, want 5 (25 in 5 s)", got)
	}
	if got := h.doc().Middlewares[0].RateLimited[2]; got == nil || *got != 5 {
		t.Errorf("429s after a restart %v, want 5", got)
	}

	// Directly: totals that go down restart from zero, per bucket as well.
	one := func(vt *versionTotals) map[string]*versionTotals { return map[string]*versionTotals{"": vt} }
	vs := &versionSeries{}
	vs.record(0, one(&versionTotals{requests: 1000, errors: 100, bounds: histBounds, cum: []uint64{900, 1000, 1000, 1000}}), nil)
	vs.record(1, one(&versionTotals{requests: 40, errors: 4, bounds: histBounds, cum: []uint64{10, 40, 40, 40}}), nil)
	p := vs.points[1]
	if !p.rated || p.requests != 40 || p.errors != 4 || p.refused != 0 {
		t.Errorf("after a reset: %+v", p)
	}
	if want := float32(0.1 + 0.1*10/30.0); math.Abs(float64(p.p50-want)) > 1e-6 {
		t.Errorf("p50 after a reset %v, want %v", p.p50, want)
	}
	// No histogram (left out at the series cap): no refusal is inferred.
	vs2 := &versionSeries{}
	vs2.record(0, one(&versionTotals{requests: 10}), nil)
	vs2.record(1, one(&versionTotals{requests: 30}), nil)
	if p := vs2.points[1]; p.requests != 20 || p.refused != 0 || !math.IsNaN(float64(p.p50)) {
		t.Errorf("without a histogram: %+v", p)
	}
	// A changed layout: the new histogram is the increase.
	vs.record(2, one(&versionTotals{requests: 50, bounds: []float64{1}, cum: []uint64{8, 10}}), nil)
	if p := vs.points[2]; p.p50 != 0.625 || p.requests != 10 {
		t.Errorf("after a layout change: p50 %v requests %d, want 0.625 and 10", p.p50, p.requests)
	}
}

// TestBucketQuantileFollowsPrometheus: the cases of histogram_quantile's
// definition (promql.BucketQuantile, Prometheus v0.305): linear within the
// bucket, from 0 in the first, the highest finite bound in +Inf, NaN when
// empty; and histIncrease makes counts monotonic as Prometheus does.
func TestBucketQuantileFollowsPrometheus(t *testing.T) {
	b := []float64{0.1, 0.2, 0.4}
	for _, c := range []struct {
		q    float64
		cum  []float64
		want float64
	}{
		{0.5, []float64{50, 90, 100, 100}, 0.1},   // rank 50 is the first bucket's top
		{0.9, []float64{50, 90, 100, 100}, 0.2},   // rank 90
		{0.95, []float64{50, 90, 100, 100}, 0.3},  // rank 95: halfway through (0.2, 0.4]
		{0.25, []float64{50, 90, 100, 100}, 0.05}, // from 0 in the first bucket
		{0.99, []float64{50, 90, 100, 110}, 0.4},  // in +Inf: the highest finite bound
		{0.5, []float64{0, 0, 10, 10}, 0.3},       // empty buckets below are skipped
		{0.5, []float64{0, 0, 0, 0}, math.NaN()},
		{math.NaN(), []float64{1, 1, 1, 1}, math.NaN()},
		{0.5, []float64{1, 1}, math.NaN()}, // a layout that does not match
	} {
		if got := bucketQuantile(c.q, b, c.cum); !near(got, c.want) {
			t.Errorf("q %v of %v: %v, want %v", c.q, c.cum, got, c.want)
		}
	}
	// One bucket went down (reset) while the others did not: its increase is
	// its new value, and the cumulative counts are kept monotonic.
	got := histIncrease(b, []uint64{10, 20, 30, 30}, b, []uint64{15, 5, 40, 40})
	if fmt.Sprint(got) != "[5 5 10 10]" {
		t.Errorf("histIncrease %v, want [5 5 10 10]", got)
	}
	if histIncrease(b, nil, b, []uint64{1}) != nil {
		t.Error("a malformed layout gave an increase")
	}
}

// TestHistoryBreakerAndRefusals: a trip shorter than the step shows as open;
// refused requests (counted, with no duration) and fallbacks are counted.
func TestHistoryBreakerAndRefusals(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	c := vfig{name: "canary", weight: 0.5, ok: 10, hist: [4]uint64{10, 0, 0, 0}}
	st := vfig{name: "stable", primary: true, weight: 0.5, ok: 10, hist: [4]uint64{10, 0, 0, 0}}
	mustMerge(t, s, histReport("a", 1, 0, 0, 0, nil, c, st), t0)
	h.record(s.snapshot(t0), t0)
	// It opened, refused 4 and let 6 fall back, then closed again, all within the step.
	c.refused, c.transitions = 4, [3]uint64{1, 1, 1}
	t1 := t0.Add(5 * time.Second)
	mustMerge(t, s, histReport("a", 2, 0, 0, 6, nil, c, st), t1)
	h.record(s.snapshot(t1), t1)
	ca := findVersion(t, h.doc(), "canary")
	if *ca.CircuitState[1] != "open" || *ca.CircuitState[0] != "closed" {
		t.Errorf("states %v %v, want closed then open", *ca.CircuitState[0], *ca.CircuitState[1])
	}
	if ca.Totals.Refused != 4 || ca.Totals.Fallbacks != 6 || ca.Totals.Errors != 4 {
		t.Errorf("totals %+v, want 4 refused (503s), 6 fallbacks", ca.Totals)
	}
}

// TestHistoryBounds: the ring holds historyPoints samples; at most
// maxHistoryMiddlewares middlewares of maxHistoryVersions versions are
// tracked, the rest counted; a middleware idle for a whole window is dropped
// and one idle takes a new one's place. Reports the bytes per series.
func TestHistoryBounds(t *testing.T) {
	h := newHistory(time.Second)
	v := view{mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}}
	for i := 0; i < maxHistoryMiddlewares+5; i++ {
		g := map[string]versionGauge{}
		for j := 0; j < maxHistoryVersions+3; j++ {
			g[fmt.Sprintf("v%02d", j)] = versionGauge{weight: 0.1, configured: true}
		}
		v.gauges[fmt.Sprintf("mw%02d", i)] = g
	}
	at := t0
	for i := 0; i < historyPoints+20; i++ {
		at = at.Add(time.Second)
		h.record(v, at)
	}
	d := h.doc()
	if len(d.Times) != historyPoints || d.Times[historyPoints-1] != at.UnixMilli() {
		t.Fatalf("%d samples held, the last at %d", len(d.Times), d.Times[len(d.Times)-1])
	}
	if len(d.Middlewares) != maxHistoryMiddlewares || len(d.Middlewares[0].Versions) != maxHistoryVersions {
		t.Fatalf("%d middlewares of %d versions tracked", len(d.Middlewares), len(d.Middlewares[0].Versions))
	}
	if want := 5 + maxHistoryMiddlewares*3; d.Untracked != want {
		t.Errorf("untracked %d, want %d", d.Untracked, want)
	}
	// A sample at or before the last is ignored.
	h.record(v, at)
	if len(h.doc().Times) != historyPoints {
		t.Error("a repeated instant was sampled")
	}
	// At the cap, a middleware idle at a sample (no fresh report for 2
	// minutes, no counter moved) gives its place to a live one.
	delete(v.gauges, "mw00")
	at = at.Add(time.Second)
	h.record(v, at)
	if _, ok := h.mws["mw00"]; ok || h.mws["mw32"] == nil || len(h.mws) != maxHistoryMiddlewares {
		t.Errorf("the idle middleware kept its place: %d tracked", len(h.mws))
	}
	// Below the cap, an idle middleware stays while the window holds its
	// activity, then it is dropped.
	h = newHistory(time.Second)
	v.gauges = map[string]map[string]versionGauge{"a": {"stable": {}}, "b": {"stable": {}}}
	at = at.Add(time.Second)
	h.record(v, at)
	delete(v.gauges, "b")
	for i := 0; i < historyPoints-1; i++ {
		at = at.Add(time.Second)
		h.record(v, at)
	}
	if h.mws["b"] == nil {
		t.Error("an idle middleware was dropped before a whole window")
	}
	at = at.Add(time.Second)
	h.record(v, at)
	if h.mws["b"] != nil || h.mws["a"] == nil {
		t.Error("a middleware idle for a whole window is kept")
	}
	perPoint := unsafe.Sizeof(histPoint{})
	perVersion := unsafe.Sizeof(versionSeries{})
	perMW := unsafe.Sizeof(mwSeries{})
	t.Logf("bytes: %d per point, %d per version series (+ its last totals: 8 per bucket), %d per middleware besides its versions, %d for the shared times",
		perPoint, perVersion, perMW, unsafe.Sizeof(h.times)+unsafe.Sizeof(h.elapsed))
	if perPoint > 36 || perVersion > 36*historyPoints+200 {
		t.Errorf("a point takes %d bytes, a version series %d: more than README states", perPoint, perVersion)
	}
}

// TestCleanRolloutBoundsInput: whatever a report's rollout holds, the page
// gets bounded, drawable values and nothing panics.
func TestCleanRolloutBoundsInput(t *testing.T) {
	recent := make([]wire.Check, 100)
	for i := range recent {
		recent[i] = wire.Check{At: int64(i), Step: -5, Result: "weird", Reason: strings.Repeat("x", 1000)}
	}
	r := cleanRollout(&wire.Rollout{
		Version: "BAD NAME", Start: -1, IntervalMs: math.MaxInt64, StepWeights: append(make([]float64, 200), math.NaN(), -3, 1e9),
		Step: 1 << 40, State: 99, Failed: -1, Recent: recent,
	})
	if r.Version != "" || r.Start != 0 || r.IntervalMs != maxRolloutStepLen || len(r.StepWeights) != maxRolloutSteps ||
		r.Step != maxRolloutSteps+1 || r.State != -1 || r.Failed != 0 || len(r.Recent) != maxRolloutChecks {
		t.Errorf("cleaned: %+v", r)
	}
	if c := r.Recent[0]; c.At != 68 || c.Step != 0 || c.Result != "unknown" || len(c.Reason) != maxReasonBytes {
		t.Errorf("first kept check %+v", c)
	}
	r = cleanRollout(&wire.Rollout{StepWeights: []float64{math.NaN(), -3, 1e9}})
	if fmt.Sprint(r.StepWeights) != "[0 0 100]" {
		t.Errorf("weights %v", r.StepWeights)
	}
	d := newRolloutDoc(r)
	if d.State != "waiting" || len(d.Schedule) != 3 {
		t.Errorf("doc %+v", d)
	}
}

// rolloutAt is a rollout of the canary in four 10 s steps from t0, at step 2,
// with a passed and a failed check.
func rolloutAt() *wire.Rollout {
	return &wire.Rollout{
		Version: "canary", Start: t0.UnixMilli(), IntervalMs: 10000, StepWeights: []float64{5, 25, 50, 100},
		Step: 2, State: wire.RolloutProgressing, Failed: 1, Checks: [3]uint64{1, 1, 0},
		Recent: []wire.Check{
			{At: t0.Add(10 * time.Second).UnixMilli(), Step: 1, Result: "pass", Reason: "request-success-rate 100% >= 99%"},
			{At: t0.Add(20 * time.Second).UnixMilli(), Step: 2, Result: "fail", Reason: "request-success-rate <b>80%</b> < 99%"},
		},
	}
}

// TestStatusPageDrawsHistory: the page is complete without JavaScript (the
// table, the charts with their samples, the rollout and its checks), escapes
// what reports carry, and its CSP allows only same-origin scripts and styles.
func TestStatusPageDrawsHistory(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	at := t0
	for i := 0; i < 6; i++ {
		failed := uint64(0)
		if i >= 3 {
			failed = uint64(10 * (i - 2)) // the canary fails from the fourth sample on
		}
		c := vfig{name: "canary", weight: 0.25, ok: uint64(10 * i), failed: failed, hist: [4]uint64{uint64(10*i) + failed, 0, 0, 0}}
		st := vfig{name: "stable", primary: true, weight: 0.75, ok: uint64(30 * i), hist: [4]uint64{uint64(30 * i), 0, 0, 0}}
		mustMerge(t, s, histReport("a", int64(i+1), 0, 0, 0, rolloutAt(), c, st), at)
		s.sample(at)
		h.record(s.snapshot(at), at)
		at = at.Add(5 * time.Second)
	}
	at = at.Add(-5 * time.Second)
	sp := &statusPages{store: s, history: h, now: func() time.Time { return at }}
	rec := httptest.NewRecorder()
	sp.page(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	page := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	if strings.Contains(csp, "unsafe") || !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "style-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if regexp.MustCompile(`<script[^>]*>[^<]`).MatchString(page) || strings.Contains(page, "style=") || strings.Contains(page, "<style") {
		t.Error("the page has inline script or style")
	}
	if !regexp.MustCompile(`<tr data-version="canary"><td>shop@file</td><td>canary</td><td>25.0 %</td>`).MatchString(page) {
		t.Errorf("no server-side row for the canary:\n%s", page)
	}
	m := regexp.MustCompile(`<path class="line c0" data-version="canary" data-metric="errorRatio" data-v="([^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no canary error-ratio line:\n%s", page)
	}
	if m[1] != ",0,0,0.5,0.5,0.5" {
		t.Errorf("canary error ratio drawn as %q", m[1])
	}
	ts := regexp.MustCompile(`<section class="mw" data-middleware="shop@file" data-t="([0-9,]+)">`).FindStringSubmatch(page)
	if ts == nil || len(strings.Split(ts[1], ",")) != 6 || !strings.HasPrefix(ts[1], strconv.FormatInt(t0.UnixMilli(), 10)+",") {
		t.Errorf("the section's sample instants: %v", ts)
	}
	for _, want := range []string{
		`data-chart="requestsPerSecond"`, `data-chart="latency"`, `data-metric="p95Seconds"`, `data-chart="weight"`, `data-chart="circuitState"`,
		`<path class="schedule"`, `class="check pass"`, `class="check fail"`, `&lt;b&gt;80%&lt;/b&gt;`, `<li class="current">25 %</li>`,
		`data-state="progressing" data-step="2"`, `<script src="/status.js" defer></script>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "<b>80%") {
		t.Error("a check's reason is not escaped")
	}
	for _, path := range []string{"/status.js", "/status.css"} {
		rec := httptest.NewRecorder()
		body := statusJS
		if strings.HasSuffix(path, ".css") {
			body = statusCSS
		}
		staticAsset("text/javascript", body)(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Body.Len() == 0 || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s not served", path)
		}
	}
	// The API carries the same history, as JSON (no NaN).
	rec = httptest.NewRecorder()
	sp.json(rec, httptest.NewRequest(http.MethodGet, "/api/status", nil))
	var doc statusDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("/api/status: %v\n%s", err, rec.Body.String())
	}
	if doc.History == nil || len(doc.History.Times) != 6 || doc.History.Middlewares[0].Rollout.Schedule[1].Weight != 25 {
		t.Errorf("/api/status history %+v", doc.History)
	}
}

// TestStatusStepFlag: --status.step sets the sampling step (5 s by default),
// from 1 s to 1 m.
func TestStatusStepFlag(t *testing.T) {
	load := func(args ...string) (*Configuration, error) {
		cfg := NewConfiguration()
		cmd := &cli.Command{Name: "edgecanary-sidecar", Configuration: cfg, Resources: resources()}
		for _, r := range cmd.Resources {
			done, err := r.Load(args, cmd)
			if err != nil {
				return nil, err
			}
			if done {
				break
			}
		}
		return cfg, cfg.validate()
	}
	for _, c := range []struct {
		args []string
		want time.Duration
		err  bool
	}{
		{nil, 5 * time.Second, false},
		{[]string{"--status.step=1s"}, time.Second, false},
		{[]string{"--status.step=10"}, 10 * time.Second, false}, // seconds, as Traefik reads durations
		{[]string{"--status.step=500ms"}, 0, true},
		{[]string{"--status.step=2m"}, 0, true},
	} {
		cfg, err := load(c.args...)
		if c.err {
			if err == nil || !strings.Contains(err.Error(), "status.step") {
				t.Errorf("%v: error %v", c.args, err)
			}
			continue
		}
		if err != nil || time.Duration(cfg.Status.Step) != c.want {
			t.Errorf("%v: step %v, %v; want %v", c.args, time.Duration(cfg.Status.Step), err, c.want)
		}
	}
}

// TestHistoryTakesAnyTotals: totals that jump, go down, change layout, or
// come with bounds and counts that do not match, and pages rendered while
// samples are taken, never panic (run with -race for the lock).
func TestHistoryTakesAnyTotals(t *testing.T) {
	h := newHistory(time.Second)
	sp := &statusPages{store: newStore(defaultMaxSeries), history: h, now: func() time.Time { return t0 }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			rec := httptest.NewRecorder()
			sp.fragment(rec, httptest.NewRequest(http.MethodGet, "/status/live", nil))
			sp.json(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/status", nil))
		}
	}()
	seed := uint64(1)
	rnd := func(n uint64) uint64 { // xorshift: deterministic
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return seed % n
	}
	layouts := [][]float64{{0.1, 0.2, 0.4}, {1}, nil}
	at := t0
	for i := 0; i < 3*historyPoints; i++ {
		at = at.Add(time.Second)
		t1 := newMWTotals()
		bounds := layouts[rnd(3)]
		counts := make([]uint64, len(bounds)+int(rnd(3))) // sometimes one short or long
		for j := range counts {
			counts[j] = rnd(1 << 40)
		}
		t1.hist["canary"] = &histTotals{bounds: bounds, counts: counts}
		t1.requests[reqKey{"canary", int(rnd(600)), "GET"}] = rnd(1 << 62)
		t1.fallbacks[fbKey{"canary", "stable"}] = rnd(1 << 33)
		t1.transitions["canary"] = [3]uint64{rnd(5), rnd(5), rnd(5)}
		t1.rlRejected = rnd(1 << 34)
		g := map[string]versionGauge{"canary": {state: int(rnd(3)), weight: 0.5, configured: true}}
		h.record(view{mws: map[string]*mwTotals{"shop@file": t1}, gauges: map[string]map[string]versionGauge{"shop@file": g}}, at)
	}
	<-done
	d := h.doc()
	if len(d.Times) != historyPoints || len(d.Middlewares) != 1 {
		t.Fatalf("%d samples, %d middlewares", len(d.Times), len(d.Middlewares))
	}
	var b strings.Builder
	renderHistory(pageWriter{&b}, &d)
	if _, err := json.Marshal(d); err != nil {
		t.Fatal(err)
	}
}

// fullHistory is a history at its caps: maxHistoryMiddlewares middlewares of
// maxHistoryVersions versions, every sample held.
func fullHistory() (*history, view) {
	h := newHistory(5 * time.Second)
	v := view{mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}}
	for i := 0; i < maxHistoryMiddlewares; i++ {
		name := fmt.Sprintf("mw%02d", i)
		t := newMWTotals()
		g := map[string]versionGauge{}
		for j := 0; j < maxHistoryVersions; j++ {
			vn := fmt.Sprintf("v%d", j)
			g[vn] = versionGauge{weight: 0.125, configured: true, primary: j == 0}
			t.hist[vn] = &histTotals{bounds: testBuckets, counts: make([]uint64, len(testBuckets)+1)}
		}
		v.mws[name], v.gauges[name] = t, g
	}
	at := t0
	for i := 0; i < historyPoints; i++ {
		for _, t := range v.mws {
			for j := 0; j < maxHistoryVersions; j++ {
				vn := fmt.Sprintf("v%d", j)
				t.requests[reqKey{vn, 200, "GET"}] += 100
				t.requests[reqKey{vn, 500, "GET"}] += uint64(i % 3)
				t.hist[vn].counts[i%len(t.hist[vn].counts)] += 100
			}
		}
		at = at.Add(5 * time.Second)
		h.record(v, at)
	}
	return h, v
}

// BenchmarkHistoryRecordAtTheCaps: one sample of 32 middlewares × 8 versions.
func BenchmarkHistoryRecordAtTheCaps(b *testing.B) {
	h, v := fullHistory()
	at := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(5 * time.Second)
		h.record(v, at)
	}
}

// BenchmarkStatusPageAtTheCaps: the live part of the page at the caps.
func BenchmarkStatusPageAtTheCaps(b *testing.B) {
	h, _ := fullHistory()
	sp := &statusPages{store: newStore(defaultMaxSeries), history: h, now: func() time.Time { return t0 }}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		sp.fragment(rec, httptest.NewRequest(http.MethodGet, "/status/live", nil))
		b.SetBytes(int64(rec.Body.Len()))
	}
}
