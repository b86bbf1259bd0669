package plugin

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker"
)

func testBreaker(t testing.TB, mutate func(*CircuitBreakerConfig)) *breaker {
	t.Helper()
	cfg := defaultCircuitBreakerConfig()
	mutate(&cfg)
	s, err := newBreakerSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newBreaker(s, "test/v", 0)
}

// do runs one request through b at now with the given outcome.
func do(b *breaker, now int64, outcome int) bool {
	ok, gen, _ := before(b, now)
	if ok {
		after(b, gen, outcome, now)
	}
	return ok
}

func TestBreakerTripsOnConsecutiveFailures(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 3 })
	now := int64(sec)
	do(b, now, outcomeFailure)
	do(b, now, outcomeFailure)
	do(b, now, outcomeSuccess) // resets the run
	do(b, now, outcomeFailure)
	do(b, now, outcomeFailure)
	if b.state != stateClosed {
		t.Fatal("tripped before 3 failures in a row")
	}
	do(b, now, outcomeFailure)
	if b.state != stateOpen {
		t.Fatalf("state %s after 3 failures in a row", stateNames[b.state])
	}
	ok, _, retryIn := before(b, now+10*sec)
	if ok || retryIn != 20*sec {
		t.Errorf("open breaker: ok=%v retryIn=%v, want refused with 20s to the probe", ok, time.Duration(retryIn))
	}
}

func TestBreakerRatioNeedsMinRequests(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.FailureRatio = 0.5; c.MinRequests = 10 })
	now := int64(sec)
	for i := 0; i < 9; i++ {
		do(b, now, outcomeFailure)
	}
	if b.state != stateClosed {
		t.Fatal("tripped on ratio before minRequests")
	}
	do(b, now, outcomeFailure)
	if b.state != stateOpen {
		t.Fatal("did not trip at 10 requests, 100% failures")
	}

	b = testBreaker(t, func(c *CircuitBreakerConfig) { c.FailureRatio = 0.5; c.MinRequests = 10 })
	for i := 0; i < 20; i++ {
		outcome := outcomeSuccess
		if i%3 == 0 {
			outcome = outcomeFailure
		}
		do(b, now, outcome)
	}
	if b.state != stateClosed {
		t.Fatal("tripped at a 35% failure ratio with a 50% threshold")
	}
}

func TestBreakerIntervalResetsCounts(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 3; c.Interval = "10s" })
	do(b, 1*sec, outcomeFailure)
	do(b, 2*sec, outcomeFailure)
	do(b, 12*sec, outcomeFailure) // the window started at 0 has passed: counts were cleared
	if b.state != stateClosed {
		t.Fatal("failures from an old window tripped the breaker")
	}
}

// TestBreakerFirstWindowStartsAtCreation: a breaker made 9s into the
// package's clock counts for a whole interval from then, as gobreaker's
// does from NewCircuitBreaker. When its first window ended interval after
// the epoch, a request let through at 9.5s and failing at 10.5s was dropped
// as of an old window (failed CI twice, in tests that ran 10s into yaegi
// test).
func TestBreakerFirstWindowStartsAtCreation(t *testing.T) {
	cfg := defaultCircuitBreakerConfig()
	cfg.ConsecutiveFailures, cfg.Interval = 1, "10s"
	s, err := newBreakerSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := newBreaker(s, "test/v", 9*sec)
	ok, gen, _ := before(b, 9*sec+sec/2)
	if !ok {
		t.Fatal("a new breaker refused a request")
	}
	after(b, gen, outcomeFailure, 10*sec+sec/2)
	if b.state != stateOpen {
		t.Fatalf("state %s: the failure of a request let through 0.5s after the breaker was made was dropped", stateNames[b.state])
	}
	if b := newBreaker(s, "test/v", 9*sec); !do(b, 18*sec, outcomeSuccess) || b.generation != 1 {
		t.Errorf("generation %d at 18s: the first window, [9s, 19s], ended early", b.generation)
	}
}

