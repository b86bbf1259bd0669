package plugin

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// RolloutConfig is a progressive rollout: one version's share follows a
// schedule of steps, and the version is rolled back when its checks fail.
// Names follow Flagger's analysis where the meaning is the same. Off while
// Start is empty.
type RolloutConfig struct {
	// Version is the version that ramps. Default: the only non-primary one.
	Version string `json:"version,omitempty"`
	// Start is the RFC 3339 instant when the first step begins.
	Start string `json:"start,omitempty"`
	// StepWeights are the version's share in percent at each step, strictly
	// increasing, from 0 to 100. They replace its weight.
	StepWeights []int `json:"stepWeights,omitempty"`
	// Interval is the length of each step, and the window of each check.
	// Default 1m.
	Interval string `json:"interval,omitempty"`
	// Threshold is the number of consecutive failed checks that rolls the
	// version back. Default 2.
	Threshold int `json:"threshold,omitempty"`
	// MinRequests: a window with fewer requests to the version is
	// inconclusive. Default 100.
	MinRequests int `json:"minRequests,omitempty"`
	// Metrics judge each window. Default: request-success-rate at least 99
	// and request-duration at most 500.
	Metrics []RolloutMetric `json:"metrics,omitempty"`
	// Redis shares the rollback across replicas; the keys of rateLimit.redis
	// (onError does not apply).
	Redis RedisConfig `json:"redis,omitempty"`
}

// RolloutMetric is one measure of a check and the range it must stay in.
type RolloutMetric struct {
	// Name is request-success-rate (percent of the version's requests that
	// are not 5xx), request-duration (the version's p99, in milliseconds) or
	// error-rate-increase (the version's 5xx percentage minus the primary's).
	Name           string         `json:"name,omitempty"`
	ThresholdRange ThresholdRange `json:"thresholdRange,omitempty"`
}

// ThresholdRange bounds a metric; an unset side is open.
type ThresholdRange struct {
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
}

func defaultRolloutConfig() RolloutConfig {
	return RolloutConfig{Interval: "1m", Threshold: 2, MinRequests: 100, StepWeights: []int{}, Redis: defaultRedisConfig()}
}

// The metrics a check knows.
const (
	metricSuccessRate       = "request-success-rate"
	metricDuration          = "request-duration"
	metricErrorRateIncrease = "error-rate-increase"
)

const (
	maxRolloutSteps    = 100
	maxRolloutInterval = 30 * 24 * time.Hour // so start + steps * interval stays inside the clock
	maxRecentChecks    = 32                  // wire.Rollout.Recent
	maxRollouts        = 1024
)

// schedule is a rollout's weight as a pure function of time: every replica
// with the same config computes the same weight, across restarts.
type schedule struct {
	start    int64 // Unix ns
	interval int64 // ns
	weights  []int // percent, one per step
}

// at returns the step at t (Unix ns; 1-based, 0 before start), the
// version's weight in percent, and whether t is past the last step.
func (s schedule) at(t int64) (step, weight int, done bool) {
	if t < s.start {
		return 0, 0, false
	}
	n := int64(len(s.weights))
	k := (t - s.start) / s.interval
	if k >= n {
		return int(n), s.weights[n-1], true
	}
	return int(k) + 1, s.weights[k], false
}

// stepStart is when step k (1-based) begins; k = len(weights)+1 is the end.
func (s schedule) stepStart(k int) int64 { return s.start + int64(k-1)*s.interval }

// metricRule is one parsed metric of a check.
type metricRule struct {
	name     string
	min, max float64 // -Inf / +Inf when open
}

// checkRules are a rollout's check settings; a reload may change them
// without restarting the rollout.
type checkRules struct {
	threshold   int
	minRequests uint64
	metrics     []metricRule
}

// rolloutSettings are a parsed, valid RolloutConfig.
type rolloutSettings struct {
	version string
	sched   schedule
	rules   checkRules
	key     string // what identifies the rollout: a change starts it afresh
}

