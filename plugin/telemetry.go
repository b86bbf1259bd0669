package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// SidecarConfig says where the plugin reports its figures.
type SidecarConfig struct {
	// Address is the sidecar's ingest URL, e.g. "http://127.0.0.1:9191".
	// Empty disables reporting.
	Address string `json:"address,omitempty"`
	// Interval between reports. Default 1s.
	Interval string `json:"interval,omitempty"`
	// Token is sent as a bearer token.
	Token string `json:"token,omitempty"`
	// Buckets are the latency histogram's upper bounds, in seconds.
	Buckets []float64 `json:"buckets,omitempty"`
}

var defaultBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func defaultSidecarConfig() SidecarConfig {
	return SidecarConfig{Interval: "1s", Buckets: append([]float64(nil), defaultBuckets...)}
}

// Methods are normalised to the standard ones plus OTHER, which is index 0:
// a method missing from methodIndex is OTHER without a second comparison.
var methodNames = []string{"OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

var methodIndex = map[string]int{
	"GET": 1, "HEAD": 2, "POST": 3, "PUT": 4, "DELETE": 5, "CONNECT": 6, "OPTIONS": 7, "TRACE": 8, "PATCH": 9,
}

// processStart identifies this Traefik process: reports carry cumulative
// totals since then, so the sidecar can tell a restart from a repeat.
var processStart = struct {
	instance string
	source   string
	started  time.Time
}{}

func init() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	processStart.instance = hex.EncodeToString(b[:])
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "traefik"
	}
	processStart.source = host
	processStart.started = time.Now()
}

// epoch is the process-wide clock origin for request timing.
var epoch = time.Now()

// clock is what every request step reads the time with, as clock(epoch):
// nanoseconds since epoch. It is time.Since, a compiled call under Yaegi as
// before; the differential tests add a skew to it, so that a response is
// slow by the test's decision, not by the machine's load.
var clock = time.Since

// mwStats are one middleware's cumulative figures since the process started.
// They survive reloads (keyed by the middleware's name) and only grow.
type mwStats struct {
	name string

	mu        sync.Mutex
	versions  map[string]*verStats
	fallbacks map[string]uint64 // "from\x00to"
	boundsNs  []int64           // bounds in nanoseconds, then math.MaxInt64: each version's (see verStats)
	bounds    []float64

	// Set by the latest New: what the report says about the current config.
	weights  map[string]float64
	primary  string
	limiter  *limiter
	breakers map[string]*breaker
	cfg      reportTarget
	live     []context.Context // contexts of the New calls still in use
	interval time.Duration
	rollout  *rollout // nil when no rollout is configured
}

type verStats struct {
	sem    chan struct{}  // the lock (cheaper than sync.Mutex in Yaegi)
	counts map[int]uint64 // code<<4 | method index
	hist   []uint64       // one per bound, plus +Inf
	bounds []int64        // hist's bounds in nanoseconds, then math.MaxInt64; replaced with hist, never modified
	sumNs  int64
}

type reportTarget struct {
	url   string
	token string
}

var statsRegistry = struct {
	sync.Mutex
	m map[string]*mwStats
}{m: map[string]*mwStats{}}

const maxStats = 1024

// getStats returns the middleware's figures, creating them once per process.
func getStats(name string, bounds []float64) *mwStats {
	statsRegistry.Lock()
	defer statsRegistry.Unlock()
	st, ok := statsRegistry.m[name]
	if !ok {
		if len(statsRegistry.m) >= maxStats {
			for k, old := range statsRegistry.m {
				old.mu.Lock()
				idle := len(old.live) == 0
				old.mu.Unlock()
				if idle {
					delete(statsRegistry.m, k)
					break
				}
			}
		}
		st = &mwStats{name: name, versions: map[string]*verStats{}, fallbacks: map[string]uint64{}}
		statsRegistry.m[name] = st
	}
	st.mu.Lock()
	if !sameBounds(st.bounds, bounds) {
		// A new histogram layout: the old counts cannot be re-bucketed.
		st.bounds = append([]float64(nil), bounds...)
		st.boundsNs = make([]int64, len(bounds)+1)
		for i, b := range bounds {
			st.boundsNs[i] = int64(b * float64(time.Second))
		}
		st.boundsNs[len(bounds)] = math.MaxInt64
		for _, vs := range st.versions {
			vs.sem <- lockTok
			vs.hist = make([]uint64, len(bounds)+1)
			vs.bounds = st.boundsNs
			vs.sumNs = 0
			<-vs.sem
		}
	}
	st.mu.Unlock()
	return st
}