// TestInlineStepsRespectTheWindow: the request path's inline steps (enter
// and leave) hand over to before and after at the end of a counting window,
// so an outcome from the old window is discarded, as gobreaker does.
func TestInlineStepsRespectTheWindow(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 2; c.Interval = "10s" })
	path := &canary{bs: b.s, okCode: http.StatusOK}
	do(b, 1*sec, outcomeSuccess) // in the first window, [0s, 10s]
	gen := enter(b, b.sem, 2*sec, noop)
	if gen == 0 {
		t.Fatal("enter refused a closed breaker inside its window")
	}
	do(b, 3*sec, outcomeFailure)
	if enter(b, b.sem, 12*sec, noop) != 0 {
		t.Fatal("enter let a request through after the window ended: before must start a new one")
	}
	// The request that began at 2s fails at 12s, after the window ended:
	// with the failure at 3s it would trip the breaker, but it is discarded.
	leaveRef(path, b, gen, true, http.StatusInternalServerError, 2*sec, 12*sec)
	if b.state != stateClosed || b.consecFailures != 0 {
		t.Fatalf("an outcome from an ended window counted: state %s, %d failures in a row", stateNames[b.state], b.consecFailures)
	}
	// A success inside the window ends a run of failures.
	gen = enter(b, b.sem, 13*sec, noop)
	do(b, 13*sec, outcomeFailure)
	leaveRef(path, b, gen, true, http.StatusOK, 13*sec, 14*sec)
	do(b, 15*sec, outcomeFailure)
	if b.state != stateClosed {
		t.Fatal("failures on both sides of a success tripped a consecutive-failures breaker")
	}
}

func TestBreakerOpenHalfOpenClosed(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) {
		c.ConsecutiveFailures = 1
		c.OpenDuration = "30s"
		c.HalfOpenRequests = 2
	})
	do(b, sec, outcomeFailure)
	if do(b, 30*sec, outcomeSuccess) {
		t.Fatal("open breaker let a request through before openDuration")
	}
	// After openDuration: half-open, two probes.
	ok1, g1, _ := before(b, 32*sec)
	ok2, g2, _ := before(b, 32*sec)
	ok3, _, _ := before(b, 32*sec)
	if !ok1 || !ok2 || ok3 || b.state != stateHalfOpen {
		t.Fatalf("half-open: probes %v %v %v, state %s", ok1, ok2, ok3, stateNames[b.state])
	}
	after(b, g1, outcomeSuccess, 32*sec)
	if b.state != stateHalfOpen {
		t.Fatal("closed after one of two probes")
	}
	after(b, g2, outcomeSuccess, 32*sec)
	if b.state != stateClosed {
		t.Fatalf("state %s after two successful probes", stateNames[b.state])
	}
	if _, tr := breakerSnapshot(b, 32*sec); tr != [3]uint64{1, 1, 1} {
		t.Errorf("transitions to closed/half-open/open: %v", tr)
	}
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.OpenDuration = "5s" })
	do(b, sec, outcomeFailure)
	if !do(b, 7*sec, outcomeFailure) {
		t.Fatal("no probe after openDuration")
	}
	if b.state != stateOpen {
		t.Fatalf("failed probe left the breaker %s", stateNames[b.state])
	}
	if ok, _, retryIn := before(b, 8*sec); ok || retryIn != 4*sec {
		t.Errorf("reopened: ok=%v retryIn=%v, want a fresh 5s from the failed probe", ok, time.Duration(retryIn))
	}
}

func TestBreakerGenerationRule(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 2 })
	_, slowGen, _ := before(b, sec) // a slow request starts
	do(b, sec, outcomeFailure)
	do(b, sec, outcomeFailure) // trips: new generation
	// The slow request ends after the breaker opened and half-opened again.
	ok, probeGen, _ := before(b, 40*sec)
	if !ok {
		t.Fatal("no probe")
	}
	after(b, slowGen, outcomeSuccess, 40*sec)
	if b.state != stateHalfOpen {
		t.Fatal("an outcome from an older generation closed the breaker")
	}
	after(b, probeGen, outcomeSuccess, 40*sec)
	if b.state != stateClosed {
		t.Fatal("the probe's own success did not close the breaker")
	}
}