// parseRollout validates cfg for the versions of c (routes set). It returns
// nil when no rollout is configured.
func parseRollout(cfg RolloutConfig, c *canary) (*rolloutSettings, error) {
	if strings.TrimSpace(cfg.Start) == "" {
		return nil, nil
	}
	s := &rolloutSettings{version: cfg.Version}
	if s.version == "" {
		if len(c.routes) != 2 {
			return nil, fmt.Errorf("rollout.version: required when there is not exactly one non-primary version (%d versions)", len(c.routes))
		}
		s.version = c.routes[0].name
	}
	r := c.byName[s.version]
	if r == nil || s.version == "always" || s.version == "never" {
		return nil, fmt.Errorf("rollout.version: %q is not one of versions", s.version)
	}
	if r.primary {
		return nil, fmt.Errorf("rollout.version: %q is the primary version; the version that ramps must have a url", s.version)
	}
	start, err := time.Parse(time.RFC3339, strings.TrimSpace(cfg.Start))
	if err != nil {
		return nil, fmt.Errorf("rollout.start: %q is not an RFC 3339 instant such as \"2026-12-01T09:00:00Z\"", cfg.Start)
	}
	if start.Year() < 1970 || start.Year() > 2200 {
		return nil, fmt.Errorf("rollout.start: %q: the year must be between 1970 and 2200", cfg.Start)
	}
	s.sched.start = start.UnixNano()
	if len(cfg.StepWeights) == 0 {
		return nil, errors.New("rollout.stepWeights: at least one step is required")
	}
	if len(cfg.StepWeights) > maxRolloutSteps {
		return nil, fmt.Errorf("rollout.stepWeights: at most %d steps, got %d", maxRolloutSteps, len(cfg.StepWeights))
	}
	for i, w := range cfg.StepWeights {
		if w < 0 || w > 100 {
			return nil, fmt.Errorf("rollout.stepWeights[%d]: %d is outside 0 to 100 (percent)", i, w)
		}
		if i > 0 && w <= cfg.StepWeights[i-1] {
			return nil, fmt.Errorf("rollout.stepWeights[%d]: %d does not increase on the step before (%d)", i, w, cfg.StepWeights[i-1])
		}
	}
	s.sched.weights = append([]int(nil), cfg.StepWeights...)
	interval := time.Minute
	if cfg.Interval != "" {
		if interval, err = parseDuration("rollout.interval", cfg.Interval); err != nil {
			return nil, err
		}
	}
	if interval < 100*time.Millisecond || interval > maxRolloutInterval {
		return nil, fmt.Errorf("rollout.interval: must be between 100ms and %v, got %q", maxRolloutInterval, cfg.Interval)
	}
	s.sched.interval = int64(interval)
	if cfg.Threshold < 1 || cfg.Threshold > 1000 {
		return nil, fmt.Errorf("rollout.threshold: must be between 1 and 1000, got %d", cfg.Threshold)
	}
	s.rules.threshold = cfg.Threshold
	if err := checkCount("rollout.minRequests", cfg.MinRequests, 1<<30); err != nil {
		return nil, err
	}
	s.rules.minRequests = uint64(cfg.MinRequests)
	metrics := cfg.Metrics
	if len(metrics) == 0 {
		minRate, maxMs := 99.0, 500.0
		metrics = []RolloutMetric{
			{Name: metricSuccessRate, ThresholdRange: ThresholdRange{Min: &minRate}},
			{Name: metricDuration, ThresholdRange: ThresholdRange{Max: &maxMs}},
		}
	}
	if len(metrics) > 16 {
		return nil, fmt.Errorf("rollout.metrics: at most 16, got %d", len(metrics))
	}
	for i, m := range metrics {
		field := fmt.Sprintf("rollout.metrics[%d]", i)
		switch m.Name {
		case metricSuccessRate, metricDuration, metricErrorRateIncrease:
		default:
			return nil, fmt.Errorf("%s.name: unknown metric %q: want %s, %s or %s", field, m.Name, metricSuccessRate, metricDuration, metricErrorRateIncrease)
		}
		rule := metricRule{name: m.Name, min: math.Inf(-1), max: math.Inf(1)}
		if m.ThresholdRange.Min == nil && m.ThresholdRange.Max == nil {
			return nil, fmt.Errorf("%s.thresholdRange: set min, max or both", field)
		}
		if p := m.ThresholdRange.Min; p != nil {
			if math.IsNaN(*p) || math.IsInf(*p, 0) {
				return nil, fmt.Errorf("%s.thresholdRange.min: must be a finite number", field)
			}
			rule.min = *p
		}
		if p := m.ThresholdRange.Max; p != nil {
			if math.IsNaN(*p) || math.IsInf(*p, 0) {
				return nil, fmt.Errorf("%s.thresholdRange.max: must be a finite number", field)
			}
			rule.max = *p
		}
		if rule.min > rule.max {
			return nil, fmt.Errorf("%s.thresholdRange: min %v is above max %v", field, rule.min, rule.max)
		}
		s.rules.metrics = append(s.rules.metrics, rule)
	}
	s.key = fmt.Sprintf("%s|%d|%d|%v", s.version, s.sched.start, s.sched.interval, s.sched.weights)
	return s, nil
}

