package plugin

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Fixed instants, in nanoseconds since the limiter's epoch.
const (
	ms  = int64(time.Millisecond)
	sec = int64(time.Second)
)

var limiterSeq int

// testLimiter builds a limiter under a unique middleware name, so tests do
// not share buckets through the reload registry.
func testLimiter(t testing.TB, cfg RateLimitConfig) *limiter {
	t.Helper()
	limiterSeq++
	l, err := newLimiter(context.Background(), fmt.Sprintf("rl-test-%d@file", limiterSeq), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		t.Fatal("limiter is off")
	}
	return l
}

func rlConfig(average int64, period string, burst int64) RateLimitConfig {
	cfg := defaultRateLimitConfig()
	cfg.Average, cfg.Period, cfg.Burst = average, period, burst
	return cfg
}

func TestLimiterBurstThenSteadyRateOverAMinute(t *testing.T) {
	l := testLimiter(t, rlConfig(10, "1s", 5)) // 10/s, burst 5: interval 100ms, maxDelay 50ms
	admitted := 0
	// A client that sends every 10ms for a simulated minute.
	for now := int64(0); now < 60*sec; now += 10 * ms {
		if wait := take(l, "c", now); wait <= l.maxDelay {
			admitted++
		}
	}
	// burst + rate*duration, give or take the one token absorbed by maxDelay.
	if want := 5 + 10*60; admitted < want-1 || admitted > want+1 {
		t.Errorf("admitted %d in a minute, want %d±1", admitted, want)
	}

	l = testLimiter(t, rlConfig(10, "1s", 5))
	for i := 0; i < 5; i++ {
		if wait := take(l, "c", 0); wait > 0 {
			t.Fatalf("burst request %d waited %v", i, time.Duration(wait))
		}
	}
	if wait := take(l, "c", 0); wait <= l.maxDelay {
		t.Fatalf("the 6th request at the same instant was admitted (wait %v)", time.Duration(wait))
	}
	// 100ms later exactly one token is back.
	if wait := take(l, "c", 100*ms); wait > 0 {
		t.Fatalf("refilled token: wait %v", time.Duration(wait))
	}
	// 60ms after that a request waits 40ms, within maxDelay: absorbed.
	if wait := take(l, "c", 160*ms); wait != 40*ms {
		t.Fatalf("short wait: got %v, want 40ms", time.Duration(wait))
	}
}

func TestLimiterSlowRatesAndMaxDelay(t *testing.T) {
	testCases := []struct {
		desc         string
		average      int64
		period       string
		wantInterval time.Duration
		wantMaxDelay time.Duration
	}{
		{desc: "100/s", average: 100, period: "1s", wantInterval: 10 * time.Millisecond, wantMaxDelay: 5 * time.Millisecond},
		{desc: "below 1/s", average: 5, period: "10s", wantInterval: 2 * time.Second, wantMaxDelay: 500 * time.Millisecond},
		{desc: "1 per minute", average: 1, period: "1m", wantInterval: time.Minute, wantMaxDelay: 500 * time.Millisecond},
		{desc: "period in seconds", average: 50, period: "0.5", wantInterval: 10 * time.Millisecond, wantMaxDelay: 5 * time.Millisecond},
		{desc: "3/s truncates like Traefik", average: 3, period: "1s", wantInterval: 333333333, wantMaxDelay: time.Second / 6},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			l := testLimiter(t, rlConfig(test.average, test.period, 1))
			if time.Duration(l.interval) != test.wantInterval || time.Duration(l.maxDelay) != test.wantMaxDelay {
				t.Errorf("interval %v maxDelay %v, want %v and %v", time.Duration(l.interval), time.Duration(l.maxDelay), test.wantInterval, test.wantMaxDelay)
			}
		})
	}
}