func sameBounds(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// version returns the figures of one version, creating them.
func (st *mwStats) version(name string) *verStats {
	st.mu.Lock()
	defer st.mu.Unlock()
	vs, ok := st.versions[name]
	if !ok {
		vs = &verStats{sem: make(chan struct{}, 1), counts: map[int]uint64{}, hist: make([]uint64, len(st.bounds)+1), bounds: st.boundsNs}
		st.versions[name] = vs
	}
	return vs
}

// record counts one request that took d. Its bucket is found under the
// lock, in vs's own bounds, which are replaced with vs.hist: a handler built
// before a reload changed the bounds counts in the new layout. The bounds
// end with math.MaxInt64, where the search stops without a length test. sem
// is vs.sem, which a request path that always serves one version captures.
// Codes outside 0..999 are reported as 0 (see report).
func record(vs *verStats, sem chan struct{}, code int, method string, d int64) {
	sem <- lockTok
	i := 0
	for d > vs.bounds[i] {
		i++
	}
	vs.hist[i]++
	vs.sumNs += d
	vs.counts[code<<4|methodIndex[method]]++
	<-sem
}

// recordRefused counts a request the breaker refused: it has no duration.
func recordRefused(vs *verStats, code int, method string) {
	vs.sem <- lockTok
	vs.counts[code<<4|methodIndex[method]]++
	<-vs.sem
}

func recordFallback(st *mwStats, from, to string) {
	st.mu.Lock()
	st.fallbacks[from+"\x00"+to]++
	st.mu.Unlock()
}

// parseSidecar validates the sidecar settings.
func parseSidecar(cfg SidecarConfig) (reportTarget, time.Duration, []float64, error) {
	var t reportTarget
	interval := time.Second
	if cfg.Interval != "" {
		d, err := parseDuration("sidecar.interval", cfg.Interval)
		if err != nil {
			return t, 0, nil, err
		}
		if d < 100*time.Millisecond {
			return t, 0, nil, fmt.Errorf("sidecar.interval: must be at least 100ms, got %q", cfg.Interval)
		}
		interval = d
	}
	bounds := cfg.Buckets
	if len(bounds) == 0 {
		bounds = defaultBuckets
	}
	if len(bounds) > 64 {
		return t, 0, nil, fmt.Errorf("sidecar.buckets: at most 64 bounds, got %d", len(bounds))
	}
	for i, b := range bounds {
		if !(b > 0) || b > 1e6 || i > 0 && b <= bounds[i-1] {
			return t, 0, nil, fmt.Errorf("sidecar.buckets: bounds must be positive seconds in increasing order, got %v", bounds)
		}
	}
	if cfg.Address != "" {
		u, err := url.Parse(cfg.Address)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return t, 0, nil, fmt.Errorf("sidecar.address: invalid URL %q: want e.g. http://127.0.0.1:9191", cfg.Address)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/reports"
		}
		t.url = u.String()
		t.token = cfg.Token
	}
	return t, interval, bounds, nil
}

// register marks st as in use by a handler built with ctx and, when it
// reports to a sidecar, makes sure the sender runs.
func register(ctx context.Context, st *mwStats, reports bool) {
	st.mu.Lock()
	kept := st.live[:0]
	for _, c := range st.live {
		if c.Err() == nil {
			kept = append(kept, c)
		}
	}
	st.live = append(kept, ctx) //nolint:gocritic // kept shares st.live's array: the live contexts, filtered in place
	st.mu.Unlock()
	if !reports {
		return // counters for a rollout's checks only
	}

	sender.Lock()
	sender.reporting[st] = true
	start := !sender.running
	sender.running = true
	sender.Unlock()
	if start {
		go sendLoop()
	}
}

// sender is the one background goroutine per process that reports to the
// sidecars. It does not live on any New call's context, since each of those
// ends at the next reload; it stops by itself once no live handler has needed
// it for senderGrace, after a last report.
var sender = struct {
	sync.Mutex
	running   bool
	reporting map[*mwStats]bool
	failures  uint64
	lastLog   time.Time
	sent      map[string]time.Time // by URL
}{reporting: map[*mwStats]bool{}, sent: map[string]time.Time{}}

