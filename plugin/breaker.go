package plugin

import (
	"errors"
	"fmt"
	"log"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CircuitBreakerConfig trips a version's breaker on failures. Off unless
// ConsecutiveFailures or FailureRatio is set.
type CircuitBreakerConfig struct {
	// ConsecutiveFailures trips after this many failures in a row. 0: off.
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty"`
	// FailureRatio trips when failures/requests reaches it within Interval,
	// once MinRequests were seen. 0: off.
	FailureRatio float64 `json:"failureRatio,omitempty"`
	// MinRequests needed before FailureRatio applies. Default 20.
	MinRequests int `json:"minRequests,omitempty"`
	// Interval is the counting window while closed. Default 10s. 0: never reset.
	Interval string `json:"interval,omitempty"`
	// OpenDuration is how long the breaker stays open before probes. Default 30s.
	OpenDuration string `json:"openDuration,omitempty"`
	// HalfOpenRequests is the number of probes let through while half-open;
	// that many successes in a row close the breaker. Default 1.
	HalfOpenRequests int `json:"halfOpenRequests,omitempty"`
	// FailureStatusCodes are ranges and single codes, comma-separated.
	// Default "500-599". Transport errors and timeouts always count.
	FailureStatusCodes string `json:"failureStatusCodes,omitempty"`
	// SlowThreshold: a response slower than this is a failure. Empty: off.
	SlowThreshold string `json:"slowThreshold,omitempty"`
	// ResponseCode is what the client gets when no version can serve it. Default 503.
	ResponseCode int `json:"responseCode,omitempty"`
	// Fallback serves an open non-primary version's users with the primary. Default true.
	Fallback bool `json:"fallback,omitempty"`
}

func defaultCircuitBreakerConfig() CircuitBreakerConfig {
	return CircuitBreakerConfig{
		MinRequests:        20,
		Interval:           "10s",
		OpenDuration:       "30s",
		HalfOpenRequests:   1,
		FailureStatusCodes: "500-599",
		ResponseCode:       503,
		Fallback:           true,
	}
}

// maxBreakerCount bounds the count settings, which the breaker keeps as uint32.
const maxBreakerCount = 1<<31 - 1

// minProbeTimeout is the least time a half-open probe holds its slot before
// it is given up: a probe is a real request, which takes a while even when
// openDuration is short.
const minProbeTimeout = time.Second

// noExpiry is the expiry of a closed breaker that never resets its counts
// (interval 0): a closed breaker's window is then one comparison.
const noExpiry = math.MaxInt64

// Breaker states, as gobreaker numbers them and as the metric publishes them.
const (
	stateClosed   = 0
	stateHalfOpen = 1
	stateOpen     = 2
)

var stateNames = []string{"closed", "half_open", "open"}

// Outcomes of a request, for the breaker.
const (
	outcomeSuccess = iota
	outcomeFailure
	outcomeNeutral // the client went away or the connection was hijacked: not counted
)

// breakerSettings are the parsed settings shared by a middleware's breakers.
type breakerSettings struct {
	consecutive  uint32
	ratio        float64
	minRequests  uint32
	interval     int64 // ns, 0: never reset while closed
	openDuration int64 // ns
	probeTimeout int64 // ns: half-open probe slots not reported back after this are freed (openDuration, at least minProbeTimeout)
	maxRequests  uint32
	failCodes    []bool // index: status code 0..599
	slow         int64  // ns, 0: off
	responseCode int
	fallback     bool
	key          string // fingerprint: breakers survive reloads with the same key
}

func newBreakerSettings(cfg CircuitBreakerConfig) (*breakerSettings, error) {
	for _, f := range []struct {
		field string
		v     int
	}{
		{"circuitBreaker.consecutiveFailures", cfg.ConsecutiveFailures},
		{"circuitBreaker.minRequests", cfg.MinRequests},
		{"circuitBreaker.halfOpenRequests", cfg.HalfOpenRequests},
	} {
		if err := checkCount(f.field, f.v, maxBreakerCount); err != nil {
			return nil, err
		}
	}
	if cfg.FailureRatio < 0 || cfg.FailureRatio > 1 || cfg.FailureRatio != cfg.FailureRatio {
		return nil, fmt.Errorf("circuitBreaker.failureRatio: must be between 0 and 1, got %v", cfg.FailureRatio)
	}
	if cfg.ResponseCode != 0 && (cfg.ResponseCode < 400 || cfg.ResponseCode > 599) {
		return nil, fmt.Errorf("circuitBreaker.responseCode: must be a 4xx or 5xx status, got %d", cfg.ResponseCode)
	}
	s := &breakerSettings{
		consecutive: uint32(cfg.ConsecutiveFailures),
		ratio:       cfg.FailureRatio,
		minRequests: uint32(cfg.MinRequests),
		maxRequests: uint32(cfg.HalfOpenRequests),
		fallback:    cfg.Fallback,
	}
	if s.maxRequests == 0 {
		s.maxRequests = 1
	}
	s.responseCode = cfg.ResponseCode
	if s.responseCode == 0 {
		s.responseCode = 503
	}
	if cfg.Interval != "" {
		d, err := parseDuration("circuitBreaker.interval", cfg.Interval)
		if err != nil {
			return nil, err
		}
		s.interval = int64(d)
	}
	s.openDuration = int64(30 * time.Second)
	if cfg.OpenDuration != "" {
		d, err := parseDuration("circuitBreaker.openDuration", cfg.OpenDuration)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, errors.New("circuitBreaker.openDuration: must be above 0")
		}
		s.openDuration = int64(d)
	}
	s.probeTimeout = s.openDuration
	if s.probeTimeout < int64(minProbeTimeout) {
		s.probeTimeout = int64(minProbeTimeout)
	}
	if cfg.SlowThreshold != "" {
		d, err := parseDuration("circuitBreaker.slowThreshold", cfg.SlowThreshold)
		if err != nil {
			return nil, err
		}
		s.slow = int64(d)
	}
	codes := cfg.FailureStatusCodes
	if strings.TrimSpace(codes) == "" {
		codes = "500-599"
	}
	fc, err := parseStatusCodes("circuitBreaker.failureStatusCodes", codes)
	if err != nil {
		return nil, err
	}
	s.failCodes = fc
	s.key = fmt.Sprintf("%d|%v|%d|%d|%d|%d|%s|%d", s.consecutive, s.ratio, s.minRequests, s.interval, s.openDuration, s.maxRequests, codes, s.slow)
	return s, nil
}

