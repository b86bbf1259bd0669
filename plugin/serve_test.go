package plugin

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// pathCanary builds a canary on the generated paths or on the reference
// path; its context ends with the test.
func pathCanary(t *testing.T, next http.Handler, cfg *Config, name string, gen bool) *canary {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	prev := generated
	generated = gen
	defer func() { generated = prev }()
	c, err := newCanary(ctx, next, cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLimitedPathsMatchReserve holds every request path with the limiter
// keyed by the peer to reserve, the GCRA step of take: the limiter-only path
// (pathL) with and without headers, the everything-on path (pathLPBS) and
// the reference path. The paths read the clock themselves, so the
// test places the peer's tat at a random offset from a clock reading lo taken
// just before the request, reads the clock again (hi) just after, and expects
// what reserve decides at lo or at hi: the answer (429 or through), the
// bucket's tat afterwards, and the RateLimit field. Offsets that reserve
// would delay are mostly avoided (a delay is a sleep).
func TestLimitedPathsMatchReserve(t *testing.T) {
	canarySrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "canary") }))
	defer canarySrv.Close()
	for n, tc := range []struct {
		name       string
		everything bool
		generated  bool
		headers    bool
	}{
		{name: "limiter only", generated: true, headers: true},
		{name: "limiter only, headers off", generated: true},
		{name: "limiter only, reference path", headers: true},
		{name: "everything on", everything: true, generated: true, headers: true},
		{name: "everything on, reference path", everything: true, headers: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := CreateConfig()
			cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}}
			if tc.everything {
				cfg = baseConfig(canarySrv.URL, 50)
				cfg.CircuitBreaker.ConsecutiveFailures = 3
				cfg.Sidecar.Address = "http://127.0.0.1:1" // nothing listens: reporting fails quietly
				cfg.Sidecar.Interval = "1h"
			}
			cfg.RateLimit = rlConfig(4, "1s", 4) // interval 250ms, window 1s: r = 3..0 all come from the byR table
			cfg.RateLimit.Headers = tc.headers
			testLimitedPath(t, pathCanary(t, stableNext, cfg, fmt.Sprintf("limited-%d@file", n), tc.generated))
		})
	}
}