// TestLimiterMatchesXTimeRate feeds the same arrivals, on fixed instants, to
// the limiter and to golang.org/x/time/rate used as Traefik uses it (Reserve,
// then Cancel past maxDelay), and expects the same decisions.
func TestLimiterMatchesXTimeRate(t *testing.T) {
	configs := []struct {
		average int64
		period  time.Duration
		burst   int64
	}{
		{100, time.Second, 1}, {100, time.Second, 100}, {100, time.Second, 200},
		{5, 10 * time.Second, 1}, {1, time.Minute, 1}, {50, 500 * time.Millisecond, 1},
		{7, time.Second, 3}, {1000, time.Second, 10},
	}
	seqs := 40
	if testing.Short() {
		seqs = 4
	}
	rng := rand.New(rand.NewSource(1))
	epoch := time.Unix(1700000000, 0)
	for _, c := range configs {
		for s := 0; s < seqs; s++ {
			l := testLimiter(t, rlConfig(c.average, c.period.String(), c.burst))
			ref := rate.NewLimiter(rate.Limit(float64(c.average)*float64(time.Second)/float64(c.period)), int(c.burst))
			// Arrivals at a random mean rate between 0.5x and 4x the limit.
			mean := float64(l.interval) * (0.25 + rng.Float64()*1.75)
			now := int64(0)
			for i := 0; i < 300; i++ {
				now += int64(rng.ExpFloat64()*mean) + 1
				wait := take(l, "k", now)
				at := epoch.Add(time.Duration(now))
				r := ref.ReserveN(at, 1)
				refWait := r.DelayFrom(at)
				refOK := r.OK() && refWait <= time.Duration(l.maxDelay)
				if !refOK {
					r.CancelAt(at)
				}
				ok := wait <= l.maxDelay
				if ok != refOK {
					t.Fatalf("avg %d/%v burst %d, seq %d, arrival %d at %v: limiter admits %v (wait %v), x/time/rate %v (wait %v)",
						c.average, c.period, c.burst, s, i, time.Duration(now), ok, time.Duration(wait), refOK, refWait)
				}
				if ok && absDiff(time.Duration(wait), refWait) > time.Microsecond && wait > 0 {
					t.Fatalf("arrival %d: waits differ: %v vs %v", i, time.Duration(wait), refWait)
				}
			}
		}
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a < b {
		return b - a
	}
	return a - b
}

func TestRetryAfterSeconds(t *testing.T) {
	testCases := []struct {
		wait int64
		want int64
	}{
		{wait: -5 * sec, want: 0}, {wait: 0, want: 0}, {wait: 1, want: 1}, {wait: 999 * ms, want: 1},
		{wait: sec, want: 1}, {wait: sec + 1, want: 2}, {wait: 59*sec + 500*ms, want: 60},
	}
	for _, test := range testCases {
		if got := retryAfterSeconds(test.wait); got != test.want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", time.Duration(test.wait), got, test.want)
		}
	}
}

func rlCanary(t *testing.T, rl RateLimitConfig) *canary {
	t.Helper()
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.RateLimit = rl
	limiterSeq++
	c, err := newCanary(context.Background(), stableNext, cfg, fmt.Sprintf("rl-http-%d@file", limiterSeq))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRateLimitHTTP(t *testing.T) {
	c := rlCanary(t, rlConfig(1, "1m", 3))
	name := c.name
	codes := []int{}
	var last *http.Response
	for i := 0; i < 5; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.RemoteAddr = "192.0.2.10:1234"
		_, res := serve(c, req)
		codes = append(codes, res.StatusCode)
		wantPolicy := `"` + name + `";q=1;w=60`
		if got := res.Header.Get("RateLimit-Policy"); got != wantPolicy {
			t.Errorf("request %d: RateLimit-Policy %q, want %q", i, got, wantPolicy)
		}
		if i < 3 {
			want := fmt.Sprintf(`"%s";r=%d;t=`, name, 2-i)
			if got := res.Header.Get("RateLimit"); !strings.HasPrefix(got, want) {
				t.Errorf("request %d: RateLimit %q, want prefix %q", i, got, want)
			}
		}
		last = res
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429]" {
		t.Fatalf("codes %v", codes)
	}
	if ra := last.Header.Get("Retry-After"); ra != "60" {
		t.Errorf("Retry-After %q, want 60 (a token every minute)", ra)
	}
	if xr := last.Header.Get("X-Retry-In"); !strings.HasPrefix(xr, "59.") && xr != "1m0s" {
		t.Errorf("X-Retry-In %q", xr)
	}
	if got := last.Header.Get("RateLimit"); !strings.HasPrefix(got, `"`+name+`";r=0;t=`) {
		t.Errorf("RateLimit on a 429: %q", got)
	}
	// Another client is not affected.
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.RemoteAddr = "192.0.2.11:1234"
	if _, res := serve(c, req); res.StatusCode != http.StatusOK {
		t.Errorf("second client: %d", res.StatusCode)
	}
	if c.rl.counters.rejected != 2 {
		t.Errorf("rejected counter %d, want 2", c.rl.counters.rejected)
	}
}