// enabled reports whether the breaker trips at all.
func (s *breakerSettings) enabled() bool { return s.consecutive > 0 || s.ratio > 0 }

// parseStatusCodes parses "500-599,429" into a lookup table.
func parseStatusCodes(field, spec string) ([]bool, error) {
	table := make([]bool, 600)
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi := part, part
		if i := strings.IndexByte(part, '-'); i >= 0 {
			lo, hi = strings.TrimSpace(part[:i]), strings.TrimSpace(part[i+1:])
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, fmt.Errorf("%s: invalid status code or range %q: want codes from 100 to 599, e.g. \"500-599,429\"", field, part)
		}
		for c := a; c <= b; c++ {
			table[c] = true
		}
	}
	return table, nil
}

// breaker is one version's circuit breaker: gobreaker v1's state machine
// (closed, open, half-open, generations, counts) with time as an argument
// and a neutral outcome. It is compared with gobreaker in the tests.
type breaker struct {
	sem        chan struct{} // the lock (cheaper than sync.Mutex in Yaegi)
	s          *breakerSettings
	name       string // "<middleware>/<version>", for the log
	state      int
	generation uint64
	expiry     int64 // ns since epoch; noExpiry when closed without interval; half-open: when the probe slots in flight are freed

	requests, failures              uint32
	consecSuccesses, consecFailures uint32

	// closedUntil is expiry while closed and -1 otherwise, so that the
	// request path tests "closed, and the window has not ended" with one
	// comparison (see enter).
	closedUntil int64

	// freedGen is the half-open generation whose probes had their slots
	// freed (see currentState); 0 when none.
	freedGen uint64

	transitions *transitionCounts // shared with the breaker this one replaced
	lastLog     int64
	suppressed  int
}