func testLimitedPath(t *testing.T, c *canary) {
	l := c.rl
	rng := rand.New(rand.NewSource(5))
	peer := "192.0.2.1:4242"
	request := func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.RemoteAddr = peer
		if c.signed != nil {
			req.AddCookie(&http.Cookie{Name: c.cookieName, Value: c.signed.values[numBuckets-1]}) // a returning stable user
		}
		return req
	}
	c.ServeHTTP(httptest.NewRecorder(), request()) // the peer's bucket
	b := l.peers[peer]
	if b == nil {
		t.Fatal("no bucket for the peer")
	}
	through, rejected := 0, 0
	for i := 0; i < 600; i++ {
		// tat from 0.5s behind the clock to 1.5s ahead; reserve delays for
		// offsets in (window - interval, window - interval + maxDelay].
		offset := int64(rng.Float64()*2000*float64(ms)) - 500*ms
		if d := offset - (l.window - l.interval); d > -20*ms && d <= l.maxDelay+20*ms {
			continue
		}
		rec := httptest.NewRecorder()
		l.sem <- struct{}{}
		lo := int64(time.Since(epoch))
		t0 := lo + offset
		b.tat = t0
		<-l.sem
		c.ServeHTTP(rec, request())
		hi := int64(time.Since(epoch))
		l.sem <- struct{}{}
		tat := b.tat
		<-l.sem
		waitLo, waitHi := reserve(l, &bucket{tat: t0}, lo), reserve(l, &bucket{tat: t0}, hi)
		if rec.Code == http.StatusTooManyRequests {
			rejected++
			if waitLo <= l.maxDelay && waitHi <= l.maxDelay {
				t.Fatalf("request %d: tat %v from the clock: reserve admits it (wait %v), the path rejected it", i, time.Duration(offset), time.Duration(waitLo))
			}
			if tat != t0 {
				t.Fatalf("request %d: a rejection charged the bucket (tat %d, was %d)", i, tat, t0)
			}
			continue
		}
		through++
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, rec.Code)
		}
		if waitLo > l.maxDelay && waitHi > l.maxDelay {
			t.Fatalf("request %d: tat %v from the clock: reserve rejects it (wait %v), the path let it through", i, time.Duration(offset), time.Duration(waitLo))
		}
		if tat < maxInt64(t0, lo)+l.interval || tat > maxInt64(t0, hi)+l.interval {
			t.Fatalf("request %d: tat %d after, want the later of %d and now in [%d, %d], plus %d", i, tat, t0, lo, hi, l.interval)
		}
		got := rec.Header().Get("Ratelimit")
		if !l.headers {
			if got != "" || rec.Header().Get("Ratelimit-Policy") != "" {
				t.Fatalf("request %d: RateLimit fields with headers off: %v", i, rec.Header())
			}
			continue
		}
		// The field of an admitted request whose wait is tat - now - window.
		ok := false
		for _, now := range []int64{lo, hi} {
			if rateLimitField(l, tat-now-l.window)[0] == got {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("request %d: RateLimit %q, want %q or %q", i, got, rateLimitField(l, tat-lo-l.window)[0], rateLimitField(l, tat-hi-l.window)[0])
		}
		if p := rec.Header().Get("Ratelimit-Policy"); p != l.policy[0] {
			t.Fatalf("request %d: RateLimit-Policy %q, want %q", i, p, l.policy[0])
		}
	}
	if through < 200 || rejected < 100 {
		t.Errorf("%d through and %d rejected: the offsets test too little", through, rejected)
	}
	// An evicted bucket is never charged: the peer gets a new one.
	l.sem <- struct{}{}
	kill(b)
	delete(l.buckets, "192.0.2.1")
	<-l.sem
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, request())
	if nb := l.peers[peer]; rec.Code != http.StatusOK || nb == nil || nb == b || nb.tat <= 0 {
		t.Errorf("after eviction: status %d, bucket %p (was %p)", rec.Code, nb, b)
	}
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// TestObservedPathsHandStreamsTheOriginalWriter: requests that need Hijack
// or trailers (an Upgrade, gRPC over HTTP/2) must reach the version with
// Traefik's own ResponseWriter; every other request, server-sent events
// included, goes through the status wrapper, which flushes streams itself
// (TestStreamsAreFlushedThroughTheWrapper), on every observed path.
func TestObservedPathsHandStreamsTheOriginalWriter(t *testing.T) {
	var got http.ResponseWriter
	next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { got = rw })
	cases := []struct {
		accept, upgrade, contentType string
		h2, stream                   bool
	}{
		{stream: false},
		{accept: "text/html,application/xhtml+xml,*/*;q=0.8"},
		{accept: "text/event-stream"},
		{accept: "application/json, text/event-stream"},
		{upgrade: "websocket", stream: true},
		{contentType: "application/grpc"},
		{contentType: "application/grpc+proto", h2: true, stream: true},
		{contentType: "application/json", h2: true},
		{accept: "text/event-stream", h2: true},
	}
	for n, setup := range observedSetups {
		t.Run(setup.name, func(t *testing.T) {
			c := observedCanary(t, n, next, nil)
			for _, tc := range cases {
				req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
				if tc.accept != "" {
					req.Header.Set("Accept", tc.accept)
				}
				if tc.upgrade != "" {
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", tc.upgrade)
				}
				if tc.contentType != "" {
					req.Header.Set("Content-Type", tc.contentType)
				}
				if tc.h2 {
					req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
				}
				rec := httptest.NewRecorder()
				got = nil
				c.ServeHTTP(rec, req)
				if original := got == http.ResponseWriter(rec); original != tc.stream || got == nil {
					t.Errorf("%+v: the version got the original writer: %v, want %v", tc, original, tc.stream)
				}
			}
		})
	}
}
