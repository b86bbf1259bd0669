package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

var rev21Seq int

// TestRev21BoundAtAReloadKeepsALiveClientOpen: Traefik cancels the previous
// configuration's context, then calls New for each router of the next one
// (routerfactory.go), so every eviction at the bound of limiters happens
// while the middlewares not yet rebuilt look removed (their context done).
// evictLimiter then takes the oldest of them, a middleware still configured
// whose handlers serve until Traefik switches, and closes its Redis client
// at once. (The test this one replaced, TestLimitersBoundKeepsALiveClientOpen,
// called New with the previous context still live, an order Traefik never
// uses.)
func TestRev21BoundAtAReloadKeepsALiveClientOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 4097 limiters")
	}
	srv := newTestRedis(t, false)
	rev21Seq++ // limiters are kept by name for the process: new names for each run (-count)
	name := fmt.Sprintf("rev21-bound-live-%d@file", rev21Seq)
	first, reload := context.WithCancel(context.Background())
	defer reload()
	l, err := newLimiter(first, name, sharedConfig(srv.addr(), 10, "1s", 10))
	if err != nil {
		t.Fatal(err)
	}
	fillLimiters(first, t, fmt.Sprintf("rev21-bound-filler-%d", rev21Seq), maxLimiters-1)
	// The next configuration: a new middleware's New comes before name's.
	reload()
	second, done := context.WithCancel(context.Background())
	defer done()
	if _, err := newLimiter(second, fmt.Sprintf("rev21-bound-new-%d@file", rev21Seq), rlConfig(10, "1s", 1)); err != nil {
		t.Fatal(err)
	}
	if limiterKept(name, l) {
		t.Fatal("the oldest limiter was not the one dropped at the bound")
	}
	if atomic.LoadInt32(&l.shared.client.closed) != 0 {
		t.Fatal("making room at the bound during a reload closed the Redis client of a middleware still configured, whose handlers serve until Traefik switches")
	}
	if code, _ := sharedRequest(l, "alice"); code != http.StatusOK {
		t.Fatalf("a request the configuration still serving sends through its limiter: %d", code)
	}
}

// TestRev21RetuneKeepsTheOldPoolUntilTheSwitch: a reload that changes the
// limiter's Redis tuning (readTimeout here; also poolSize, db, credentials)
// replaces the limiter, and newLimiter gives back the old one's client at
// once: being its last user, it closes it. Traefik calls that New after it
// cancelled the old configuration's context but before it switches to the
// new one, so the old handlers still serve with the closed client: each
// request fails its store call ("redis: client closed", logged as a Redis
// outage and counted in storeErrors), and with onError deny is answered
// 429. The grace that watchLimiter gives a removed middleware's handlers is
// not given to a replaced one's.
func TestRev21RetuneKeepsTheOldPoolUntilTheSwitch(t *testing.T) {
	srv := newTestRedis(t, false)
	const name = "rev21-retune@file"
	cfg := sharedConfig(srv.addr(), 10, "1s", 10)
	cfg.Redis.OnError = "deny"
	first, reload := context.WithCancel(context.Background())
	defer reload()
	old, err := newLimiter(first, name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := sharedRequest(old, "alice"); code != http.StatusOK {
		t.Fatalf("first request: %d", code)
	}
	errorsBefore := atomic.LoadUint64(&old.counters.storeErrors)
	// The next configuration tunes the pool.
	reload()
	second, done := context.WithCancel(context.Background())
	defer done()
	cfg.Redis.ReadTimeout = "300ms"
	if l, err := newLimiter(second, name, cfg); err != nil || l == old {
		t.Fatalf("the retuned limiter: %v, replaced %v", err, l != old)
	}
	// Until Traefik switches, the old configuration serves.
	code, _ := sharedRequest(old, "bob")
	storeErrors := atomic.LoadUint64(&old.counters.storeErrors) - errorsBefore
	if code != http.StatusOK || storeErrors != 0 {
		t.Fatalf("a request the old configuration serves after the next one's New: %d, %d store errors (client closed: %v): the replaced limiter's Redis pool was closed before Traefik switched",
			code, storeErrors, atomic.LoadInt32(&old.shared.client.closed) != 0)
	}
}

// TestRev21EvictedLimiterGivesBackItsClient: a limiter dropped at the bound
// keeps its hold on its Redis client only until its watcher's grace after
// its context ends (evictLimiter leaves the release to watchLimiter).
func TestRev21EvictedLimiterGivesBackItsClient(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 4097 limiters")
	}
	srv := newTestRedis(t, false)
	rev21Seq++
	name := fmt.Sprintf("rev21-evicted-%d@file", rev21Seq)
	first, reload := context.WithCancel(context.Background())
	defer reload()
	l, err := newLimiter(first, name, sharedConfig(srv.addr(), 10, "1s", 10))
	if err != nil {
		t.Fatal(err)
	}
	limiters.Lock()
	e := limiters.m[name]
	limiters.Unlock()
	fillLimiters(first, t, fmt.Sprintf("rev21-evicted-filler-%d", rev21Seq), maxLimiters)
	if limiterKept(name, l) {
		t.Fatal("the oldest limiter was not dropped at the bound")
	}
	reload()
	watchLimiter(name, e, 50*time.Millisecond) // as the watcher New started does, with a shorter grace
	if atomic.LoadInt32(&l.shared.client.closed) == 0 {
		t.Error("a limiter dropped at the bound still holds its Redis client open after its grace")
	}
}

// TestRev21DroppedLimiterLeavesTheStats: the README says a removed
// middleware's buckets are dropped 10 s after the reload that removed it.
// With reporting on (sidecar.address, or a rollout), the middleware's
// figures in statsRegistry keep pointing at its limiter (mwStats.limiter),
// buckets and all (up to maxSources of them), for the life of the process
// unless 1024 other middlewares report; watchLimiter drops it only from
// limiters.
func TestRev21DroppedLimiterLeavesTheStats(t *testing.T) {
	rev21Seq++
	name := fmt.Sprintf("rev21-stats-%d@file", rev21Seq)
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.RateLimit = rlConfig(10, "1s", 10)
	cfg.Sidecar.Address, cfg.Sidecar.Interval = "http://127.0.0.1:1", "1h" // nothing listens: reporting fails quietly
	live, remove := context.WithCancel(context.Background())
	defer remove()
	c, err := newCanary(live, stableNext, cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ { // a thousand clients
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.RemoteAddr = fmt.Sprintf("10.0.%d.%d:1234", i/256, i%256)
		c.serve(httptest.NewRecorder(), req)
	}
	limiters.Lock()
	e := limiters.m[name]
	limiters.Unlock()
	remove()                                   // a reload removes the middleware
	watchLimiter(name, e, 50*time.Millisecond) // as the watcher New started does, with a shorter grace
	if limiterKept(name, c.rl) {
		t.Fatal("the removed middleware's limiter is still in limiters")
	}
	c.rl.sem <- lockTok
	n := len(c.rl.buckets)
	<-c.rl.sem
	statsRegistry.Lock()
	st := statsRegistry.m[name]
	statsRegistry.Unlock()
	st.mu.Lock()
	held := st.limiter == c.rl
	st.mu.Unlock()
	if held {
		t.Errorf("the dropped limiter, with its %d buckets, is still held by the removed middleware's figures (statsRegistry)", n)
	}
}