func TestRateLimitRejectionNeverReachesNext(t *testing.T) {
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.RateLimit = rlConfig(1, "1h", 1)
	calls := 0
	next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { calls++ })
	h, err := New(context.Background(), next, cfg, "rl-next@file")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://x/", nil))
	}
	if calls != 1 {
		t.Errorf("next called %d times, want 1", calls)
	}
}

func TestRateLimitDryRun(t *testing.T) {
	cfg := rlConfig(1, "1h", 2)
	cfg.DryRun = true
	c := rlCanary(t, cfg)
	for i := 0; i < 5; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		if _, res := serve(c, req); res.StatusCode != http.StatusOK {
			t.Fatalf("dry run rejected request %d: %d", i, res.StatusCode)
		}
	}
	if c.rl.counters.dryRejected != 3 || c.rl.counters.rejected != 0 {
		t.Errorf("dry-run rejections %d, rejections %d; want 3 and 0", c.rl.counters.dryRejected, c.rl.counters.rejected)
	}
}

func TestRateLimitHeadersOff(t *testing.T) {
	cfg := rlConfig(1, "1h", 1)
	cfg.Headers = false
	c := rlCanary(t, cfg)
	_, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if res.Header.Get("RateLimit") != "" || res.Header.Get("RateLimit-Policy") != "" {
		t.Error("headers: false still sent RateLimit fields")
	}
	_, res = serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("429 without headers: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

func TestRateLimitBadConfig(t *testing.T) {
	testCases := []struct {
		desc    string
		mutate  func(*RateLimitConfig)
		wantErr string
	}{
		{desc: "period abc", mutate: func(c *RateLimitConfig) { c.Period = "abc" }, wantErr: "rateLimit.period"},
		{desc: "negative average", mutate: func(c *RateLimitConfig) { c.Average = -1 }, wantErr: "rateLimit.average"},
		{desc: "a bucket that refills over centuries", mutate: func(c *RateLimitConfig) { c.Average = 1; c.Period = "1000000000"; c.Burst = 9 }, wantErr: "rateLimit.burst"},
		{desc: "two criteria", mutate: func(c *RateLimitConfig) {
			c.SourceCriterion.RequestHost = true
			c.SourceCriterion.RequestHeaderName = "X-Key"
		}, wantErr: "rateLimit.sourceCriterion"},
		{desc: "negative depth", mutate: func(c *RateLimitConfig) { c.SourceCriterion.IPStrategy = &IPStrategy{Depth: -1} }, wantErr: "ipStrategy.depth"},
		{desc: "bad excluded", mutate: func(c *RateLimitConfig) { c.SourceCriterion.IPStrategy = &IPStrategy{ExcludedIPs: []string{"nope"}} }, wantErr: "excludedIPs[0]"},
		{desc: "bad subnet", mutate: func(c *RateLimitConfig) { c.SourceCriterion.IPStrategy = &IPStrategy{IPv6Subnet: 129} }, wantErr: "ipv6Subnet"},
		{desc: "negative maxSources", mutate: func(c *RateLimitConfig) { c.MaxSources = -1 }, wantErr: "rateLimit.maxSources"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := CreateConfig()
			cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
			cfg.RateLimit = rlConfig(10, "1s", 1)
			test.mutate(&cfg.RateLimit)
			_, err := New(context.Background(), stableNext, cfg, "rl-bad@file")
			if err == nil || !strings.Contains(err.Error(), test.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, test.wantErr)
			}
		})
	}
}

