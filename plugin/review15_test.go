package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func review15Key(l *limiter, client string) string {
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.Header.Set("X-Client", client)
	return clientKey(l, req)
}

func review15Evals(t *testing.T, cl *redisClient) int64 {
	t.Helper()
	info, _ := mustDo(t, cl, "INFO", "commandstats").(string)
	var total int64
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "cmdstat_evalsha:") || strings.HasPrefix(line, "cmdstat_eval:") {
			i := strings.Index(line, "calls=")
			j := strings.IndexByte(line[i:], ',')
			n, _ := strconv.ParseInt(line[i+6:i+j], 10, 64)
			total += n
		}
	}
	return total
}

// TestReview15SharedBucketsEvictedOnEveryInsert: in shared mode a bucket's
// tat stays 0, so insertBucket's "full bucket" sweep (tat <= now) kills up to
// four live buckets on every new key, whatever l.max: a busy key's lease (and
// its emptyUntil) is dropped as soon as other clients arrive. Its leased
// tokens are wasted in Redis, and it makes one store call per request.
func TestReview15SharedBucketsEvictedOnEveryInsert(t *testing.T) {
	srv := newTestRedis(t, false)
	l := replicas(t, 1, "evict15@file", sharedConfig(srv.addr(), 1000, "1s", 4000))[0] // lease 1000
	cl := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	for i := 0; i < 20; i++ {
		if code, _ := sharedRequest(l, "alice"); code != http.StatusOK {
			t.Fatalf("alice %d: %d", i, code)
		}
	}
	time.Sleep(50 * time.Millisecond) // let a refresh in flight land
	l.sem <- struct{}{}
	b := l.buckets[review15Key(l, "alice")]
	left := int64(-1)
	if b != nil {
		left = b.leaseLeft
	}
	<-l.sem
	if left <= 0 {
		t.Fatalf("alice has no lease after 20 fast requests (left %d)", left)
	}
	// One other client arrives.
	sharedRequest(l, "bob")
	l.sem <- struct{}{}
	b2 := l.buckets[review15Key(l, "alice")]
	<-l.sem
	if b2 != b {
		t.Errorf("one new client (bob) evicted alice's bucket with %d leased tokens (len(buckets)=%d, max=%d)", left, len(l.buckets), l.max)
	}
	// Round trips: alice interleaved with new clients costs one store call
	// per request instead of one per lease.
	before := review15Evals(t, cl)
	for i := 0; i < 100; i++ {
		sharedRequest(l, "alice")
		sharedRequest(l, fmt.Sprintf("one-shot-%d", i))
	}
	calls := review15Evals(t, cl) - before - 100 // the one-shot clients' own calls
	t.Logf("alice's 100 requests took %d store calls", calls)
	if calls > 20 {
		t.Errorf("alice's 100 requests took %d store calls with other clients arriving: her lease is evicted each time", calls)
	}
}

// TestReview15BackoffRaceStaysDown: failed and succeeded racing can leave
// down == true with up == 1; succeeded then returns early forever, so the
// replica uses the store once per backoff and decides every other request by
// onError (deny: 429 for everyone) while Redis is healthy.
func TestReview15BackoffRaceStaysDown(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs 2 procs")
	}
	err := errors.New("boom")
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		s := &shared{counters: &rlCounters{}, up: 1, logged: true, loggedAt: 0}
		var wg sync.WaitGroup
		wg.Add(2)
		// A third request holds s.mu (available() on another key's call).
		s.mu.Lock()
		go func() { defer wg.Done(); s.failed(1, err) }() // a call that failed
		until := time.Now().Add(50 * time.Millisecond)
		for atomic.LoadInt32(&s.up) != 0 && time.Now().Before(until) {
		}
		go func() { defer wg.Done(); s.succeeded() }() // a call that succeeded, ending after
		until = time.Now().Add(50 * time.Millisecond)
		for atomic.LoadInt32(&s.up) != 1 && time.Now().Before(until) {
		}
		s.mu.Unlock()
		wg.Wait()
		s.succeeded() // every later call succeeds
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			t.Fatalf("iteration %d: Redis answers, yet the limiter stays down (up=%d, down=true): succeeded() returns early forever and available() allows one call per backoff", i, atomic.LoadInt32(&s.up))
		}
	}
}

// TestReview15ClientLeakOnReload: with 64 other Redis clients in use, each
// reload that changes the limit must not leave the old pool's connections
// open (it did: the cache was capped at 64 and no client was ever closed).
func TestReview15ClientLeakOnReload(t *testing.T) {
	srv := newTestRedis(t, false)
	// Fill the cache with 64 other clients (they never dial).
	for i := 0; i < 64; i++ {
		cfg := sharedConfig(srv.addr(), 10, "1s", 10)
		cfg.Redis.PoolSize = 4000 - i
		if _, err := newLimiter(context.Background(), fmt.Sprintf("filler%d@file", i), cfg); err != nil {
			t.Fatal(err)
		}
	}
	cl := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	count := func() int {
		list, _ := mustDo(t, cl, "CLIENT", "LIST").(string)
		return strings.Count(list, "\n")
	}
	base := count()
	for i := 0; i < 10; i++ {
		cfg := sharedConfig(srv.addr(), 10+int64(i), "1s", 10) // a reload that changes the limit
		l, err := newLimiter(context.Background(), "leak15@file", cfg)
		if err != nil {
			t.Fatal(err)
		}
		sharedRequest(l, "alice")
	}
	if n := count() - base; n > 2 {
		t.Errorf("10 reloads (one request each) left %d connections open to Redis: replaced clients are never closed, or a pool dials while it holds idle connections", n)
	}
}

// TestReview15BackoffFromCallStart: fetchLease records a failure with the
// request's now, taken before the call: when the call fails by timing out
// (readTimeout longer than the 250ms backoff), the backoff has already passed
// and the very next request waits a whole readTimeout again for a store known
// to be down.
func TestReview15BackoffFromCallStart(t *testing.T) {
	srv := newTestRedis(t, false)
	cfg := sharedConfig(srv.addr(), 100, "1s", 10)
	cfg.Redis.ReadTimeout = "1s"
	cfg.Redis.OnError = "allow"
	l := replicas(t, 1, "stale15@file", cfg)[0]
	if code, _ := sharedRequest(l, "warm"); code != http.StatusOK {
		t.Fatal("the store is not used")
	}
	srv.signal("STOP")
	srv.stopped = true
	for i := 0; i < 3; i++ {
		at := time.Now()
		code, _ := sharedRequest(l, fmt.Sprintf("client%d", i))
		took := time.Since(at)
		t.Logf("request %d: %d in %v", i, code, took)
		if i > 0 && took > 300*time.Millisecond {
			t.Errorf("request %d waited %v for a store known to be down (the previous call failed just before)", i, took)
		}
	}
}
