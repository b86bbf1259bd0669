package plugin

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pathSkew is added to the plugin's clock in the sequences with
// slowThreshold (see slowClock): a slow answer moves it on, so a response is
// slow by the test's decision, whatever the machine's load.
var pathSkew atomic.Int64

// slowClock is the plugin's clock in the sequences with slowThreshold: the
// real one plus pathSkew.
func slowClock(t time.Time) time.Duration { return time.Since(t) + time.Duration(pathSkew.Load()) }

// pathBackend answers by the request's path, the same way for both canaries
// of a comparison: /fail 500 from the canary only, /fail-all 500 from both,
// /missing 404, /slow 3 s late on slowClock (past the slowThreshold of 2 s,
// which no stall of the machine reaches), /cut
// writes the headers then breaks the body (the
// proxy, or the handler itself, panics with http.ErrAbortHandler), and a
// request whose client has gone is aborted.
//
// A request to /hold/<id> waits until the test closes held[id]: requests in
// flight while others change the breaker's state.
func pathBackend(name string, held *sync.Map) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.Context().Err() != nil {
			panic(http.ErrAbortHandler)
		}
		if strings.HasPrefix(req.URL.Path, "/hold/") {
			heldEntered.Store(req.Header.Get("X-Test-Canary")+req.URL.Path, true)
			release, _ := held.LoadOrStore(req.URL.Path, make(chan struct{}))
			<-release.(chan struct{})
			if strings.Contains(req.URL.Path, "/slow=true/") {
				// Held past slowThreshold on both paths, whatever the
				// test's timing: the two canaries' requests are held for
				// different times, and one may otherwise be judged slow
				// and the other not.
				pathSkew.Add(int64(2500 * time.Millisecond))
			}
		}
		switch req.URL.Path {
		case "/fail":
			if name == "canary" {
				rw.WriteHeader(http.StatusInternalServerError)
			}
		case "/fail-all":
			rw.WriteHeader(http.StatusInternalServerError)
		case "/missing":
			rw.WriteHeader(http.StatusNotFound)
		case "/slow":
			pathSkew.Add(int64(3 * time.Second))
		case "/cut":
			rw.Header().Set("Content-Length", "100")
			rw.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(rw, "partial")
			if hj, ok := rw.(http.Hijacker); ok {
				conn, _, _ := hj.Hijack()
				_ = conn.Close()
				return
			}
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(rw, name)
	})
}

// pathConfig is a configuration served by the generated path key (its
// features' initials), slowThreshold on or off. A key with D (the limit
// shared through Redis) gets a redis-server of its own, for t.
func pathConfig(t *testing.T, key, canaryURL string, slow bool) *Config {
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}}
	if strings.Contains(key, "P") {
		cfg = baseConfig(canaryURL, 50)
	}
	cfg.Override.TrustedIPs = []string{"192.0.2.0/24"}
	if strings.Contains(key, "L") {
		cfg.RateLimit = rlConfig(1, "1h", 20) // twenty per peer, then 429s, whatever the timing
		// With a window this long the RateLimit field has no table, and a
		// path with the field on leaves every decision to allowSlow: off,
		// the inline step decides (TestLimitedPathsMatchReserve holds the
		// field, with the table).
		cfg.RateLimit.Headers = false
	}
	if strings.Contains(key, "D") {
		// Forty per peer in Redis, an hour apart: leases of 10 tokens
		// (burst/4) that the inline lease step spends, and 429s once the
		// store's 30 (burst - the reserve) are taken, whatever the timing.
		cfg.RateLimit = rlConfig(1, "1h", 40)
		cfg.RateLimit.Headers = false
		cfg.RateLimit.Redis = defaultRedisConfig()
		cfg.RateLimit.Redis.Endpoints = []string{newTestRedis(t, false).addr()}
	}
	if strings.Contains(key, "B") {
		cfg.CircuitBreaker.ConsecutiveFailures = 3
		cfg.CircuitBreaker.FailureRatio = 0.6
		cfg.CircuitBreaker.MinRequests = 8
		cfg.CircuitBreaker.Interval = "1h"     // no window ends between the two canaries' turns
		cfg.CircuitBreaker.OpenDuration = "1h" // the test moves breakers to half-open itself
		cfg.CircuitBreaker.HalfOpenRequests = 3
		if slow {
			cfg.CircuitBreaker.SlowThreshold = "2s" // see slowClock
		}
	}
	if strings.Contains(key, "S") {
		cfg.Sidecar.Address = "http://127.0.0.1:1" // nothing listens: reporting fails quietly
		cfg.Sidecar.Interval = "1h"
	}
	if strings.Contains(key, "R") {
		// Mid-ramp for the whole test: step 2 (30%) of hour-long steps, so
		// buckets below the cut go to the canary and the rest to stable.
		cfg.Rollout.Start = time.Now().Add(-90 * time.Minute).UTC().Format(time.RFC3339)
		cfg.Rollout.StepWeights = []int{10, 30, 60}
		cfg.Rollout.Interval = "1h"
	}
	return cfg
}