const senderTick = 100 * time.Millisecond

// senderGrace is in nanoseconds, read atomically: a test shortens it while
// senders started by earlier tests may still run.
var senderGrace = int64(30 * time.Second)

var reportClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	},
}

func sendLoop() {
	idleSince := time.Time{}
	for {
		time.Sleep(senderTick)
		now := time.Now()
		groups, anyLive := dueReports(now)
		for u, g := range groups {
			sendReport(u, g)
		}
		if anyLive {
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = now
		}
		if int64(now.Sub(idleSince)) < atomic.LoadInt64(&senderGrace) {
			continue
		}
		sender.Lock()
		if len(liveStats()) > 0 {
			sender.Unlock()
			continue
		}
		// A last report carries the final totals of every middleware.
		final := map[string][]*mwStats{}
		for st := range sender.reporting {
			st.mu.Lock()
			if st.cfg.url != "" {
				final[st.cfg.url+"\x00"+st.cfg.token] = append(final[st.cfg.url+"\x00"+st.cfg.token], st)
			}
			st.mu.Unlock()
		}
		sender.reporting = map[*mwStats]bool{}
		sender.running = false
		sender.Unlock()
		for u, g := range final {
			sendReport(u, g)
		}
		return
	}
}

// liveStats lists the reporting middlewares with a live handler. Called with
// sender locked.
func liveStats() []*mwStats {
	var out []*mwStats
	for st := range sender.reporting {
		st.mu.Lock()
		live := false
		for _, c := range st.live {
			if c.Err() == nil {
				live = true
				break
			}
		}
		st.mu.Unlock()
		if live {
			out = append(out, st)
		}
	}
	return out
}

// dueReports groups the middlewares whose report is due by target.
func dueReports(now time.Time) (map[string][]*mwStats, bool) {
	sender.Lock()
	defer sender.Unlock()
	live := liveStats()
	groups := map[string][]*mwStats{}
	for _, st := range live {
		st.mu.Lock()
		key := st.cfg.url + "\x00" + st.cfg.token
		interval := st.interval
		st.mu.Unlock()
		if !strings.HasPrefix(key, "\x00") && now.Sub(sender.sent[key]) >= interval-senderTick/2 {
			groups[key] = append(groups[key], st)
		}
	}
	for key := range groups {
		sender.sent[key] = now
	}
	return groups, len(live) > 0
}

// snapshot copies st's cumulative totals into the wire format.
func snapshot(st *mwStats) wire.Middleware {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := wire.Middleware{Name: st.name, Buckets: st.bounds, Fallbacks: []wire.Fallback{}}
	if l := st.limiter; l != nil {
		m.RateLimitRejected = atomic.LoadUint64(&l.counters.rejected)
		m.RateLimitDryRun = atomic.LoadUint64(&l.counters.dryRejected)
		m.RateLimitEvicted = atomic.LoadUint64(&l.counters.evictions)
		m.RateLimitStoreErrors = atomic.LoadUint64(&l.counters.storeErrors)
		m.RateLimitLeased = atomic.LoadUint64(&l.counters.leased)
		m.RateLimitReturned = atomic.LoadUint64(&l.counters.returned)
		if l.shared != nil {
			m.RateLimitStore = "redis"
			m.RateLimitStoreUp = atomic.LoadInt32(&l.shared.up) == 1
			if l.shared.life > 0 {
				m.RateLimitLease = l.shared.lease
			}
		}
	} else if c := rlCountersFor(st.name, false); c != nil {
		m.RateLimitRejected = atomic.LoadUint64(&c.rejected)
		m.RateLimitDryRun = atomic.LoadUint64(&c.dryRejected)
		m.RateLimitEvicted = atomic.LoadUint64(&c.evictions)
		m.RateLimitStoreErrors = atomic.LoadUint64(&c.storeErrors)
		m.RateLimitLeased = atomic.LoadUint64(&c.leased)
		m.RateLimitReturned = atomic.LoadUint64(&c.returned)
	}
	names := make([]string, 0, len(st.versions))
	for n := range st.versions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		vs := st.versions[n]
		w, configured := st.weights[n]
		vs.sem <- lockTok
		rv := wire.Version{Name: n, Primary: n == st.primary, Weight: w, Configured: configured,
			Requests: []wire.Request{}, Hist: append([]uint64(nil), vs.hist...), SumSeconds: float64(vs.sumNs) / 1e9}
		counts := make(map[int]uint64, len(vs.counts))
		for k, c := range vs.counts {
			if code := k >> 4; code < 0 || code > 999 {
				k &= 15 // not a status code: reported as 0
			}
			counts[k] += c
		}
		<-vs.sem
		for k, c := range counts {
			rv.Requests = append(rv.Requests, wire.Request{Code: k >> 4, Method: methodNames[k&15], Count: c})
		}
		if b := st.breakers[n]; b != nil {
			rv.State, rv.Transitions = breakerSnapshot(b, breakerNow())
		}
		sort.Slice(rv.Requests, func(i, j int) bool {
			a, b := rv.Requests[i], rv.Requests[j]
			return a.Code < b.Code || a.Code == b.Code && a.Method < b.Method
		})
		m.Versions = append(m.Versions, rv)
	}
	for k, c := range st.fallbacks {
		i := strings.IndexByte(k, 0)
		m.Fallbacks = append(m.Fallbacks, wire.Fallback{From: k[:i], To: k[i+1:], Count: c})
	}
	sort.Slice(m.Fallbacks, func(i, j int) bool {
		return m.Fallbacks[i].From+m.Fallbacks[i].To < m.Fallbacks[j].From+m.Fallbacks[j].To
	})
	if st.rollout != nil {
		m.Rollout = st.rollout.report()
	}
	return m
}

