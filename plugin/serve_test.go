package plugin

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestServeAllMatchesServeFunc holds serveAll, the fused path for every
// feature on, to the general observed path built from allow, pick, enter,
// leave and record: the same requests must get the same answers, the same
// headers, the same breaker states and the same counts.
func TestServeAllMatchesServeFunc(t *testing.T) {
	canarySrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/fail") {
			rw.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = io.WriteString(rw, "canary")
	}))
	defer canarySrv.Close()
	next := http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/missing" {
			rw.WriteHeader(http.StatusNotFound)
		}
		_, _ = io.WriteString(rw, "stable")
	})
	build := func(name string, fused bool) *canary {
		cfg := baseConfig(canarySrv.URL, 50)
		cfg.RateLimit.Average = 1
		cfg.RateLimit.Period = "1h" // five per peer, then 429s, whatever the timing
		cfg.RateLimit.Burst = 5
		cfg.CircuitBreaker.ConsecutiveFailures = 3
		cfg.Sidecar.Address = "http://127.0.0.1:1" // nothing listens: reporting fails quietly
		cfg.Sidecar.Interval = "1h"
		cfg.Override.TrustedIPs = []string{"192.0.2.0/24"}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		prev := fuseAll
		fuseAll = fused
		defer func() { fuseAll = prev }()
		c, err := newCanary(ctx, next, cfg, name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	fusedC, generalC := build("fuse-a@file", true), build("fuse-b@file", false)
	canaryBucket, stableBucket := 0, numBuckets-1 // canary takes the low buckets
	if fusedC.bucketOf[canaryBucket].name != "canary" || fusedC.bucketOf[stableBucket].name != "stable" {
		t.Fatal("unexpected bucket layout")
	}
	answer := func(c *canary, i int) string {
		path := []string{"/", "/missing", "/"}[i%3]
		if i >= 20 && i < 40 {
			path = "/fail" // the canary fails: its breaker trips, its users fall back
		}
		req := httptest.NewRequest(http.MethodGet, "http://shop.test"+path, nil)
		req.RemoteAddr = fmt.Sprintf("192.0.2.%d:%d", i%11, 1000+i%3) // keep-alive peers, and new ones; some get 429
		switch i % 4 {
		case 0, 1:
			req.AddCookie(&http.Cookie{Name: "edgecanary", Value: c.signed.values[canaryBucket]})
		case 2:
			req.AddCookie(&http.Cookie{Name: "edgecanary", Value: c.signed.values[stableBucket]})
		default:
			req.AddCookie(&http.Cookie{Name: "edgecanary", Value: c.signed.values[stableBucket]})
			req.Header.Set("X-Canary", "always") // a trusted override
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		h := rec.Header()
		return strings.ReplaceAll(fmt.Sprintf("%d %q fallback=%q rl=%q policy=%q retry=%q", rec.Code, rec.Body.String(),
			h.Get("Edgecanary-Fallback"), h.Get("Ratelimit"), h.Get("Ratelimit-Policy"), h.Get("Retry-After")), c.name, "NAME")
	}
	for i := 0; i < 60; i++ {
		if a, b := answer(fusedC, i), answer(generalC, i); a != b {
			t.Fatalf("request %d: fused path %s, general path %s", i, a, b)
		}
	}
	for _, name := range []string{"stable", "canary"} {
		a, b := fusedC.byName[name].br, generalC.byName[name].br
		if a.state != b.state || a.requests != b.requests || a.failures != b.failures || a.consecFailures != b.consecFailures {
			t.Errorf("%s breaker: fused %s %d/%d/%d, general %s %d/%d/%d", name, stateNames[a.state], a.requests, a.failures, a.consecFailures,
				stateNames[b.state], b.requests, b.failures, b.consecFailures)
		}
	}
	if fusedC.byName["canary"].br.state != stateOpen || fusedC.rl.counters.rejected == 0 {
		t.Error("the sequence tripped no breaker or limited no peer: it tests too little")
	}
	a, b := snapshot(fusedC.st), snapshot(generalC.st)
	for i := range a.Versions {
		va, vb := a.Versions[i], b.Versions[i]
		var na, nb uint64
		for _, n := range va.Hist {
			na += n
		}
		for _, n := range vb.Hist {
			nb += n
		}
		if fmt.Sprint(va.Requests) != fmt.Sprint(vb.Requests) || na != nb {
			t.Errorf("%s: fused counts %v (%d timed), general %v (%d timed)", va.Name, va.Requests, na, vb.Requests, nb)
		}
	}
	if fmt.Sprint(a.Fallbacks) != fmt.Sprint(b.Fallbacks) || len(a.Fallbacks) == 0 {
		t.Errorf("fallbacks: fused %v, general %v (want some)", a.Fallbacks, b.Fallbacks)
	}
}

// TestServeLimitedMatchesReserve holds serveLimited's inline step to
// reserve, the GCRA step of take. serveLimited reads the clock itself, so the
// test places the bucket's tat at a random offset from a clock reading lo
// taken just before the request, reads the clock again (hi) just after, and
// expects reserve's answer at lo or at hi: the request is either admitted
// inline, with the bucket charged as reserve charges it and the RateLimit
// field of the table, or handed to slow with the bucket untouched. New peers,
// evicted buckets and override headers always go to slow.
func TestServeLimitedMatchesReserve(t *testing.T) {
	for _, headers := range []bool{true, false} {
		cfg := rlConfig(4, "1s", 4) // interval 250ms, window 1s: r = 3..0 all come from the table
		cfg.Headers = headers
		t.Run(fmt.Sprintf("headers=%v", headers), func(t *testing.T) { testServeLimited(t, testLimiter(t, cfg)) })
	}
}

func testServeLimited(t *testing.T, l *limiter) {
	rng := rand.New(rand.NewSource(5))
	next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })
	var slowTat int64
	slowCalls := 0
	slow := func(rw http.ResponseWriter, req *http.Request) {
		slowCalls++
		slowTat = deadTat
		if b := l.peers[req.RemoteAddr]; b != nil {
			slowTat = b.tat
		}
		rw.WriteHeader(http.StatusTeapot)
	}
	h := serveLimited(l, "X-Canary", next, slow)
	peer := "192.0.2.1:4242"
	allow(l, httptest.NewRecorder(), &http.Request{RemoteAddr: peer, Header: http.Header{}}, 0) // the peer's bucket
	b := l.peers[peer]
	inline := 0
	for i := 0; i < 2000; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		req.RemoteAddr = peer
		switch {
		case i%50 == 7:
			req.RemoteAddr = fmt.Sprintf("192.0.2.1:%d", 5000+i) // a new connection: no cached bucket
		case i%50 == 9:
			req.Header.Set("X-Canary", "always")
		}
		offset := int64(rng.Float64()*2000*float64(ms)) - 500*ms // tat from 0.5s behind the clock to 1.5s ahead
		rec := httptest.NewRecorder()
		l.sem <- struct{}{}
		lo := int64(time.Since(epoch))
		t0 := lo + offset
		b.tat = t0
		<-l.sem
		h.ServeHTTP(rec, req)
		hi := int64(time.Since(epoch))
		atLo, atHi := reserveAt(l, t0, lo), reserveAt(l, t0, hi)
		if req.RemoteAddr != peer || req.Header.Get("X-Canary") != "" {
			atLo, atHi = false, false
		}
		if rec.Code == http.StatusTeapot {
			if atLo && atHi {
				t.Fatalf("request %d: tat %v from the clock: reserve admits it, serveLimited handed it to slow", i, time.Duration(offset))
			}
			if req.RemoteAddr == peer && slowTat != t0 {
				t.Fatalf("request %d: handed to slow with the bucket changed (%d, was %d)", i, slowTat, t0)
			}
			continue
		}
		inline++
		if !atLo && !atHi {
			t.Fatalf("request %d: tat %v from the clock: reserve delays or rejects it, serveLimited admitted it", i, time.Duration(offset))
		}
		tat := b.tat
		if tat < maxInt64(t0, lo)+l.interval || tat > maxInt64(t0, hi)+l.interval {
			t.Fatalf("request %d: tat %d after, want max(%d, now in [%d, %d]) + %d", i, tat, t0, lo, hi, l.interval)
		}
		if !l.headers {
			if len(rec.Header()) != 0 {
				t.Fatalf("request %d: headers %v with headers off", i, rec.Header())
			}
			continue
		}
		rLo, rHi := (lo+l.window-tat)/l.interval, (hi+l.window-tat)/l.interval
		got := rec.Header().Get("Ratelimit")
		if got != l.byR[rLo][0] && got != l.byR[rHi][0] {
			t.Fatalf("request %d: RateLimit %q, want %q", i, got, l.byR[rLo][0])
		}
		if p := rec.Header().Get("Ratelimit-Policy"); p != l.policy[0] {
			t.Fatalf("request %d: RateLimit-Policy %q, want %q", i, p, l.policy[0])
		}
	}
	if inline < 400 || slowCalls < 400 {
		t.Errorf("%d inline and %d slow answers: the offsets test too little", inline, slowCalls)
	}
	// An evicted bucket is never charged inline.
	kill(b)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, &http.Request{RemoteAddr: peer, Header: http.Header{}})
	if rec.Code != http.StatusTeapot || b.tat != deadTat {
		t.Errorf("an evicted bucket: status %d, tat %d", rec.Code, b.tat)
	}
}

// reserveAt says whether reserve admits a request at now, without delay, on a
// bucket with this tat.
func reserveAt(l *limiter, tat, now int64) bool {
	return reserve(l, &bucket{tat: tat}, now) <= 0
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