// pathBackends starts the differential tests' canary backend (closed when
// the test ends) and returns the registry of held requests, the canary's
// server and the stable handler.
func pathBackends(t *testing.T) (*sync.Map, *httptest.Server, http.Handler) {
	held := &sync.Map{}
	canarySrv := httptest.NewServer(pathBackend("canary", held))
	t.Cleanup(canarySrv.Close)
	return held, canarySrv, pathBackend("stable", held)
}

// pathKeys lists the generated paths' keys, sorted; with shared, also the
// paths of the limit shared through Redis (D).
func pathKeys(shared bool) []string {
	keys := make([]string, 0, len(generatedPaths))
	for k := range generatedPaths {
		if shared || !strings.Contains(k, "D") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// TestGeneratedPathsMatchReference drives every generated request path and
// the reference path, built from the same configuration, with the same
// random sequence of requests: returning, new and overriding clients, peers
// that run out of their limit (429s), versions that fail until their breaker
// opens and their users fall back, breakers moved to half-open with three
// probes, slow answers against slowThreshold, bodies cut by the backend and
// clients that have gone. Every answer (status, body, headers) and, at the
// end, every breaker, limiter count and reported figure must be the same.
func TestGeneratedPathsMatchReference(t *testing.T) {
	held, canarySrv, stable := pathBackends(t)
	keys := pathKeys(true)
	seeds := 3
	if testing.Short() {
		seeds = 1
	}
	prevIntn := randIntn
	defer func() { randIntn = prevIntn }()
	covered := map[string]bool{}
	for _, key := range keys {
		for _, slow := range []bool{false, true} {
			if slow && (!strings.Contains(key, "B") || raceDetector || interpreted) {
				continue // the compiled run without -race compares the sequences with slowThreshold (see raceDetector)
			}
			for seed := int64(1); seed <= int64(seeds); seed++ {
				name := fmt.Sprintf("%s/slow=%v/seed=%d", key, slow, seed)
				t.Run(name, func(t *testing.T) {
					cfg := pathConfig(t, key, canarySrv.URL, slow)
					if slow {
						prev := clock
						clock = slowClock // before the paths, which capture it
						defer func() { clock = prev }()
					}
					gen := pathCanary(t, stable, cfg, "gen-"+strings.ReplaceAll(name, "/", "-")+"@file", true)
					ref := pathCanary(t, stable, cfg, "ref-"+strings.ReplaceAll(name, "/", "-")+"@file", false)
					if got := pathKey(gen); got != key {
						t.Fatalf("the configuration is served by %q, want %q", got, key)
					}
					reached := compareRandomSequence(t, gen, ref, seed, slow, held)
					t.Logf("reached %v", reached)
					for what := range reached {
						covered[key+" "+what] = true
					}
				})
			}
		}
	}
	// The sequences must reach what they claim to test.
	for _, want := range []string{"LPBS 429", "LPBS fallback", "LPBS half-open", "LPBS refused", "LPBS 499", "LPBS 502", "LPBS override",
		"LPBS slow", "LPBS held", "B half-open", "B held", "PB fallback", "LS 429", "P override", "L 429",
		"LD 429", "LD leased", "LPBSD 429", "LPBSD leased", "LPBSD held", "LPSRD 429"} {
		if !covered[want] && !raceDetector && !interpreted { // without the slow sequences, less is reached: the compiled run checks
			t.Errorf("no sequence reached %q", want)
		}
	}
}

// compareRandomSequence sends the same random requests to gen and ref, in
// turns, and compares them; it returns what the sequence reached.
func compareRandomSequence(t *testing.T, gen, ref *canary, seed int64, slow bool, held *sync.Map) map[string]bool {
	t.Helper()
	h := fnv.New64a()
	_, _ = h.Write([]byte(t.Name()))
	rng := rand.New(rand.NewSource(seed ^ int64(h.Sum64())))
	reached := map[string]bool{}
	type step struct {
		path, override, peer string
		bucket               int // -1: a new client
		gone, probe          bool
	}
	// A held request runs in its own goroutine on both paths; it is released
	// (both at once, then waited for) at a later step.
	type inFlight struct {
		id       string
		gen, ref chan string
	}
	var pending []inFlight
	t.Cleanup(func() { // a failed comparison leaves requests held: release them
		for _, p := range pending {
			release, _ := held.LoadOrStore(p.id, make(chan struct{}))
			close(release.(chan struct{}))
		}
	})
	n := 300
	for i := 0; i < n; i++ {
		if len(pending) > 0 && rng.Intn(4) == 0 || i == n-1 && len(pending) > 0 {
			j := rng.Intn(len(pending))
			p := pending[j]
			pending = append(pending[:j], pending[j+1:]...)
			release, _ := held.LoadOrStore(p.id, make(chan struct{}))
			close(release.(chan struct{}))
			if a, b := <-p.gen, <-p.ref; a != b {
				t.Fatalf("held request %s:\ngenerated %s\nreference %s", p.id, a, b)
			}
			reached["held"] = true
			i--
			continue
		}
		s := step{path: "/", bucket: -1, peer: "192.0.2." + strconv.Itoa(rng.Intn(12)) + ":" + strconv.Itoa(1000+rng.Intn(3))}
		switch x := rng.Intn(100); {
		case x < 22:
			s.path = "/fail"
		case x < 27:
			s.path = "/fail-all"
		case x < 30:
			s.path = "/missing"
		case x < 33 && slow:
			s.path = "/slow"
		case x < 36:
			s.path = "/cut"
		case x < 38:
			s.gone = true
		}
		if rng.Intn(3) > 0 {
			s.bucket = []int{0, numBuckets - 1}[rng.Intn(2)] // a returning canary or stable user
		}
		if rng.Intn(8) == 0 {
			s.override = []string{"always", "never"}[rng.Intn(2)]
		}
		s.probe = rng.Intn(15) == 0
		fresh := rng.Intn(numBuckets)
		randIntn = func(n int) int { return fresh }
		if rng.Intn(12) == 0 && len(pending) < 4 {
			id := fmt.Sprintf("/hold/%s/%d", t.Name(), i)
			p := inFlight{id: id, gen: make(chan string, 1), ref: make(chan string, 1)}
			for _, c := range []struct {
				c   *canary
				out chan string
			}{{gen, p.gen}, {ref, p.ref}} {
				c := c
				go func() { c.out <- pathAnswer(t, c.c, id, s.override, s.peer, s.bucket, false, false) }()
				waitHeld(t, c.c, id)
				settleLeases(t, c.c)
			}
			pending = append(pending, p)
			continue
		}
		a := pathAnswer(t, gen, s.path, s.override, s.peer, s.bucket, s.gone, s.probe)
		settleLeases(t, gen)
		b := pathAnswer(t, ref, s.path, s.override, s.peer, s.bucket, s.gone, s.probe)
		settleLeases(t, ref)
		if a != b {
			t.Fatalf("request %d %+v:\ngenerated %s\nreference %s", i, s, a, b)
		}
		for what, sign := range map[string]string{"429": "429 ", "fallback": `fallback="canary"`, "refused": "503 ", "499": "code=499", "502": "code=502", "half-open": "half-open", "slow": "slow"} {
			if strings.Contains(a, sign) {
				reached[what] = true
			}
		}
		if s.override != "" {
			reached["override"] = true
		}
	}
	for _, name := range []string{"stable", "canary"} {
		ra, rb := gen.byName[name], ref.byName[name]
		if ra == nil || ra.br == nil {
			continue
		}
		if a, b := breakerFigures(ra.br), breakerFigures(rb.br); a != b {
			t.Errorf("%s breaker: generated %s, reference %s", name, a, b)
		}
	}
	if gen.rl != nil {
		if a, b := gen.rl.counters, ref.rl.counters; a.rejected != b.rejected || a.dryRejected != b.dryRejected {
			t.Errorf("limiter: generated %d rejected, reference %d", a.rejected, b.rejected)
		}
		// With the limit shared through Redis, the same leases were taken:
		// the store calls followed the same requests.
		if a, b := atomic.LoadUint64(&gen.rl.counters.leased), atomic.LoadUint64(&ref.rl.counters.leased); a != b {
			t.Errorf("limiter: generated %d tokens leased, reference %d", a, b)
		} else if a > 0 {
			reached["leased"] = true
		}
	}
	if gen.st != nil {
		a, b := snapshot(gen.st), snapshot(ref.st)
		for i := range a.Versions {
			va, vb := a.Versions[i], b.Versions[i]
			if fmt.Sprint(va.Requests) != fmt.Sprint(vb.Requests) || total(va.Hist) != total(vb.Hist) {
				t.Errorf("%s: generated counts %v (%d timed), reference %v (%d timed)", va.Name, va.Requests, total(va.Hist), vb.Requests, total(vb.Hist))
			}
		}
		if fmt.Sprint(a.Fallbacks) != fmt.Sprint(b.Fallbacks) {
			t.Errorf("fallbacks: generated %v, reference %v", a.Fallbacks, b.Fallbacks)
		}
	}
	return reached
}

// settleLeases waits until no store call of c's shared limit is in flight,
// so that a lease refreshed in the background is stored before the next
// request, on both paths alike.
func settleLeases(t *testing.T, c *canary) {
	t.Helper()
	if c.rl == nil || c.rl.shared == nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := false
		c.rl.sem <- struct{}{}
		for _, b := range c.rl.buckets {
			if b.fetching != nil {
				busy = true
			}
		}
		<-c.rl.sem
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a store call did not end within 5s")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// waitHeld waits until c's held request id has entered the plugin's
// version: its breaker step is done, only the answer is pending.
func waitHeld(t *testing.T, c *canary, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := heldEntered.Load(c.name + id); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("held request %s did not reach a version", id)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// heldEntered holds, by canary name and path, the held requests that reached
// a version (or were answered before: a 429, a refusal).
var heldEntered sync.Map

func total(h []uint64) uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	return n
}

func breakerFigures(b *breaker) string {
	b.sem <- struct{}{}
	defer func() { <-b.sem }()
	return fmt.Sprintf("%s gen %d requests %d failures %d consecutive %d/%d", stateNames[b.state], b.generation, b.requests, b.failures,
		b.consecFailures, b.consecSuccesses)
}

// pathAnswer sends one request to c and describes what happened. With probe,
// every open breaker of c reaches its probe time first. Retry-After counts
// only as present: its whole seconds depend on when each canary's bucket or
// breaker started, which differ by the turns of the test.
func pathAnswer(t *testing.T, c *canary, path, override, peer string, bucket int, gone, probe bool) string {
	t.Helper()
	var states []string
	for _, r := range c.routes {
		if r.br == nil {
			continue
		}
		b := r.br
		b.sem <- struct{}{}
		if probe && b.state == stateOpen {
			b.expiry = int64(clock(epoch)) - 1
		}
		if b.state == stateHalfOpen {
			states = append(states, r.name+" half-open")
		}
		<-b.sem
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if gone {
		cancel()
	}
	req := httptest.NewRequest(http.MethodGet, "http://shop.test"+path, nil).WithContext(ctx)
	req.RemoteAddr = peer
	if bucket >= 0 && c.signed != nil {
		req.AddCookie(&http.Cookie{Name: c.cookieName, Value: c.signed.values[bucket]})
	}
	if override != "" {
		req.Header.Set("X-Canary", override)
	}
	req.Header.Set("X-Test-Canary", c.name)
	rec := httptest.NewRecorder()
	p := serveRecovering(c, rec, req)
	heldEntered.Store(c.name+path, true) // answered without reaching a version
	// Yaegi recovers a panic of interpreted code wrapped: compare the text.
	if p != nil && fmt.Sprint(p) != http.ErrAbortHandler.Error() {
		t.Fatalf("panic: %v", p)
	}
	codes := ""
	for _, r := range c.routes {
		if r.vs != nil {
			r.vs.sem <- struct{}{}
			for _, code := range []int{499, 502} {
				if r.vs.counts[code<<4|methodIndex["GET"]] > 0 {
					codes += fmt.Sprintf(" %s code=%d:%d", r.name, code, r.vs.counts[code<<4|methodIndex["GET"]])
				}
			}
			<-r.vs.sem
		}
	}
	hd := rec.Header()
	body := rec.Body.String()
	if path == "/slow" {
		states = append(states, "slow")
	}
	return strings.ReplaceAll(fmt.Sprintf("%d %q panic=%v fallback=%q rl=%q policy=%q retry=%v cookie=%v %v%s", rec.Code, body, p != nil,
		hd.Get("Edgecanary-Fallback"), hd.Get("Ratelimit"), hd.Get("Ratelimit-Policy"), hd.Get("Retry-After") != "", hd["Set-Cookie"] != nil, states, codes),
		c.name, "NAME")
}