// transitionCounts are a version's breaker transitions by target state,
// cumulative across reloads.
type transitionCounts struct {
	mu sync.Mutex
	n  [3]uint64
}

// newBreaker returns a closed breaker whose first window starts at now, as
// gobreaker's NewCircuitBreaker starts it at its creation: a breaker made in
// the middle of an interval must not end its first window early and drop
// the outcome of the requests then in flight.
func newBreaker(s *breakerSettings, name string, now int64) *breaker {
	b := &breaker{sem: make(chan struct{}, 1), s: s, name: name, transitions: &transitionCounts{}}
	b.newGeneration(now)
	return b
}

// breakerNow is the breakers' clock, as the request paths read it:
// nanoseconds since the package's epoch, never 0.
func breakerNow() int64 { return int64(clock(epoch)) + 1 }

// currentState advances time-based transitions. Called with mu held.
func (b *breaker) currentState(now int64) int {
	switch b.state {
	case stateClosed:
		if b.expiry < now {
			b.newGeneration(now)
		}
	case stateOpen:
		if b.expiry < now {
			b.setState(stateHalfOpen, now)
		}
	case stateHalfOpen:
		if b.expiry < now && b.requests > b.consecSuccesses {
			// The probes in flight were all let through probeTimeout ago or
			// more and have not reported back (a stream that does not end):
			// their slots are freed, so the version is probed again. They
			// move to freedGen: their successes and failures still count
			// when they come, as gobreaker's would, but a neutral outcome
			// no longer gives back a slot, which another probe now holds.
			b.freedGen = b.generation
			b.generation++
			b.requests = b.consecSuccesses
		}
	}
	return b.state
}

func (b *breaker) setState(state int, now int64) {
	if b.state == state {
		return
	}
	prev := b.state
	b.state = state
	b.newGeneration(now)
	b.transitions.mu.Lock()
	b.transitions.n[state]++
	b.transitions.mu.Unlock()
	b.logTransition(prev, state, now)
}

func (b *breaker) newGeneration(now int64) {
	b.generation++
	b.freedGen = 0
	b.requests, b.failures, b.consecSuccesses, b.consecFailures = 0, 0, 0, 0
	b.closedUntil = -1
	switch b.state {
	case stateClosed:
		if b.s.interval == 0 {
			b.expiry = noExpiry
		} else {
			b.expiry = now + b.s.interval
		}
		b.closedUntil = b.expiry
	case stateOpen:
		b.expiry = now + b.s.openDuration
	default: // half-open: probe slots are held until expiry at most
		b.expiry = now + b.s.probeTimeout
	}
}

// logTransition writes to Traefik's plugin log at most once per 10 seconds per
// breaker, with the number of transitions it left out.
func (b *breaker) logTransition(prev, state int, now int64) {
	if b.lastLog != 0 && now-b.lastLog < int64(10*time.Second) {
		b.suppressed++
		return
	}
	extra := ""
	if b.suppressed > 0 {
		extra = fmt.Sprintf(" (%d earlier transitions not logged)", b.suppressed)
	}
	log.Printf("edgecanary %s: circuit breaker %s -> %s%s", b.name, stateNames[prev], stateNames[state], extra)
	b.lastLog, b.suppressed = now, 0
}

// before asks whether a request may go to this version at now. It returns the
// generation to hand to after, and when it refuses, how long until the next
// probe (0 when the refusal is for too many half-open probes).
func before(b *breaker, now int64) (ok bool, gen uint64, retryIn int64) {
	b.sem <- lockTok
	state := b.state
	if state != stateClosed || b.expiry < now {
		state = b.currentState(now) // a method call costs ~1µs in Yaegi: only when time moves the state
	}
	if state == stateOpen {
		retryIn = b.expiry - now
		gen = b.generation
		<-b.sem
		return false, gen, retryIn
	}
	if state == stateHalfOpen {
		if b.requests >= b.s.maxRequests {
			gen = b.generation
			<-b.sem
			return false, gen, 0
		}
		b.expiry = now + b.s.probeTimeout // the probe's slot is held until then at most
	}
	b.requests++
	gen = b.generation
	<-b.sem
	return true, gen, 0
}

