package plugin

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// rolloutStart is the fixed instant the unit tests' schedules start at.
var rolloutStart = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func TestRolloutSchedule(t *testing.T) {
	s := schedule{start: rolloutStart.UnixNano(), interval: int64(10 * time.Minute), weights: []int{1, 5, 10, 25, 50, 100}}
	at := rolloutStart.Add
	for _, test := range []struct {
		t            time.Time
		step, weight int
		done         bool
	}{
		{rolloutStart.Add(-time.Hour * 24 * 365), 0, 0, false},
		{at(-time.Nanosecond), 0, 0, false},
		{at(0), 1, 1, false},
		{at(10*time.Minute - time.Nanosecond), 1, 1, false},
		{at(10 * time.Minute), 2, 5, false},
		{at(35 * time.Minute), 4, 25, false},
		{at(59*time.Minute + 59*time.Second), 6, 100, false},
		{at(60 * time.Minute), 6, 100, true},
		{at(24 * 365 * 100 * time.Hour), 6, 100, true},
	} {
		step, weight, done := s.at(test.t.UnixNano())
		if step != test.step || weight != test.weight || done != test.done {
			t.Errorf("at %v: step %d weight %d done %v, want %d %d %v", test.t.Sub(rolloutStart), step, weight, done, test.step, test.weight, test.done)
		}
	}
	if got := s.stepStart(3); got != rolloutStart.Add(20*time.Minute).UnixNano() {
		t.Errorf("stepStart(3) = %v", time.Unix(0, got).UTC())
	}
}

func rolloutConfig(start time.Time, steps []int, interval string) *Config {
	cfg := baseConfig("http://127.0.0.1:1", 10)
	cfg.Rollout.Start = start.UTC().Format(time.RFC3339)
	cfg.Rollout.StepWeights = steps
	cfg.Rollout.Interval = interval
	return cfg
}