// buildReport is the body sent to one sidecar.
func buildReport(group []*mwStats, now time.Time) ([]byte, error) {
	r := wire.Report{
		Version:   wire.FormatVersion,
		Source:    processStart.source,
		Instance:  processStart.instance,
		StartedAt: processStart.started.UnixMilli(),
		SentAt:    now.UnixMilli(),
	}
	sort.Slice(group, func(i, j int) bool { return group[i].name < group[j].name })
	for _, st := range group {
		r.Middlewares = append(r.Middlewares, snapshot(st))
	}
	return json.Marshal(r)
}

// sendReport posts one report. A failure is only logged (rate-limited): the
// next report carries the same cumulative totals, so nothing is lost.
func sendReport(key string, group []*mwStats) {
	i := strings.IndexByte(key, 0)
	target, token := key[:i], key[i+1:]
	body, err := buildReport(group, time.Now())
	if err == nil {
		err = postReport(target, token, body)
	}
	if err != nil {
		sender.Lock()
		sender.failures++
		n := sender.failures
		logNow := time.Since(sender.lastLog) > time.Minute
		if logNow {
			sender.lastLog = time.Now()
		}
		sender.Unlock()
		if logNow {
			log.Printf("edgecanary: reporting to the sidecar at %s failed (%d failures so far; totals are cumulative, nothing is lost): %v", target, n, err)
		}
	}
}

func postReport(target, token string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := reportClient.Do(req)
	if err != nil {
		return err
	}
	_ = res.Body.Close() // a 204, or an error text that only the status matters of
	if res.StatusCode/100 != 2 {
		return errors.New("sidecar answered " + res.Status)
	}
	return nil
}

// setupStats wires reporting: per-version figures, current weights and
// breakers for the report, and the background sender.
func (c *canary) setupStats(ctx context.Context, target reportTarget, interval time.Duration, bounds []float64, versions map[string]VersionConfig) {
	st := getStats(c.name, bounds)
	var total float64
	for _, v := range versions {
		total += float64(v.Weight)
	}
	weights := map[string]float64{}
	breakersByName := map[string]*breaker{}
	for _, r := range c.routes {
		r.vs = st.version(r.name)
		weights[r.name] = float64(versions[r.name].Weight) / total
		if r.br != nil {
			breakersByName[r.name] = r.br
		}
	}
	st.mu.Lock()
	st.weights = weights
	st.primary = c.primary.name
	st.limiter = c.rl
	st.breakers = breakersByName
	st.cfg = target
	st.interval = interval
	st.rollout = nil // setupRollout sets it again
	st.mu.Unlock()
	c.st = st
	register(ctx, st, target.url != "")
}