func TestBreakerNeutralOutcomesDoNotCount(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.FailureRatio = 0.5; c.MinRequests = 4; c.ConsecutiveFailures = 2 })
	for i := 0; i < 10; i++ {
		do(b, sec, outcomeNeutral)
	}
	do(b, sec, outcomeFailure)
	do(b, sec, outcomeSuccess)
	if b.requests != 2 || b.state != stateClosed {
		t.Fatalf("neutral outcomes counted: %d requests, state %s", b.requests, stateNames[b.state])
	}
	// A neutral probe gives its half-open slot back.
	b = testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.OpenDuration = "1s" })
	do(b, sec, outcomeFailure)
	do(b, 3*sec, outcomeNeutral)
	if !do(b, 3*sec, outcomeSuccess) || b.state != stateClosed {
		t.Fatalf("after a neutral probe: state %s", stateNames[b.state])
	}
}

// TestBreakerMatchesGobreaker drives gobreaker v1 (TwoStepCircuitBreaker) and
// the breaker with the same interleaved begin/end sequences. gobreaker reads
// the wall clock, so the sequences use a 1ns open duration (the breaker
// half-opens on the next call, as gobreaker does) and no counting window.
// Each step goes at random through before/after or through the request
// path's inline steps (enter, leave), which must decide the same.
func TestBreakerMatchesGobreaker(t *testing.T) {
	seqs := 200
	if testing.Short() {
		seqs = 20
	}
	rng := rand.New(rand.NewSource(7))
	for s := 0; s < seqs; s++ {
		consec := uint32(1 + rng.Intn(4))
		ratio := []float64{0, 0.3, 0.5}[rng.Intn(3)]
		minReq := uint32(rng.Intn(6))
		maxReq := uint32(1 + rng.Intn(3))
		b := testBreaker(t, func(c *CircuitBreakerConfig) {
			c.ConsecutiveFailures = int(consec)
			c.FailureRatio = ratio
			c.MinRequests = int(minReq)
			c.HalfOpenRequests = int(maxReq)
			c.Interval = "0"
			c.OpenDuration = "1ns"
		})
		ref := gobreaker.NewTwoStepCircuitBreaker(gobreaker.Settings{
			MaxRequests: maxReq,
			Timeout:     time.Nanosecond,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= consec || ratio > 0 && c.Requests >= minReq && float64(c.TotalFailures) >= ratio*float64(c.Requests)
			},
		})
		type pending struct {
			gen     uint64
			entered bool // enter let it through (else before)
			done    func(bool)
		}
		var inflight []pending
		now := int64(sec)
		for i := 0; i < 200; i++ {
			now += 10 // later than an open breaker's 1ns expiry, as gobreaker's clock is
			// Reading the state advances time-based transitions in both.
			state, _ := breakerSnapshot(b, now)
			if got, want := stateNames[state], strings.ReplaceAll(ref.State().String(), "-", "_"); got != want {
				t.Fatalf("seq %d step %d: state %s, gobreaker %s", s, i, got, want)
			}
			path := &canary{bs: b.s, okCode: http.StatusOK}
			if len(inflight) == 0 || rng.Intn(2) == 0 {
				var ok, entered bool
				var gen uint64
				if rng.Intn(2) == 0 {
					ok, gen, _ = before(b, now)
				} else if gen = enter(b, b.sem, now, noop); gen != 0 {
					ok, entered = true, true
				} else {
					ok, gen, _ = before(b, now)
				}
				done, err := ref.Allow()
				if ok != (err == nil) {
					t.Fatalf("seq %d step %d: breaker allows %v, gobreaker %v (state %s)", s, i, ok, err, stateNames[state])
				}
				if ok {
					inflight = append(inflight, pending{gen, entered, done})
				}
				continue
			}
			j := rng.Intn(len(inflight))
			p := inflight[j]
			inflight = append(inflight[:j], inflight[j+1:]...)
			success := rng.Intn(3) != 0
			outcome := outcomeFailure
			if success {
				outcome = outcomeSuccess
			}
			switch {
			case rng.Intn(2) == 0:
				after(b, p.gen, outcome, now)
			case success:
				leaveRef(path, b, p.gen, p.entered, http.StatusOK, now-5, now)
			default:
				leaveRef(path, b, p.gen, p.entered, http.StatusInternalServerError, now-5, now)
			}
			p.done(success)
		}
	}
}