func TestRolloutConfigErrors(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, test := range []struct {
		name  string
		edit  func(c *Config)
		field string
	}{
		{"steps not increasing", func(c *Config) { c.Rollout.StepWeights = []int{5, 5} }, "rollout.stepWeights[1]"},
		{"steps decreasing", func(c *Config) { c.Rollout.StepWeights = []int{50, 10} }, "rollout.stepWeights[1]"},
		{"step above 100", func(c *Config) { c.Rollout.StepWeights = []int{50, 101} }, "rollout.stepWeights[1]"},
		{"step negative", func(c *Config) { c.Rollout.StepWeights = []int{-1} }, "rollout.stepWeights[0]"},
		{"no steps", func(c *Config) { c.Rollout.StepWeights = nil }, "rollout.stepWeights"},
		{"too many steps", func(c *Config) {
			c.Rollout.StepWeights = make([]int, 101)
			for i := range c.Rollout.StepWeights {
				c.Rollout.StepWeights[i] = i
			}
		}, "rollout.stepWeights"},
		{"start does not parse", func(c *Config) { c.Rollout.Start = "tomorrow" }, "rollout.start"},
		{"start out of range", func(c *Config) { c.Rollout.Start = "9999-01-01T00:00:00Z" }, "rollout.start"},
		{"unknown metric", func(c *Config) {
			c.Rollout.Metrics = []RolloutMetric{{Name: "request-happiness", ThresholdRange: ThresholdRange{Min: f(1)}}}
		}, "rollout.metrics[0].name"},
		{"metric without range", func(c *Config) { c.Rollout.Metrics = []RolloutMetric{{Name: metricDuration}} }, "rollout.metrics[0].thresholdRange"},
		{"min above max", func(c *Config) {
			c.Rollout.Metrics = []RolloutMetric{{Name: metricDuration, ThresholdRange: ThresholdRange{Min: f(9), Max: f(1)}}}
		}, "rollout.metrics[0].thresholdRange"},
		{"version is the primary", func(c *Config) { c.Rollout.Version = "stable" }, "rollout.version"},
		{"version unknown", func(c *Config) { c.Rollout.Version = "beta" }, "rollout.version"},
		{"version reserved", func(c *Config) { c.Rollout.Version = "always" }, "rollout.version"},
		{"interval", func(c *Config) { c.Rollout.Interval = "-1s" }, "rollout.interval"},
		{"interval too short", func(c *Config) { c.Rollout.Interval = "1ms" }, "rollout.interval"},
		{"interval too long", func(c *Config) { c.Rollout.Interval = "1000h" }, "rollout.interval"},
		{"threshold", func(c *Config) { c.Rollout.Threshold = 0 }, "rollout.threshold"},
		{"minRequests", func(c *Config) { c.Rollout.MinRequests = -1 }, "rollout.minRequests"},
		{"redis endpoint", func(c *Config) { c.Rollout.Redis.Endpoints = []string{"nope"} }, "rollout.redis.endpoints[0]"},
		{"redis password alone", func(c *Config) { c.Rollout.Redis.Password = "x" }, "rollout.redis.endpoints"},
		{"redis timeout", func(c *Config) {
			c.Rollout.Redis.Endpoints = []string{"127.0.0.1:1"}
			c.Rollout.Redis.ReadTimeout = "forever"
		}, "rollout.redis.readTimeout"},
	} {
		t.Run(test.name, func(t *testing.T) {
			cfg := rolloutConfig(rolloutStart, []int{10, 50}, "1m")
			test.edit(cfg)
			_, err := New(context.Background(), stableNext, cfg, "rollout-errors")
			if err == nil || !strings.Contains(err.Error(), test.field+":") {
				t.Fatalf("err = %v, want one naming %s", err, test.field)
			}
		})
	}
	t.Run("several non-primary versions need a version", func(t *testing.T) {
		cfg := rolloutConfig(rolloutStart, []int{10, 50}, "1m")
		cfg.Versions["beta"] = VersionConfig{Weight: 5, URL: "http://127.0.0.1:1"}
		if _, err := New(context.Background(), stableNext, cfg, "rollout-errors"); err == nil || !strings.Contains(err.Error(), "rollout.version:") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestHistQuantile(t *testing.T) {
	bounds := []float64{0.1, 0.2, 0.5}
	prev := []uint64{10, 10, 10, 10}
	// 100 new requests: 50 below 0.1, 40 in (0.1, 0.2], 9 in (0.2, 0.5], 1 above.
	cur := []uint64{60, 50, 19, 11}
	for _, test := range []struct{ q, want float64 }{
		{0.5, 0.1},           // rank 50: the top of the first bucket
		{0.7, 0.15},          // rank 70: half way through the second
		{0.99, 0.5},          // rank 99: the top of the third
		{0.995, math.Inf(1)}, // rank 99.5: in +Inf: above every bound
		{0.25, 0.1 * 0.5},    // rank 25: half way through the first, from 0
	} {
		if got := histQuantile(test.q, bounds, prev, cur); got != test.want && (got < test.want-1e-9 || got > test.want+1e-9) {
			t.Errorf("q %v = %v, want %v", test.q, got, test.want)
		}
	}
	if got := histQuantile(0.99, bounds, cur, cur); got != 0 {
		t.Errorf("no requests: %v, want 0", got)
	}
	if got := histQuantile(0.99, bounds, nil, []uint64{1}); got != 0 {
		t.Errorf("a histogram of another layout: %v, want 0", got)
	}
}

func TestJudge(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	cfg := rolloutConfig(rolloutStart, []int{10}, "1m")
	cfg.Rollout.MinRequests = 100
	cfg.Rollout.Metrics = []RolloutMetric{
		{Name: metricSuccessRate, ThresholdRange: ThresholdRange{Min: f(99)}},
		{Name: metricDuration, ThresholdRange: ThresholdRange{Max: f(500)}},
		{Name: metricErrorRateIncrease, ThresholdRange: ThresholdRange{Max: f(1)}},
	}
	c := testCanary(t, baseConfig("http://127.0.0.1:1", 10))
	s, err := parseRollout(cfg.Rollout, c)
	if err != nil {
		t.Fatal(err)
	}
	bounds := []float64{0.1, 0.5, 1}
	w := func(n, errs uint64, hist []uint64, pn, perrs uint64) windowTotals {
		return windowTotals{version: totals{requests: n, errors: errs, hist: hist}, primary: totals{requests: pn, errors: perrs, hist: []uint64{0, 0, 0, 0}}}
	}
	zero := w(0, 0, []uint64{0, 0, 0, 0}, 0, 0)
	for _, test := range []struct {
		name   string
		cur    windowTotals
		open   bool
		result string
		reason string
	}{
		{"healthy", w(200, 1, []uint64{200, 0, 0, 0}, 1000, 0), false, "pass", "200 requests"},
		{"below minRequests", w(99, 99, []uint64{99, 0, 0, 0}, 1000, 0), false, "inconclusive", "99 requests < minRequests 100"},
		{"no requests", zero, false, "inconclusive", "0 requests < minRequests 100"},
		{"breaker open without traffic", zero, true, "fail", "circuit breaker open"},
		{"10% 5xx", w(1000, 100, []uint64{1000, 0, 0, 0}, 1000, 0), false, "fail", "request-success-rate 90% < 99%, error-rate-increase 10% > 1%"},
		{"5xx no worse than the primary", w(1000, 20, []uint64{1000, 0, 0, 0}, 1000, 15), false, "fail", "request-success-rate 98% < 99%"},
		{"slow", w(100, 0, []uint64{0, 0, 100, 0}, 0, 0), false, "fail", "request-duration 995ms > 500ms"},
	} {
		got := judge(s.rules, bounds, zero, test.cur, test.open)
		if got.result != test.result || got.reason != test.reason {
			t.Errorf("%s: %s %q, want %s %q", test.name, got.result, got.reason, test.result, test.reason)
		}
	}
	opened := w(200, 0, []uint64{200, 0, 0, 0}, 0, 0)
	opened.version.opened = 1
	if got := judge(s.rules, bounds, zero, opened, false); got.result != "fail" {
		t.Errorf("a breaker that opened during the window: %v, want fail", got)
	}
}

// testRollout is a rollout driven by the test's clock only: no goroutine.
func testRollout(t *testing.T, cfg *Config) (*rollout, *canary) {
	t.Helper()
	name := "rollout-" + strings.ReplaceAll(t.Name(), "/", "-")
	c, err := newCanary(context.Background(), stableNext, baseConfig("http://127.0.0.1:1", 10), name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseRollout(cfg.Rollout, c)
	if err != nil {
		t.Fatal(err)
	}
	st := getStats(name, defaultBuckets)
	weights := map[string]int{"stable": 90, "canary": 10}
	c.layout(weights, s.version, s.sched.weights[len(s.sched.weights)-1]*numBuckets/100)
	r := &rollout{name: name, s: s, rules: s.rules, st: st, vs: st.version("canary"), ps: st.version("stable"),
		bounds: st.bounds, ranges: layoutRanges(c), live: []context.Context{context.Background()}, redisKey: rolloutRedisKey(name, s.key),
		running: true, wake: make(chan struct{}, 1)}
	c.ramp, c.cut = c.byName["canary"], &r.cut
	return r, c
}

// serveWindow records n requests to the canary with bad of them 5xx, and
// ok requests to the primary.
func serveWindow(r *rollout, n, bad, ok int) {
	for i := 0; i < n; i++ {
		code := 200
		if i < bad {
			code = 503
		}
		record(r.vs, r.vs.sem, code, "GET", int64(time.Millisecond))
	}
	for i := 0; i < ok; i++ {
		record(r.ps, r.ps.sem, 200, "GET", int64(time.Millisecond))
	}
}

func TestRolloutRampsAndRollsBack(t *testing.T) {
	cfg := rolloutConfig(rolloutStart, []int{10, 25, 50, 100}, "1m")
	cfg.Rollout.Threshold = 2
	cfg.Rollout.MinRequests = 50
	r, c := testRollout(t, cfg)
	at := rolloutStart.Add

	r.tick(at(-time.Second))
	if r.state != wire.RolloutWaiting || atomic.LoadInt32(&r.cut) != 0 {
		t.Fatalf("before start: state %d cut %d", r.state, r.cut)
	}
	r.tick(at(0))
	if r.state != wire.RolloutProgressing || r.step != 1 || atomic.LoadInt32(&r.cut) != 1000 {
		t.Fatalf("step 1: state %d step %d cut %d", r.state, r.step, r.cut)
	}
	// Step 1 healthy: pass.
	serveWindow(r, 100, 0, 900)
	r.tick(at(time.Minute))
	if r.counts != [3]uint64{1, 0, 0} || r.step != 2 || atomic.LoadInt32(&r.cut) != 2500 {
		t.Fatalf("after step 1: checks %v step %d cut %d", r.counts, r.step, r.cut)
	}
	// Step 2 fails (10% 5xx); step 3 is inconclusive (too few requests):
	// it neither counts as a failure nor resets the count.
	serveWindow(r, 100, 10, 0)
	r.tick(at(2 * time.Minute))
	serveWindow(r, 10, 5, 0)
	r.tick(at(3 * time.Minute))
	if r.counts != [3]uint64{1, 1, 1} || r.failed != 1 || r.rolledBack {
		t.Fatalf("after steps 2, 3: checks %v failed %d rolled back %v", r.counts, r.failed, r.rolledBack)
	}
	if got := r.recent[1].Reason; got != "request-success-rate 90% < 99%" {
		t.Errorf("reason %q", got)
	}
	// Step 4 fails again: threshold reached, rolled back.
	serveWindow(r, 100, 10, 0)
	r.tick(at(4 * time.Minute))
	if !r.rolledBack || r.state != wire.RolloutRolledBack || atomic.LoadInt32(&r.cut) != 0 {
		t.Fatalf("after step 4: rolled back %v state %d cut %d", r.rolledBack, r.state, r.cut)
	}
	for b := 0; b < numBuckets; b++ {
		if got := owner(c, b); got != c.primary {
			t.Fatalf("rolled back: bucket %d on %s", b, got.name)
		}
	}
	// It stays rolled back, past the schedule's end.
	r.tick(at(time.Hour))
	if r.state != wire.RolloutRolledBack || atomic.LoadInt32(&r.cut) != 0 {
		t.Fatalf("later: state %d cut %d", r.state, r.cut)
	}
	rep := r.report()
	if rep.State != wire.RolloutRolledBack || rep.Checks != [3]uint64{1, 2, 1} || len(rep.Recent) != 4 || rep.StepWeights[3] != 100 {
		t.Errorf("report %+v", rep)
	}
}

func TestRolloutCompletes(t *testing.T) {
	cfg := rolloutConfig(rolloutStart, []int{50, 100}, "10s")
	r, c := testRollout(t, cfg)
	r.tick(rolloutStart)
	serveWindow(r, 100, 0, 100)
	r.tick(rolloutStart.Add(10 * time.Second))
	serveWindow(r, 100, 0, 0)
	r.tick(rolloutStart.Add(20 * time.Second))
	if r.state != wire.RolloutComplete || atomic.LoadInt32(&r.cut) != numBuckets || r.counts != [3]uint64{2, 0, 0} {
		t.Fatalf("state %d cut %d checks %v", r.state, r.cut, r.counts)
	}
	for b := 0; b < numBuckets; b++ {
		if owner(c, b) != c.ramp {
			t.Fatalf("complete at 100: bucket %d not on the canary", b)
		}
	}
	// A complete rollout judges no more windows.
	serveWindow(r, 100, 100, 0)
	r.tick(rolloutStart.Add(time.Hour))
	if r.counts != [3]uint64{2, 0, 0} || r.state != wire.RolloutComplete {
		t.Fatalf("after completion: checks %v state %d", r.counts, r.state)
	}
}

// TestRolloutNeverMovesUsersBack: as the ramp rises, every bucket of the
// version stays on it, and the version's share is the step's weight.
func TestRolloutNeverMovesUsersBack(t *testing.T) {
	cfg := rolloutConfig(rolloutStart, []int{1, 5, 10, 25, 50, 100}, "1m")
	r, c := testRollout(t, cfg)
	prev := map[int]bool{}
	for k := 0; k <= 6; k++ {
		r.tick(rolloutStart.Add(time.Duration(k)*time.Minute - time.Second))
		on := map[int]bool{}
		for b := 0; b < numBuckets; b++ {
			if owner(c, b) == c.ramp {
				on[b] = true
			}
		}
		for b := range prev {
			if !on[b] {
				t.Fatalf("step %d: bucket %d moved back to %s", k, b, owner(c, b).name)
			}
		}
		want := 0
		if k > 0 {
			want = cfg.Rollout.StepWeights[k-1] * numBuckets / 100
		}
		if len(on) != want {
			t.Fatalf("step %d: %d buckets on the canary, want %d", k, len(on), want)
		}
		prev = on
	}
}

// TestRolloutThroughNew: a rollout configured in New serves the step's
// weight to fresh clients on every request path, the report carries it,
// and a reload with the same rollout keeps its state.
func TestRolloutThroughNew(t *testing.T) {
	canary := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("canary")) }))
	defer canary.Close()
	cfg := baseConfig(canary.URL, 0)
	cfg.Rollout.Start = time.Now().Add(-90 * time.Second).UTC().Format(time.RFC3339)
	cfg.Rollout.StepWeights = []int{10, 30, 60}
	cfg.Rollout.Interval = "1m" // step 2: 30%
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := New(ctx, stableNext, cfg, "rollout-through-new")
	if err != nil {
		t.Fatal(err)
	}
	canaries := 0
	const n = 2000
	for i := 0; i < n; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Body.String() == "canary" {
			canaries++
		}
	}
	if canaries < n*25/100 || canaries > n*35/100 {
		t.Errorf("%d of %d fresh clients on the canary at step 2 (30%%)", canaries, n)
	}
	st := getStats("rollout-through-new", defaultBuckets)
	m := snapshot(st)
	if m.Rollout == nil || m.Rollout.Step != 2 || m.Rollout.State != wire.RolloutProgressing {
		t.Fatalf("report: %+v", m.Rollout)
	}
	for _, v := range m.Versions {
		if v.Name == "canary" && v.Weight != 0.3 || v.Name == "stable" && v.Weight != 0.7 {
			t.Errorf("weight of %s = %v", v.Name, v.Weight)
		}
	}
	// A reload with the same rollout takes over the same state.
	rollouts.Lock()
	before := rollouts.m["rollout-through-new"]
	rollouts.Unlock()
	before.mu.Lock()
	before.failed = 1
	before.mu.Unlock()
	if _, err := New(context.Background(), stableNext, cfg, "rollout-through-new"); err != nil {
		t.Fatal(err)
	}
	rollouts.Lock()
	after := rollouts.m["rollout-through-new"]
	rollouts.Unlock()
	if after != before {
		t.Fatal("a reload with the same rollout started a new one")
	}
	// A new start is a new rollout.
	cfg.Rollout.Start = time.Now().Add(-30 * time.Second).UTC().Format(time.RFC3339)
	if _, err := New(context.Background(), stableNext, cfg, "rollout-through-new"); err != nil {
		t.Fatal(err)
	}
	rollouts.Lock()
	fresh := rollouts.m["rollout-through-new"]
	rollouts.Unlock()
	if fresh == before || fresh.failed != 0 {
		t.Fatal("a new start kept the old rollout")
	}
}