// after records the outcome of a request that before let through. Outcomes
// from an older generation are discarded.
func after(b *breaker, gen uint64, outcome int, now int64) {
	b.sem <- lockTok
	state := b.state
	if state != stateClosed || b.expiry < now {
		state = b.currentState(now)
	}
	if gen != b.generation && !(gen == b.freedGen && state == stateHalfOpen && outcome != outcomeNeutral) {
		<-b.sem
		return
	}
	switch outcome {
	case outcomeSuccess:
		b.consecSuccesses++
		b.consecFailures = 0
		if state == stateHalfOpen && b.consecSuccesses >= b.s.maxRequests {
			b.setState(stateClosed, now)
		}
	case outcomeFailure:
		if state == stateHalfOpen {
			b.setState(stateOpen, now)
			break
		}
		b.failures++
		b.consecFailures++
		b.consecSuccesses = 0
		if b.s.consecutive > 0 && b.consecFailures >= b.s.consecutive || b.s.ratio > 0 && b.requests >= b.s.minRequests &&
			float64(b.failures) >= b.s.ratio*float64(b.requests) {
			b.setState(stateOpen, now)
		}
	default: // neutral: give the slot back, count nothing
		if b.requests > 0 {
			b.requests--
		}
	}
	<-b.sem
}

// The breaker's request steps. enter and leave are the common case, which
// the generated request paths inline (see serve.go); admit, fallback, refuse
// and leaveSlow are calls for the rest.

// enter is before's step for a closed breaker whose window has not ended: it
// counts the request and returns its generation. In every other case it
// calls otherwise, with the lock released, for admit to decide (the
// generation stays 0, never a generation). sem is b.sem, which a request
// path that always serves one version captures: under Yaegi each selection
// of b.sem costs an allocation.
func enter(b *breaker, sem chan struct{}, now int64, otherwise func()) (gen uint64) {
	sem <- lockTok
	if b.closedUntil >= now {
		b.requests++
		gen = b.generation
		<-sem
	} else {
		<-sem
		otherwise()
	}
	return
}

// noop is the otherwise of enter's callers that test the generation instead.
func noop() {}

// leave is after's step for a success of a request that enter let through
// (gen is a generation of the closed breaker): while the generation is the
// same, the breaker is still closed, and a success only ends a run of
// failures (the count of successes in a row matters only while half-open,
// and every state change resets it). Such a success needs no clock: had the
// window ended meanwhile, the next request starts a new one, which clears
// the counts anyway. okCode is 200 when a 200 is a success whatever its
// duration (no slowThreshold), else -1, which no response has. Every other
// outcome goes to otherwise, which calls leaveSlow. A generation from admit
// may be half-open's, whose successes count: it goes to leaveSlow directly.
func leave(b *breaker, sem chan struct{}, gen uint64, code, okCode int, otherwise func()) {
	sem <- lockTok
	if code == okCode && gen == b.generation {
		b.consecFailures = 0
		<-sem
	} else {
		<-sem
		otherwise()
	}
}

// leaveSlow records the outcome of w's request, which left the plugin at
// sent, at end (0: now, read here). The outcome is recorded at end, so a
// breaker opened by it stays open openDuration from then. slowThreshold
// judges the time from sent to the response headers (w.headers, recorded
// when timed), what the backend controls, not the limiter's delay nor a slow
// client reading the body; without the headers' time, end - sent.
func leaveSlow(w *statusWriter, sent, end int64) {
	if end == 0 {
		end = int64(clock(epoch))
	}
	d := end - sent
	if w.headers != 0 {
		d = w.headers - sent
	}
	after(w.r.br, w.gen, outcomeOf(w.c.bs, w.code, d), end)
}

