package plugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