// TestRolloutSharedThroughRedis: one replica's rollback reaches the others
// through a real Redis, a replica started later stays rolled back, and a
// replica that cannot read Redis never advances: no users before its first
// read, and the weight holds through an outage.
func TestRolloutSharedThroughRedis(t *testing.T) {
	rd := newTestRedis(t, false)
	cfg := rolloutConfig(rolloutStart, []int{10, 25, 50, 100}, "1m")
	cfg.Rollout.Threshold = 1
	cfg.Rollout.MinRequests = 10
	opts := redisOptions{Endpoints: []string{rd.addr()}, DialTimeout: time.Second, ReadTimeout: 300 * time.Millisecond, WriteTimeout: time.Second}
	replica := func(name string) *rollout {
		r, _ := testRollout(t, cfg)
		r.name = name // the same middleware on every replica
		r.redisKey = rolloutRedisKey(name, r.s.key)
		r.client, r.clientKey = testRedisClient(t, opts), "test"
		return r
	}
	at := rolloutStart.Add
	r1, r2 := replica("shop"), replica("shop")
	r1.tick(at(0))
	r2.tick(at(0))
	if atomic.LoadInt32(&r1.cut) != 1000 || atomic.LoadInt32(&r2.cut) != 1000 {
		t.Fatalf("step 1: cuts %d %d", r1.cut, r2.cut)
	}
	serveWindow(r1, 100, 50, 0) // only r1's traffic fails
	serveWindow(r2, 100, 0, 0)
	r1.tick(at(time.Minute)) // fails, rolls back
	r1.tick(at(time.Minute)) // writes (poll's turn)
	if !r1.rolledBack || r1.unwritten {
		t.Fatalf("r1: rolled back %v, unwritten %v", r1.rolledBack, r1.unwritten)
	}
	r2.tick(at(time.Minute)) // reads r1's rollback before it judges its own window
	if !r2.rolledBack || atomic.LoadInt32(&r2.cut) != 0 {
		t.Fatalf("r2 did not roll back: cut %d", r2.cut)
	}
	// A replica that starts after the rollback stays rolled back.
	r3 := replica("shop")
	r3.tick(at(2 * time.Minute))
	if !r3.rolledBack || atomic.LoadInt32(&r3.cut) != 0 {
		t.Fatalf("restarted replica: rolled back %v cut %d", r3.rolledBack, r3.cut)
	}
	// Another rollout of the same middleware (a new start) starts clean.
	cfg.Rollout.Start = rolloutStart.Add(time.Hour).Format(time.RFC3339)
	r4 := replica("shop")
	r4.tick(at(time.Hour))
	if r4.rolledBack || atomic.LoadInt32(&r4.cut) != 1000 {
		t.Fatalf("a new rollout: rolled back %v cut %d", r4.rolledBack, r4.cut)
	}
	// The next step applies at its boundary, confirmed with Redis then,
	// though the next poll is not due yet.
	r4.tick(at(time.Hour + time.Minute))
	if r4.step != 2 || atomic.LoadInt32(&r4.cut) != 2500 {
		t.Fatalf("step 2: step %d cut %d", r4.step, r4.cut)
	}
	// Redis gone: r4 holds step 2 while the schedule moves on; a replica
	// that never read Redis gives the version no users.
	rd.kill()
	r4.tick(at(time.Hour + 2*time.Minute))
	if r4.step != 2 || atomic.LoadInt32(&r4.cut) != 2500 {
		t.Fatalf("outage: step %d cut %d, want the weight held at step 2", r4.step, r4.cut)
	}
	r5 := replica("shop")
	r5.tick(at(time.Hour + 2*time.Minute))
	if atomic.LoadInt32(&r5.cut) != 0 {
		t.Fatalf("never read Redis: cut %d, want 0", r5.cut)
	}
	// Redis back: the weight follows the schedule again.
	rd.start()
	r4.nextPoll = time.Time{}
	r4.tick(at(time.Hour + 2*time.Minute + time.Second))
	if r4.step != 3 || atomic.LoadInt32(&r4.cut) != 5000 {
		t.Fatalf("Redis back: step %d cut %d", r4.step, r4.cut)
	}
}