// totals are one version's cumulative figures at an instant, as the
// reporting counters hold them (record): a check diffs two of them.
type totals struct {
	requests, errors uint64   // errors: 5xx
	hist             []uint64 // per histogram bound, then +Inf
	opened           uint64   // breaker transitions into open
}

// windowTotals are the figures a check reads at one instant.
type windowTotals struct {
	version, primary totals
}

// checkResult is the verdict of one window.
type checkResult struct {
	result string // "pass", "fail" or "inconclusive"
	reason string
}

// judge is one check: the version's window from prev to cur against rules.
// open: the version's breaker is open at the window's end. An open breaker
// during the window fails the check whatever the traffic; fewer than
// minRequests requests to the version is inconclusive; otherwise every
// metric must be in its range.
func judge(rules checkRules, bounds []float64, prev, cur windowTotals, open bool) checkResult {
	if open || cur.version.opened > prev.version.opened {
		return checkResult{"fail", "circuit breaker open"}
	}
	n := cur.version.requests - prev.version.requests
	if n == 0 || n < rules.minRequests {
		return checkResult{"inconclusive", fmt.Sprintf("%d requests < minRequests %d", n, rules.minRequests)}
	}
	errs := float64(cur.version.errors - prev.version.errors)
	var fails []string
	for _, m := range rules.metrics {
		var v float64
		unit := "%"
		switch m.name {
		case metricSuccessRate:
			v = 100 * (float64(n) - errs) / float64(n)
		case metricDuration:
			unit = "ms"
			v = 1000 * histQuantile(0.99, bounds, prev.version.hist, cur.version.hist)
		case metricErrorRateIncrease:
			v = 100 * errs / float64(n)
			if pn := cur.primary.requests - prev.primary.requests; pn > 0 {
				v -= 100 * float64(cur.primary.errors-prev.primary.errors) / float64(pn)
			}
		}
		figure := fmtFigure(math.Round(v*10)/10) + unit
		if math.IsInf(v, 1) && len(bounds) > 0 {
			figure = "above " + fmtFigure(1000*bounds[len(bounds)-1]) + unit + " (the highest bucket)"
		}
		if v < m.min {
			fails = append(fails, fmt.Sprintf("%s %s < %s%s", m.name, figure, fmtFigure(m.min), unit))
		} else if v > m.max {
			fails = append(fails, fmt.Sprintf("%s %s > %s%s", m.name, figure, fmtFigure(m.max), unit))
		}
	}
	if len(fails) > 0 {
		return checkResult{"fail", strings.Join(fails, ", ")}
	}
	return checkResult{"pass", fmt.Sprintf("%d requests", n)}
}