func TestBreakerBadConfig(t *testing.T) {
	testCases := []struct {
		desc    string
		mutate  func(*CircuitBreakerConfig)
		wantErr string
	}{
		{desc: "ratio above 1", mutate: func(c *CircuitBreakerConfig) { c.FailureRatio = 1.5 }, wantErr: "circuitBreaker.failureRatio"},
		{desc: "bad codes", mutate: func(c *CircuitBreakerConfig) { c.FailureStatusCodes = "500-abc" }, wantErr: "circuitBreaker.failureStatusCodes"},
		{desc: "reversed range", mutate: func(c *CircuitBreakerConfig) { c.FailureStatusCodes = "599-500" }, wantErr: "circuitBreaker.failureStatusCodes"},
		{desc: "bad interval", mutate: func(c *CircuitBreakerConfig) { c.Interval = "often" }, wantErr: "circuitBreaker.interval"},
		{desc: "zero openDuration", mutate: func(c *CircuitBreakerConfig) { c.OpenDuration = "0s" }, wantErr: "circuitBreaker.openDuration"},
		{desc: "bad slowThreshold", mutate: func(c *CircuitBreakerConfig) { c.SlowThreshold = "slow" }, wantErr: "circuitBreaker.slowThreshold"},
		{desc: "bad responseCode", mutate: func(c *CircuitBreakerConfig) { c.ResponseCode = 200 }, wantErr: "circuitBreaker.responseCode"},
		{desc: "negative consecutive", mutate: func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = -1 }, wantErr: "circuitBreaker.consecutiveFailures"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := defaultCircuitBreakerConfig()
			test.mutate(&cfg)
			if _, err := newBreakerSettings(cfg); err == nil || !strings.Contains(err.Error(), test.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, test.wantErr)
			}
		})
	}
}

// switchable is a canary backend whose failure mode can be changed.
type switchable struct {
	mode     atomic.Int32 // 0 ok, 1 500s
	requests atomic.Int64
}