func TestLimiterSurvivesReloadWithSameSettings(t *testing.T) {
	cfg := rlConfig(1, "1h", 1)
	a, err := newLimiter(context.Background(), "reload@file", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if wait := take(a, "k", int64(time.Since(epoch))); wait > 0 {
		t.Fatal("first request waited")
	}
	b, _ := newLimiter(context.Background(), "reload@file", cfg)
	if b != a {
		t.Fatal("a reload with the same settings started fresh buckets")
	}
	cfg.Burst = 2
	c, _ := newLimiter(context.Background(), "reload@file", cfg)
	if c == a {
		t.Fatal("a changed setting kept the old buckets")
	}
	if wait := take(c, "k", int64(time.Since(epoch))); wait > 0 {
		t.Fatal("fresh buckets: first request waited")
	}
}

// limiterKept reports whether name's limiter in limiters is l.
func limiterKept(name string, l *limiter) bool {
	limiters.Lock()
	defer limiters.Unlock()
	e := limiters.m[name]
	return e != nil && e.l == l
}

// TestLimiterOfARemovedMiddlewareIsDropped: a limiter that no New returned
// for the grace after the context of the latest New that did ended (its
// middleware was removed) leaves limiters and gives back its Redis client.
// One that the next configuration's New returned stays. Before, a removed
// middleware's limiter kept its buckets and its Redis pool open until 4096
// others had been made.
func TestLimiterOfARemovedMiddlewareIsDropped(t *testing.T) {
	srv := newTestRedis(t, false)
	const name = "removed-limiter@file"
	cfg := sharedConfig(srv.addr(), 10, "1s", 10)
	first, reload := context.WithCancel(context.Background())
	l, err := newLimiter(first, name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := sharedRequest(l, "alice"); code != http.StatusOK {
		t.Fatalf("first request: %d", code)
	}
	limiters.Lock()
	e := limiters.m[name]
	limiters.Unlock()
	watched := make(chan struct{})
	go func() {
		watchLimiter(name, e, 50*time.Millisecond)
		close(watched)
	}()
	second, remove := context.WithCancel(context.Background())
	if again, _ := newLimiter(second, name, cfg); again != l {
		t.Fatal("the next configuration's New made a new limiter")
	}
	reload()
	time.Sleep(300 * time.Millisecond) // the grace after first ended, and more
	if !limiterKept(name, l) || atomic.LoadInt32(&l.shared.client.closed) != 0 {
		t.Fatal("a limiter still configured was dropped when the configuration before ended")
	}
	if code, _ := sharedRequest(l, "alice"); code != http.StatusOK {
		t.Fatalf("second request: %d", code)
	}
	remove()
	select {
	case <-watched:
	case <-time.After(5 * time.Second):
		t.Fatal("the limiter of a removed middleware is still watched 5s after its context ended")
	}
	if limiterKept(name, l) {
		t.Error("the limiter of a removed middleware is still kept")
	}
	if atomic.LoadInt32(&l.shared.client.closed) == 0 {
		t.Error("the limiter of a removed middleware still holds its Redis client open")
	}
}

// TestNewDropsTheLimiterOfARemovedMiddleware: New watches the limiter it
// returns; reloadGrace after its context ends, the limiter is dropped.
func TestNewDropsTheLimiterOfARemovedMiddleware(t *testing.T) {
	if testing.Short() {
		t.Skip("waits reloadGrace")
	}
	t.Parallel()
	srv := newTestRedis(t, false)
	const name = "removed-new@file"
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.RateLimit = sharedConfig(srv.addr(), 10, "1s", 10)
	live, remove := context.WithCancel(context.Background())
	c, err := newCanary(live, stableNext, cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	remove()
	deadline := time.Now().Add(reloadGrace + 5*time.Second)
	for limiterKept(name, c.rl) || atomic.LoadInt32(&c.rl.shared.client.closed) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reloadGrace + 5s after its middleware was removed, its limiter is kept (%v) or its client open", limiterKept(name, c.rl))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fillLimiters makes n limiters with ctx, named prefix-0@file and on, that
// use no Redis: enough of them reach the bound of limiters.
func fillLimiters(ctx context.Context, t *testing.T, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := newLimiter(ctx, fmt.Sprintf("%s-%d@file", prefix, i), rlConfig(10, "1s", 1)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLimiterKeys(t *testing.T) {
	testCases := []struct {
		desc    string
		ip      *IPStrategy
		header  string
		host    bool
		remote  string
		xff     []string
		hdrVal  string
		reqHost string
		want    string
	}{
		{desc: "peer v4", remote: "192.0.2.1:1234", want: "192.0.2.1"},
		{desc: "peer ignores xff", remote: "192.0.2.1:1234", xff: []string{"203.0.113.9"}, want: "192.0.2.1"},
		{desc: "peer v6", remote: "[2001:db8::1]:443", want: "2001:db8::1"},
		{desc: "peer v4-mapped", remote: "[::ffff:192.0.2.1]:80", want: "192.0.2.1"},
		{desc: "peer zone", remote: "[fe80::1%eth0]:80", want: "fe80::1"},
		{desc: "peer without port", remote: "192.0.2.1", want: "192.0.2.1"},
		{desc: "peer v6 subnet", ip: &IPStrategy{IPv6Subnet: 64}, remote: "[2001:db8:1:2:3:4:5:6]:1", want: "2001:db8:1:2::/64"},
		{desc: "depth 1", ip: &IPStrategy{Depth: 1}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1, 198.51.100.2"}, want: "198.51.100.2"},
		{desc: "depth 2", ip: &IPStrategy{Depth: 2}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1, 198.51.100.2"}, want: "203.0.113.1"},
		{desc: "depth over two headers", ip: &IPStrategy{Depth: 2}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1", "198.51.100.2"}, want: "203.0.113.1"},
		{desc: "depth beyond the list takes the leftmost", ip: &IPStrategy{Depth: 3}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1, 198.51.100.2"}, want: "203.0.113.1"},
		{desc: "depth without xff is the peer", ip: &IPStrategy{Depth: 1}, remote: "10.0.0.1:1", want: "10.0.0.1"},
		{desc: "depth bad value is the peer", ip: &IPStrategy{Depth: 1}, remote: "10.0.0.1:1", xff: []string{"not-an-ip"}, want: "10.0.0.1"},
		{desc: "depth v6 with port", ip: &IPStrategy{Depth: 1}, remote: "10.0.0.1:1", xff: []string{"[2001:db8::5]:99"}, want: "2001:db8::5"},
		{desc: "excluded", ip: &IPStrategy{ExcludedIPs: []string{"198.51.100.0/24"}}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1, 198.51.100.2, 198.51.100.3"}, want: "203.0.113.1"},
		{desc: "all excluded is the peer", ip: &IPStrategy{ExcludedIPs: []string{"0.0.0.0/0"}}, remote: "10.0.0.1:1", xff: []string{"203.0.113.1"}, want: "10.0.0.1"},
		{desc: "excluded bad value is the peer", ip: &IPStrategy{ExcludedIPs: []string{"198.51.100.0/24"}}, remote: "10.0.0.1:1", xff: []string{"junk, 198.51.100.3"}, want: "10.0.0.1"},
		{desc: "header", header: "X-Api-Key", remote: "10.0.0.1:1", hdrVal: "abc", want: "h:abc"},
		{desc: "header missing is the peer", header: "X-Api-Key", remote: "10.0.0.1:1", want: "10.0.0.1"},
		{desc: "header equal to an IP stays apart", header: "X-Api-Key", remote: "10.0.0.1:1", hdrVal: "10.0.0.1", want: "h:10.0.0.1"},
		{desc: "long header is hashed", header: "X-Api-Key", remote: "10.0.0.1:1", hdrVal: strings.Repeat("a", 500), want: "h:sha256:"},
		{desc: "host", host: true, remote: "10.0.0.1:1", reqHost: "Shop.Example", want: "host:shop.example"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := rlConfig(1, "1s", 1)
			cfg.SourceCriterion = SourceCriterion{IPStrategy: test.ip, RequestHeaderName: test.header, RequestHost: test.host}
			l := testLimiter(t, cfg)
			req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
			req.RemoteAddr = test.remote
			for _, v := range test.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			if test.hdrVal != "" {
				req.Header.Set(test.header, test.hdrVal)
			}
			if test.reqHost != "" {
				req.Host = test.reqHost
			}
			var got string
			if l.source == sourcePeer {
				// the peer path of allow
				rec := httptest.NewRecorder()
				allow(l, rec, req, sec)
				for k := range l.buckets {
					got = k
				}
			} else {
				got = sourceKey(l, req)
			}
			if got != test.want && !(strings.HasSuffix(test.want, ":") && strings.HasPrefix(got, test.want)) {
				t.Errorf("key %q, want %q", got, test.want)
			}
		})
	}
}

func TestLimiterEvictionBound(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys: not in -short (nor in Yaegi)")
	}
	cfg := rlConfig(1, "1h", 10)
	cfg.MaxSources = 65536
	l := testLimiter(t, cfg)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	now := int64(sec)
	// A busy client, then a flood of a million one-shot keys.
	for i := 0; i < 5; i++ {
		take(l, "busy", now)
	}
	for i := 0; i < 1000000; i++ {
		take(l, fmt.Sprintf("oneshot-%d", i), now+int64(i))
		if i%1000 == 0 {
			take(l, "busy", now+int64(i)) // it keeps coming back
		}
		if len(l.buckets) > cfg.MaxSources {
			t.Fatalf("%d entries after %d keys, bound %d", len(l.buckets), i, cfg.MaxSources)
		}
	}
	if _, ok := l.buckets["busy"]; !ok {
		t.Error("the busy client was evicted by one-shot keys")
	}
	if l.counters.evictions < 1000000-uint64(cfg.MaxSources) {
		t.Errorf("evictions %d, want at least %d", l.counters.evictions, 1000000-cfg.MaxSources)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("1,000,000 keys: %d entries, %d evictions, heap %+d KiB", len(l.buckets), l.counters.evictions, grown/1024)
	if grown > 64<<20 {
		t.Errorf("heap grew by %d MiB for %d entries", grown>>20, cfg.MaxSources)
	}
}

func TestLimiterIdleEntriesExpire(t *testing.T) {
	l := testLimiter(t, rlConfig(10, "1s", 1))
	for i := 0; i < 1000; i++ {
		take(l, fmt.Sprintf("k%d", i), 0)
	}
	// Long after, every bucket is full again; new keys sweep old ones out.
	for i := 0; i < 2000; i++ {
		take(l, fmt.Sprintf("n%d", i), 10*sec)
	}
	old := 0
	for k := range l.buckets {
		if strings.HasPrefix(k, "k") {
			old++
		}
	}
	if old > 50 {
		t.Errorf("%d of 1000 idle entries remain after 2000 inserts", old)
	}
}

func TestLimiterConcurrentOneKey(t *testing.T) {
	l := testLimiter(t, rlConfig(1, "1h", 25))
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if wait := take(l, "k", 1000); wait <= 0 {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if admitted != 25 {
		t.Errorf("8 goroutines admitted %d, want exactly the burst 25", admitted)
	}
}

// TestAllowMatchesTake holds the GCRA step inlined in allow for peers to
// the same decisions as take, on the same random arrivals at fixed instants.
// Arrivals that take would delay are skipped in both, so allow never sleeps.
// The RateLimit field of an admitted request must say what the bucket holds:
// r whole tokens left, and t seconds (rounded up) until it is full again,
// whether it comes from the precomputed table or not (the last config is too
// large for one).
func TestAllowMatchesTake(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, cfg := range []RateLimitConfig{rlConfig(100, "1s", 1), rlConfig(100, "1s", 50), rlConfig(5, "10s", 2), rlConfig(7, "1s", 3), rlConfig(100000, "1s", 5000)} {
		byKey, byPeer := testLimiter(t, cfg), testLimiter(t, cfg)
		var now int64
		for i := 0; i < 1000; i++ {
			now += 1 + int64(rng.ExpFloat64()*float64(byKey.interval)*0.8)
			if b := byKey.buckets["192.0.2.1"]; b != nil && b.tat >= now {
				if w := b.tat + byKey.interval - now - byKey.window; w > 0 && w <= byKey.maxDelay {
					continue // a delayed admission: allow would sleep
				}
			}
			wait := take(byKey, "192.0.2.1", now)
			req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
			req.RemoteAddr = "192.0.2.1:4242"
			rec := httptest.NewRecorder()
			if admitted := allow(byPeer, rec, req, now) >= 0; admitted != (wait <= 0) {
				t.Fatalf("%+v arrival %d: take waits %v, allow admitted %v", cfg, i, time.Duration(wait), admitted)
			}
			if wait <= 0 {
				full := byKey.buckets["192.0.2.1"].tat - now // until the bucket is full again
				want := fmt.Sprintf("%sr=%d;t=%d", strings.TrimSuffix(byPeer.rlPrefix, "r="), (byKey.window-full)/byKey.interval, (full+sec-1)/sec)
				if got := rec.Header().Get("Ratelimit"); got != want {
					t.Fatalf("%+v arrival %d: RateLimit %q, want %q", cfg, i, got, want)
				}
			}
		}
	}
}

func TestPeerCacheDropsEvictedBuckets(t *testing.T) {
	cfg := rlConfig(1, "1h", 1)
	cfg.MaxSources = 1
	l := testLimiter(t, cfg)
	now := sec
	req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
	req.RemoteAddr = "192.0.2.1:1"
	if allow(l, httptest.NewRecorder(), req, now) < 0 {
		t.Fatal("first request rejected")
	}
	take(l, "h:other", now) // evicts the peer's bucket: the map holds one
	if l.counters.evictions != 1 {
		t.Fatalf("evictions %d, want 1", l.counters.evictions)
	}
	// The cached RemoteAddr entry points at the evicted bucket: it must not
	// be used, and the peer's new bucket must be the one in the map.
	if allow(l, httptest.NewRecorder(), req, now) < 0 {
		t.Fatal("the peer's evicted bucket was still used")
	}
	if b := l.buckets["192.0.2.1"]; b == nil || l.peers["192.0.2.1:1"] != b {
		t.Fatal("the peer cache still points at an evicted bucket")
	}
}