// admit asks r's breaker, which is not simply closed, to let a request
// through, and falls back when it refuses. It returns the route to serve and
// the generation for after, or nil when the request was answered.
func admit(c *canary, r *route, rw http.ResponseWriter, req *http.Request, now int64) (*route, uint64) {
	ok, gen, retryIn := before(r.br, now)
	if ok {
		return r, gen
	}
	return fallback(c, r, rw, req, now, retryIn)
}

// outcomeOf classifies a response for the breaker. Transport errors (502
// and 504 from the proxy, which include a version's timeout) always count.
func outcomeOf(s *breakerSettings, code int, d int64) int {
	if code == 0 || code == statusClientClosedRequest {
		return outcomeNeutral
	}
	if code < 600 && s.failCodes[code] || code == http.StatusBadGateway || code == http.StatusGatewayTimeout {
		return outcomeFailure
	}
	if s.slow > 0 && d > s.slow {
		return outcomeFailure
	}
	return outcomeSuccess
}

// fallback handles a request whose version's breaker refused it: the users
// of a non-primary version go to the primary (whose own breaker must let
// them through); otherwise the client gets responseCode. It returns the
// route to serve and its generation, or nil when it answered itself.
func fallback(c *canary, r *route, rw http.ResponseWriter, req *http.Request, now, retryIn int64) (*route, uint64) {
	p := c.primary
	var gen uint64
	ok := false
	if c.bs.fallback && !r.primary {
		ok = true
		if p.br != nil {
			var pRetry int64
			ok, gen, pRetry = before(p.br, now)
			if !ok && pRetry > retryIn {
				retryIn = pRetry
			}
		}
	}
	if !ok {
		refuse(c, r, rw, req, retryIn)
		return nil, 0
	}
	rw.Header().Set("Edgecanary-Fallback", r.name)
	if c.st != nil {
		recordFallback(c.st, r.name, p.name)
	}
	return p, gen
}

// refuse answers when no version can serve: responseCode, and Retry-After
// until the next probe. Nothing reaches a backend. The request counts under
// the version whose breaker refused it.
func refuse(c *canary, r *route, rw http.ResponseWriter, req *http.Request, retryIn int64) {
	secs := retryAfterSeconds(retryIn)
	if secs < 1 {
		secs = 1
	}
	h := rw.Header()
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(c.bs.responseCode)
	_, _ = rw.Write([]byte(http.StatusText(c.bs.responseCode) + "\n"))
	if c.st != nil {
		recordRefused(r.vs, c.bs.responseCode, req.Method)
	}
}

// breakerSnapshot returns the state (as of now) and the transition counts.
func breakerSnapshot(b *breaker, now int64) (int, [3]uint64) {
	b.sem <- lockTok
	state := b.currentState(now)
	<-b.sem
	b.transitions.mu.Lock()
	t := b.transitions.n
	b.transitions.mu.Unlock()
	return state, t
}

// breakers keeps each middleware's breakers across reloads, by name and
// version, replaced when the settings change.
var breakers = struct {
	sync.Mutex
	m map[string]*breaker
}{m: map[string]*breaker{}}

const maxBreakers = 16384

// getBreaker returns middleware's breaker for version: the one from before a
// reload when its settings are the same, else a new one whose first window
// starts at now, keeping the replaced one's transition counts.
func getBreaker(s *breakerSettings, middleware, version string, now int64) *breaker {
	key := middleware + "\x00" + version
	breakers.Lock()
	defer breakers.Unlock()
	old, ok := breakers.m[key]
	if ok && old.s.key == s.key {
		return old
	}
	if len(breakers.m) >= maxBreakers {
		for k := range breakers.m {
			delete(breakers.m, k)
			break
		}
	}
	b := newBreaker(s, middleware+"/"+version, now)
	if ok {
		b.transitions = old.transitions
	}
	breakers.m[key] = b
	return b
}