// fmtFigure writes a figure of a check's reason: "98.7", "500".
func fmtFigure(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// histQuantile is Prometheus's histogram_quantile over the difference of two
// cumulative histograms (per bucket, not cumulative; the last is +Inf): the
// bucket holding rank q·n, interpolated linearly inside it. Where Prometheus
// answers the highest finite bound when the rank falls in +Inf, this answers
// +Inf: a check must not pass a version slower than any bound. In seconds;
// 0 without counts.
func histQuantile(q float64, bounds []float64, prev, cur []uint64) float64 {
	if len(cur) != len(bounds)+1 {
		return 0
	}
	if len(prev) != len(cur) {
		prev = nil
	}
	for i := range prev {
		if cur[i] < prev[i] { // the histogram was reset (sidecar.buckets changed): the window since then
			prev = nil
			break
		}
	}
	d := make([]float64, len(cur))
	var n float64
	for i := range cur {
		c := cur[i]
		if prev != nil {
			c -= prev[i]
		}
		d[i] = float64(c)
		n += d[i]
	}
	if n == 0 {
		return 0
	}
	rank := q * n
	var cum float64
	for i, c := range d {
		if cum+c >= rank && c > 0 {
			if i == len(bounds) {
				return math.Inf(1)
			}
			lower := 0.0
			if i > 0 {
				lower = bounds[i-1]
			}
			return lower + (bounds[i]-lower)*(rank-cum)/c
		}
		cum += c
	}
	return bounds[len(bounds)-1]
}

// rollout is the running state of one middleware's rollout, shared by every
// handler New builds for it (one per router, and again on each reload) and
// kept across reloads while its settings' key stays the same. One
// background goroutine (run) moves the step at each boundary and judges each
// window; another (poll) talks to Redis, so a slow Redis never delays a
// step or a check. The request path only reads cut.
type rollout struct {
	name string // the middleware
	s    *rolloutSettings

	// cut: buckets below it belong to the version now (atomic; see owner).
	cut int32

	mu        sync.Mutex
	rules     checkRules // the latest New's
	vs, ps    *verStats  // the version's and the primary's counters
	br        *breaker   // the version's breaker, or nil
	bounds    []float64
	ranges    map[string][2]int // bucket range of each other version in the layout
	st        *mwStats
	live      []context.Context
	idleSince time.Time
	running   bool
	gen       int           // counts the starts of the goroutines: a stopped pair never outlives a restart
	wake      chan struct{} // wakes the poll goroutine: a rollback to write
	replaced  bool

	state, step, failed int
	counts              [3]uint64 // pass, fail, inconclusive
	recent              []wire.Check
	rolledBack          bool
	window              int           // the step whose window base covers; 0: none
	base                *windowTotals // the totals when window began

	// Redis: the rollback is shared through key.
	client     *redisClient
	clientKey  string
	redisKey   string
	allowed    int  // with Redis: the highest step confirmed while Redis answered
	unwritten  bool // rolled back here, not yet written
	nextPoll   time.Time
	storeError bool
}

var rollouts = struct {
	sync.Mutex
	m map[string]*rollout
}{m: map[string]*rollout{}}

// startRollout returns the running rollout of middleware c.name for s,
// creating it or taking over the one a previous New started with the same
// key. client (with clientKey) is one use of rollout.redis's client, or nil;
// the rollout keeps or releases it.
func startRollout(ctx context.Context, c *canary, s *rolloutSettings, client *redisClient, clientKey string, ranges map[string][2]int) *rollout {
	rollouts.Lock()
	r := rollouts.m[c.name]
	if r == nil || r.s.key != s.key {
		if r != nil {
			r.mu.Lock()
			r.replaced = true
			r.mu.Unlock()
		}
		if len(rollouts.m) >= maxRollouts {
			for k, old := range rollouts.m {
				old.mu.Lock()
				idle := !old.running
				old.mu.Unlock()
				if idle {
					delete(rollouts.m, k)
					break
				}
			}
		}
		old := r
		r = &rollout{name: c.name, s: s, redisKey: rolloutRedisKey(c.name, s.key), wake: make(chan struct{}, 1)}
		if old != nil && old.s.version == s.version {
			// The checks count since the process started, per version: a new
			// rollout of the version adds to them (edgecanary_rollout_checks_total
			// is a counter).
			old.mu.Lock()
			r.counts = old.counts
			old.mu.Unlock()
		}
		rollouts.m[c.name] = r
		log.Printf("edgecanary %s: rollout of %s: weights %v, steps of %v from %s", c.name, s.version, s.sched.weights,
			time.Duration(s.sched.interval), time.Unix(0, s.sched.start).UTC().Format(time.RFC3339))
	}
	rollouts.Unlock()

	r.mu.Lock()
	r.rules = s.rules
	r.st = c.st
	r.vs, r.ps = c.byName[s.version].vs, c.primary.vs
	r.br = c.byName[s.version].br
	r.bounds = c.st.bounds
	r.ranges = ranges
	var drop *redisClient
	dropKey := clientKey
	switch {
	case client == nil && r.client != nil:
		drop, dropKey = r.client, r.clientKey
		r.client = nil // two statements: Yaegi panics on a parallel assignment of an untyped nil
		r.clientKey = ""
	case client != nil && r.client == nil:
		r.client, r.clientKey = client, clientKey
	case client != nil && r.clientKey == clientKey:
		drop = client // already held
	case client != nil:
		drop, dropKey = r.client, r.clientKey
		r.client, r.clientKey = client, clientKey
	}
	kept := r.live[:0]
	for _, l := range r.live {
		if l.Err() == nil {
			kept = append(kept, l)
		}
	}
	r.live = append(kept, ctx) //nolint:gocritic // kept shares r.live's array: the live contexts, filtered in place
	start := !r.running
	r.running = true
	if start {
		r.gen++
	}
	gen := r.gen
	r.mu.Unlock()
	if drop != nil {
		releaseRedis(dropKey, drop)
	}
	if client == nil && !r.warned() {
		log.Printf("edgecanary %s: WARNING: rollout without rollout.redis: each replica judges and rolls back on its own, and a restarted replica forgets a rollback", c.name)
	}
	c.st.mu.Lock()
	c.st.rollout = r // the report's rollout, and whose weights it shows (publishWeights)
	c.st.mu.Unlock()
	r.settle(time.Now()) // the weight is right before the first request; Redis is read in the background
	if start {
		go r.run(gen)
		go r.poll(gen)
	}
	return r
}

// rolloutKeyTTL is how long a rollback stays in Redis, in seconds: 30 days
// past the schedule's end (and at least 30 days), so a replica that starts
// while the schedule still runs, or long after, finds it.
func rolloutKeyTTL(s schedule, now time.Time) int64 {
	end := time.Unix(0, s.stepStart(len(s.weights)+1))
	ttl := 30 * 24 * time.Hour
	if d := end.Sub(now) + ttl; d > ttl {
		ttl = d
	}
	return int64(ttl / time.Second)
}

// rolloutRedisKey is where a rollout's rollback lives in Redis: by the
// middleware and the settings that identify the rollout, so a new rollout
// of the same middleware starts clean.
func rolloutRedisKey(name, key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return fmt.Sprintf("edgecanary:rollout:%s:%016x", name, h.Sum64())
}

// rolloutWarned remembers the middlewares warned about a rollout without
// Redis: once per process, not once per router and reload.
var rolloutWarned = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

func (r *rollout) warned() bool {
	rolloutWarned.Lock()
	defer rolloutWarned.Unlock()
	k := r.name + "\x00" + r.s.key
	if rolloutWarned.m[k] {
		return true
	}
	if len(rolloutWarned.m) >= maxRollouts {
		rolloutWarned.m = map[string]bool{}
	}
	rolloutWarned.m[k] = true
	return false
}

// run is the rollout's goroutine for time: a settle at every step boundary
// (and every second), until no handler has used the rollout for
// reloadGrace, or a New with other settings replaced it.
func (r *rollout) run(gen int) {
	for r.alive(time.Now(), gen) {
		time.Sleep(r.settle(time.Now()))
	}
}

// poll is the rollout's goroutine for Redis: it reads the shared rollback
// every pollEvery and at each step boundary (a step applies once confirmed),
// and writes this replica's rollback as soon as it is decided. It stops with
// run.
func (r *rollout) poll(gen int) {
	for {
		now := time.Now()
		r.mu.Lock()
		if !r.running || r.gen != gen {
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if client, write := r.pollDue(now); client != nil {
			r.sync(client, write, now)
			r.settle(time.Now()) // a step Redis just confirmed applies now
		}
		t := time.NewTimer(r.pollWait(time.Now()))
		select {
		case <-t.C:
		case <-r.wake:
			t.Stop()
		}
	}
}

// alive reports whether the goroutines of generation gen should go on. When
// no handler has used the rollout for reloadGrace, or a New with other
// settings replaced it, it stops them and gives back the Redis client.
func (r *rollout) alive(now time.Time, gen int) bool {
	r.mu.Lock()
	if r.gen != gen || !r.running {
		r.mu.Unlock()
		return false
	}
	live := false
	for _, l := range r.live {
		if l.Err() == nil {
			live = true
			break
		}
	}
	if live {
		r.idleSince = time.Time{}
	} else if r.idleSince.IsZero() {
		r.idleSince = now
	}
	if !r.replaced && (live || now.Sub(r.idleSince) <= reloadGrace) {
		r.mu.Unlock()
		return true
	}
	r.running = false
	client, key := r.client, r.clientKey
	r.client = nil // two statements: Yaegi panics on a parallel assignment of an untyped nil
	r.clientKey = ""
	r.mu.Unlock()
	if client != nil {
		releaseRedis(key, client)
	}
	select { // let poll see that it stopped
	case r.wake <- struct{}{}:
	default:
	}
	return false
}

// pollEvery is how often a replica reads a rollback from Redis: a tenth of
// the interval, from 200ms to 5s, so every replica rolls back well within
// one interval of the first.
func pollEvery(interval int64) time.Duration {
	d := time.Duration(interval / 10)
	if d < 200*time.Millisecond {
		d = 200 * time.Millisecond
	}
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	return d
}

// pollDue returns the client to call now, and whether to write a rollback,
// or nil when no call is due: Redis is read every pollEvery, and at a step
// boundary (a step applies once confirmed) unless it is failing.
func (r *rollout) pollDue(now time.Time) (*redisClient, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil, false
	}
	step, _, _ := r.s.sched.at(now.UnixNano())
	if now.Before(r.nextPoll) && !r.unwritten && (step <= r.allowed || r.storeError || r.rolledBack) {
		return nil, false
	}
	return r.client, r.unwritten
}

// pollWait is how long poll sleeps after a call: until the next poll or the
// next step boundary.
func (r *rollout) pollWait(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := time.Second
	if r.client != nil {
		wait = r.nextPoll.Sub(now)
		step, _, done := r.s.sched.at(now.UnixNano())
		if !done && !r.rolledBack && !r.storeError {
			if d := time.Duration(r.s.sched.stepStart(step+1) - now.UnixNano()); d < wait {
				wait = d
			}
		}
	}
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	return wait
}

// settle judges the window that ended, if any, and sets the step for now.
// It returns how long until the next step boundary (at most a second). It
// never calls Redis: a rollback decided here is written by poll.
func (r *rollout) settle(now time.Time) time.Duration {
	r.mu.Lock()
	t := now.UnixNano()
	step, _, done := r.s.sched.at(t)
	r.judgeWindows(step, done, now)
	weight := r.advance(t)
	ranges, st := r.ranges, r.st
	wait := time.Second
	if !done && !r.rolledBack {
		next := step + 1
		if d := time.Duration(r.s.sched.stepStart(next) - t); d < wait {
			wait = d
		}
	}
	r.mu.Unlock()
	if st != nil {
		publishWeights(st, r, weight, ranges)
	}
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	return wait
}

// sync reads the shared rollback from Redis, and writes this replica's when
// it has one to write. Called without r.mu: a call waits up to readTimeout.
func (r *rollout) sync(client *redisClient, write bool, now time.Time) {
	callStart := time.Now()
	var reply interface{}
	var err error
	if write {
		r.mu.Lock()
		reason := "rolled back"
		if n := len(r.recent); n > 0 {
			reason = r.recent[n-1].Reason
		}
		r.mu.Unlock()
		_, err = client.do("SET", r.redisKey, "rolledback "+strconv.FormatInt(now.UnixMilli(), 10)+" "+reason, "EX", strconv.FormatInt(rolloutKeyTTL(r.s.sched, now), 10))
	}
	if err == nil {
		reply, err = client.do("GET", r.redisKey)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The next poll is pollEvery after this call ended: a call that waited
	// readTimeout is not followed by another at once.
	r.nextPoll = now.Add(time.Since(callStart) + pollEvery(r.s.sched.interval))
	if err != nil {
		if !r.storeError {
			log.Printf("edgecanary %s: rollout: Redis failed: %v; the weight holds at step %d until it answers", r.name, err, r.allowed)
		}
		r.storeError = true
		return
	}
	if r.storeError {
		log.Printf("edgecanary %s: rollout: Redis answers again", r.name)
	}
	r.storeError = false
	if write {
		r.unwritten = false
	}
	if v, ok := reply.(string); ok && strings.HasPrefix(v, "rolledback") {
		if !r.rolledBack {
			why := "rolled back by another replica"
			if parts := strings.SplitN(v, " ", 3); len(parts) == 3 {
				why += " (" + parts[2] + ")"
			}
			r.rollBack(now, why)
		}
		return
	}
	step, _, _ := r.s.sched.at(now.UnixNano())
	r.allowed = step
}

// judgeWindows checks the window that ended, if any, and starts the next.
// Called with r.mu held.
func (r *rollout) judgeWindows(step int, done bool, now time.Time) {
	if r.rolledBack {
		return
	}
	cur := r.readTotals()
	window := step
	if done {
		window = len(r.s.sched.weights) + 1
	}
	if window == r.window {
		return
	}
	if r.base != nil && r.window >= 1 && r.window <= len(r.s.sched.weights) {
		open := false
		if r.br != nil {
			state, _ := breakerSnapshot(r.br, breakerNow())
			open = state == stateOpen
		}
		res := judge(r.rules, r.bounds, *r.base, cur, open)
		r.record(res, r.window, now)
	}
	r.window = window
	if window >= 1 && window <= len(r.s.sched.weights) {
		r.base = &cur
	} else {
		r.base = nil
	}
}

// record keeps a check's result, and rolls back after threshold consecutive
// failures. An inconclusive check neither counts as a failure nor resets
// the count: a quiet window proves nothing either way.
func (r *rollout) record(res checkResult, step int, now time.Time) {
	i := map[string]int{"pass": 0, "fail": 1, "inconclusive": 2}[res.result]
	r.counts[i]++
	r.recent = append(r.recent, wire.Check{At: now.UnixMilli(), Step: step, Result: res.result, Reason: res.reason})
	if len(r.recent) > maxRecentChecks {
		r.recent = append(r.recent[:0], r.recent[len(r.recent)-maxRecentChecks:]...)
	}
	switch res.result {
	case "pass":
		r.failed = 0
	case "fail":
		r.failed++
		log.Printf("edgecanary %s: rollout: halt: %s (failed check %d of %d, step %d)", r.name, res.reason, r.failed, r.rules.threshold, step)
		if r.failed >= r.rules.threshold {
			r.rollBack(now, fmt.Sprintf("rolled back after %d failed checks", r.failed))
		}
	}
}

// rollBack moves the version's users back to the primary: cut 0, until the
// rollout's settings change. Called with r.mu held.
func (r *rollout) rollBack(now time.Time, why string) {
	r.rolledBack = true
	r.state = wire.RolloutRolledBack
	atomic.StoreInt32(&r.cut, 0)
	r.unwritten = r.client != nil && !strings.HasPrefix(why, "rolled back by another replica")
	if r.unwritten {
		select { // poll writes it now
		case r.wake <- struct{}{}:
		default:
		}
	}
	log.Printf("edgecanary %s: rollout: %s: %s weight 0", r.name, why, r.s.version)
}

// advance sets the cut for t and returns the version's weight in percent.
// With Redis, the step never passes the last one confirmed while Redis
// answered: an outage holds the weight, and a replica that cannot read
// Redis at all gives the version no users, so a rollback another replica
// wrote is never undone by a replica that cannot see it. Called with r.mu
// held.
func (r *rollout) advance(t int64) int {
	if r.rolledBack {
		return 0
	}
	step, weight, done := r.s.sched.at(t)
	if r.client != nil && step > r.allowed {
		// Not confirmed with Redis: hold at the confirmed step, or at the
		// step applied so far when that is higher (Redis added to a running
		// rollout): never move the version's users back.
		held := r.allowed
		if r.step > held {
			held = r.step
		}
		if step > held {
			step, done, weight = held, false, 0
			if held > 0 {
				weight = r.s.sched.weights[held-1]
			}
		}
	}
	state := wire.RolloutProgressing
	switch {
	case step == 0:
		state = wire.RolloutWaiting
	case done:
		state = wire.RolloutComplete
	}
	if step != r.step || state != r.state {
		switch {
		case state == wire.RolloutComplete && r.state != wire.RolloutComplete:
			log.Printf("edgecanary %s: rollout complete: %s weight %d", r.name, r.s.version, weight)
		case step > r.step:
			log.Printf("edgecanary %s: rollout: advance %s weight %d (step %d of %d)", r.name, r.s.version, weight, step, len(r.s.sched.weights))
		}
	}
	r.step, r.state = step, state
	atomic.StoreInt32(&r.cut, int32(weight*numBuckets/100))
	return weight
}

// readTotals reads the version's and the primary's counters. Called with
// r.mu held.
func (r *rollout) readTotals() windowTotals {
	var w windowTotals
	w.version = readVerTotals(r.vs)
	w.primary = readVerTotals(r.ps)
	if r.br != nil {
		_, tr := breakerSnapshot(r.br, breakerNow())
		w.version.opened = tr[stateOpen]
	}
	return w
}

func readVerTotals(vs *verStats) totals {
	var t totals
	if vs == nil {
		return t
	}
	vs.sem <- lockTok
	for k, n := range vs.counts {
		t.requests += n
		if code := k >> 4; code >= 500 && code <= 599 {
			t.errors += n
		}
	}
	t.hist = append([]uint64(nil), vs.hist...)
	<-vs.sem
	return t
}

// report is the rollout as the report carries it.
func (r *rollout) report() *wire.Rollout {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &wire.Rollout{
		Version:     r.s.version,
		Start:       r.s.sched.start / 1e6,
		IntervalMs:  r.s.sched.interval / 1e6,
		StepWeights: make([]float64, len(r.s.sched.weights)),
		Step:        r.step,
		State:       r.state,
		Shared:      r.clientKey != "",
		Failed:      r.failed,
		Checks:      r.counts,
		Recent:      append([]wire.Check{}, r.recent...),
	}
	for i, w := range r.s.sched.weights {
		out.StepWeights[i] = float64(w)
	}
	return out
}

// publishWeights sets the effective weights the report shows, while r is
// the middleware's rollout (a reload may have removed or replaced it): the
// version's share is its weight; every other version keeps the part of its
// range in the layout above the version's cut.
func publishWeights(st *mwStats, r *rollout, weight int, ranges map[string][2]int) {
	version := r.s.version
	cut := weight * numBuckets / 100
	w := make(map[string]float64, len(ranges)+1)
	w[version] = float64(cut) / numBuckets
	for name, rg := range ranges {
		lo := rg[0]
		if lo < cut {
			lo = cut
		}
		if rg[1] > lo {
			w[name] = float64(rg[1]-lo) / numBuckets
		} else {
			w[name] = 0
		}
	}
	st.mu.Lock()
	if st.rollout == r {
		st.weights = w
	}
	st.mu.Unlock()
}

// setupRollout lays the buckets out for the rollout s and starts it (or
// takes over the one running with the same settings). Reporting's counters
// are set up (c.st).
func (c *canary) setupRollout(ctx context.Context, s *rolloutSettings, rc RedisConfig, versions map[string]VersionConfig) error {
	var client *redisClient
	clientKey := ""
	if len(rc.Endpoints) == 0 {
		if rc.TLS != nil || rc.Username != "" || rc.Password != "" {
			return errors.New("rollout.redis.endpoints: required when other rollout.redis settings are set")
		}
	} else {
		var err error
		if client, clientKey, err = acquireRedis("rollout.redis", rc, true); err != nil {
			return err
		}
	}
	weights := map[string]int{}
	for n, v := range versions {
		weights[n] = v.Weight
	}
	c.layout(weights, s.version, s.sched.weights[len(s.sched.weights)-1]*numBuckets/100)
	ranges := layoutRanges(c)
	c.ramp = c.byName[s.version]
	r := startRollout(ctx, c, s, client, clientKey, ranges)
	c.cut = &r.cut
	return nil
}

// owner is the version that owns bucket b now: with a running rollout, its
// version below the rollout's cut, else the configured layout. The
// generated paths inline the same test (HAS.rollout).
func owner(c *canary, b int) *route {
	if c.cut != nil && b < int(atomic.LoadInt32(c.cut)) {
		return c.ramp
	}
	return c.bucketOf[b]
}

// layoutRanges lists each version's bucket range in c.bucketOf.
func layoutRanges(c *canary) map[string][2]int {
	out := map[string][2]int{}
	names := make([]string, 0, len(c.routes))
	for _, r := range c.routes {
		names = append(names, r.name)
	}
	sort.Strings(names)
	for _, n := range names {
		lo, hi := -1, -1
		for b, r := range c.bucketOf {
			if r.name == n {
				if lo < 0 {
					lo = b
				}
				hi = b + 1
			}
		}
		if lo >= 0 {
			out[n] = [2]int{lo, hi}
		}
	}
	return out
}