func (s *switchable) ServeHTTP(rw http.ResponseWriter, _ *http.Request) {
	s.requests.Add(1)
	if s.mode.Load() == 1 {
		rw.WriteHeader(http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(rw, "canary")
}

var breakerSeq int

func breakerCanary(t *testing.T, canaryURL string, mutate func(*Config)) *canary {
	t.Helper()
	cfg := baseConfig(canaryURL, 100)
	cfg.CircuitBreaker.ConsecutiveFailures = 2
	cfg.CircuitBreaker.OpenDuration = "1h"
	mutate(cfg)
	breakerSeq++
	c, err := newCanary(context.Background(), stableNext, cfg, fmt.Sprintf("cb-%d@file", breakerSeq))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBreakerFallbackToPrimary(t *testing.T) {
	backend := &switchable{}
	srv := httptest.NewServer(backend)
	t.Cleanup(srv.Close)
	c := breakerCanary(t, srv.URL, func(*Config) {})
	_, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	ck := stickyCookie(res, "edgecanary")
	get := func() (string, *http.Response) {
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.AddCookie(ck)
		return serve(c, req)
	}
	if body, _ := get(); body != "canary" {
		t.Fatalf("before failures: %q", body)
	}
	backend.mode.Store(1)
	for i := 0; i < 2; i++ {
		if _, res := get(); res.StatusCode != http.StatusInternalServerError {
			t.Fatalf("failure %d: %d", i, res.StatusCode)
		}
	}
	before := backend.requests.Load()
	body, res := get()
	if body != "stable" || res.StatusCode != http.StatusOK || res.Header.Get("Edgecanary-Fallback") != "canary" {
		t.Fatalf("after the trip: %d %q fallback %q", res.StatusCode, body, res.Header.Get("Edgecanary-Fallback"))
	}
	if backend.requests.Load() != before {
		t.Error("the open canary still received a request")
	}
	if stickyCookie(res, "edgecanary") != nil {
		t.Error("fallback changed the user's cookie")
	}
}

func TestBreakerNoFallbackRefuses(t *testing.T) {
	backend := &switchable{}
	backend.mode.Store(1)
	srv := httptest.NewServer(backend)
	t.Cleanup(srv.Close)
	c := breakerCanary(t, srv.URL, func(cfg *Config) {
		cfg.CircuitBreaker.Fallback = false
		cfg.CircuitBreaker.ResponseCode = 502
	})
	for i := 0; i < 2; i++ {
		serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	}
	n := backend.requests.Load()
	_, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if res.StatusCode != 502 || res.Header.Get("Retry-After") != "3600" {
		t.Fatalf("refusal: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if backend.requests.Load() != n {
		t.Error("a refused request reached the backend")
	}
}

func TestBreakerPrimaryOutage(t *testing.T) {
	calls := 0
	failing := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		calls++
		rw.WriteHeader(http.StatusServiceUnavailable)
	})
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.CircuitBreaker.ConsecutiveFailures = 3
	cfg.CircuitBreaker.ResponseCode = 503
	breakerSeq++ // breakers are kept by middleware name for the process: a new name for each run (-count)
	h, err := New(context.Background(), failing, cfg, fmt.Sprintf("cb-primary-%d@file", breakerSeq))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://x/", nil))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://x/", nil))
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "30" || calls != 3 {
		t.Fatalf("primary outage: %d Retry-After %q, backend calls %d", rec.Code, rec.Header().Get("Retry-After"), calls)
	}
}

func TestBreakerRateLimitedRequestsDoNotCount(t *testing.T) {
	backend := &switchable{}
	backend.mode.Store(1)
	srv := httptest.NewServer(backend)
	t.Cleanup(srv.Close)
	c := breakerCanary(t, srv.URL, func(cfg *Config) {
		cfg.RateLimit = rlConfig(1, "1h", 1)
		cfg.CircuitBreaker.ConsecutiveFailures = 2
	})
	codes := []int{}
	for i := 0; i < 5; i++ {
		_, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
		codes = append(codes, res.StatusCode)
	}
	if fmt.Sprint(codes) != "[500 429 429 429 429]" {
		t.Fatalf("codes %v", codes)
	}
	if c.routes[0].br.state != stateClosed || c.routes[0].br.failures != 1 {
		t.Errorf("429s counted by the breaker: state %s, failures %d", stateNames[c.routes[0].br.state], c.routes[0].br.failures)
	}
}

func TestBreakerSlowThreshold(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		time.Sleep(30 * time.Millisecond)
		_, _ = io.WriteString(rw, "canary")
	}))
	t.Cleanup(slow.Close)
	c := breakerCanary(t, slow.URL, func(cfg *Config) { cfg.CircuitBreaker.SlowThreshold = "10ms" })
	for i := 0; i < 2; i++ {
		serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	}
	body, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if body != "stable" || res.Header.Get("Edgecanary-Fallback") != "canary" {
		t.Fatalf("slow canary not tripped: %q", body)
	}
}

func TestBreakerSurvivesReload(t *testing.T) {
	backend := &switchable{}
	backend.mode.Store(1)
	srv := httptest.NewServer(backend)
	t.Cleanup(srv.Close)
	cfg := baseConfig(srv.URL, 100)
	cfg.CircuitBreaker.ConsecutiveFailures = 2
	h1, _ := New(context.Background(), stableNext, cfg, "cb-reload@file")
	for i := 0; i < 2; i++ {
		serve(h1, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	}
	h2, _ := New(context.Background(), stableNext, cfg, "cb-reload@file")
	if body, _ := serve(h2, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)); body != "stable" {
		t.Fatalf("after a reload with the same settings the breaker was closed again: %q", body)
	}
	cfg.CircuitBreaker.ConsecutiveFailures = 5
	h3, _ := New(context.Background(), stableNext, cfg, "cb-reload@file")
	if _, res := serve(h3, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)); res.StatusCode != 500 {
		t.Fatalf("changed settings kept the open breaker: %d", res.StatusCode)
	}
}

// leaveRef is serveObserved's end for a request sent at sent and answered
// with code at end: leave when enter let it through, then leaveSlow.
func leaveRef(c *canary, b *breaker, gen uint64, entered bool, code int, sent, end int64) {
	w := &statusWriter{code: code, c: c, r: &route{br: b}, gen: gen}
	if entered {
		leave(b, b.sem, gen, code, c.okCode, func() { leaveSlow(w, sent, end) })
	} else {
		leaveSlow(w, sent, end)
	}
}