// TestRolloutSharesTheRateLimitPool: rollout.redis with the settings of
// rateLimit.redis uses the same client (one pool); other settings another.
func TestRolloutSharesTheRateLimitPool(t *testing.T) {
	cfg := rolloutConfig(time.Now().Add(time.Hour), []int{10, 50}, "1m")
	cfg.RateLimit = rlConfig(10, "1s", 40)
	cfg.RateLimit.Redis.Endpoints = []string{"127.0.0.1:1"}
	cfg.Rollout.Redis.Endpoints = []string{"127.0.0.1:1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := newCanary(ctx, stableNext, cfg, "rollout-pool")
	if err != nil {
		t.Fatal(err)
	}
	rollouts.Lock()
	r := rollouts.m["rollout-pool"]
	rollouts.Unlock()
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if client == nil || client != c.rl.shared.client {
		t.Fatal("rollout.redis and rateLimit.redis with the same settings use two clients")
	}
	cfg.Rollout.Redis.DB = 1
	if _, err := newCanary(ctx, stableNext, cfg, "rollout-pool"); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	other := r.client
	r.mu.Unlock()
	if other == nil || other == c.rl.shared.client {
		t.Fatal("another db shares the rate limit's client")
	}
}

// tick is one turn of both goroutines at now, in order: Redis when due, then
// settle. The tests drive a rollout with it on fixed instants.
func (r *rollout) tick(now time.Time) {
	if !r.alive(now, r.gen) {
		return
	}
	if client, write := r.pollDue(now); client != nil {
		r.sync(client, write, now)
	}
	r.settle(now)
}
