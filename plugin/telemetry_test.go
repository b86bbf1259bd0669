package plugin

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// telemetryRuns numbers the telemetry tests' middlewares.
var telemetryRuns int

// telemetryName is a new middleware name for each run (-count): the figures
// are kept by middleware name for the process.
func telemetryName(name string) string {
	telemetryRuns++
	return fmt.Sprintf("%s-%d@file", name, telemetryRuns)
}

func reportingCanary(t *testing.T, name string) *canary {
	t.Helper()
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.Sidecar.Address = "http://127.0.0.1:1" // nothing listens: reporting fails quietly
	cfg.Sidecar.Interval = "1h"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	codes := http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/missing" {
			rw.WriteHeader(http.StatusNotFound)
			return
		}
		if req.URL.Path == "/2ms" {
			time.Sleep(2 * time.Millisecond)
		}
		_, _ = rw.Write([]byte("ok")) // an implicit 200
	})
	c, err := newCanary(ctx, codes, cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRecordCountsByVersionCodeAndMethod(t *testing.T) {
	c := reportingCanary(t, telemetryName("telemetry-counts"))
	for _, r := range []struct {
		method, path string
		n            int
	}{{"GET", "/", 3}, {"POST", "/", 2}, {"GET", "/missing", 1}, {"BREW", "/", 4}} {
		for i := 0; i < r.n; i++ {
			c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(r.method, "http://x"+r.path, nil))
		}
	}
	m := snapshot(c.st)
	if len(m.Versions) != 1 || m.Versions[0].Name != "stable" || !m.Versions[0].Primary || m.Versions[0].Weight != 1 {
		t.Fatalf("versions: %+v", m.Versions)
	}
	got := map[string]uint64{}
	for _, r := range m.Versions[0].Requests {
		got[fmt.Sprintf("%d %s", r.Code, r.Method)] = r.Count
	}
	want := map[string]uint64{"200 GET": 3, "200 POST": 2, "404 GET": 1, "200 OTHER": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	var inHist uint64
	for _, n := range m.Versions[0].Hist {
		inHist += n
	}
	if inHist != 10 {
		t.Errorf("histogram holds %d observations, want 10", inHist)
	}
}

// TestHandlerFromBeforeABucketChangeCountsInTheNewLayout: a reload that
// changes sidecar.buckets (here from 11 bounds to 2) resets the histogram;
// a request still served by a handler built before it is counted in the new
// layout, by the new bounds, on every request path: 2 ms falls in the old
// layout's first bucket (5 ms) and in the new one's second.
func TestHandlerFromBeforeABucketChangeCountsInTheNewLayout(t *testing.T) {
	for _, gen := range []bool{true, false} {
		t.Run(fmt.Sprint("generated=", gen), func(t *testing.T) {
			defer func(g bool) { generated = g }(generated)
			generated = gen
			name := fmt.Sprintf("telemetry-rebucket-%v@file", gen)
			old := reportingCanary(t, name)
			cfg := CreateConfig()
			cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
			cfg.Sidecar.Address = "http://127.0.0.1:1"
			cfg.Sidecar.Interval = "1h"
			cfg.Sidecar.Buckets = []float64{0.001, 3600}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			if _, err := newCanary(ctx, http.NotFoundHandler(), cfg, name); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				old.serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://shop.test/2ms", nil))
			}
			m := snapshot(old.st)
			if len(m.Buckets) != 2 || len(m.Versions[0].Hist) != 3 {
				t.Fatalf("buckets %v, hist %v: want the new layout (2 bounds, 3 counts)", m.Buckets, m.Versions[0].Hist)
			}
			if h := m.Versions[0].Hist; h[1] != 3 {
				t.Errorf("hist %v: want the 3 requests of 2 ms in the new second bucket (1 ms to 1 h)", h)
			}
		})
	}
}

// TestOutOfRangeCodesReportAsZero: a status outside 0..999 (a handler that
// called WriteHeader with nonsense) is one series with code 0 per method.
func TestOutOfRangeCodesReportAsZero(t *testing.T) {
	c := reportingCanary(t, telemetryName("telemetry-codes"))
	vs := c.primary.vs
	record(vs, vs.sem, 1000, "GET", 1)
	record(vs, vs.sem, -7, "GET", 1)
	recordRefused(vs, 0, "GET")
	record(vs, vs.sem, 99999, "POST", 1)
	got := map[string]uint64{}
	for _, r := range snapshot(c.st).Versions[0].Requests {
		got[fmt.Sprintf("%d %s", r.Code, r.Method)] = r.Count
	}
	if want := map[string]uint64{"0 GET": 3, "0 POST": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}

// TestLabelCardinalityIsBounded: 100,000 distinct paths, methods, header
// values and hosts produce no new label values.
func TestLabelCardinalityIsBounded(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 10000
	}
	c := reportingCanary(t, telemetryName("telemetry-cardinality"))
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < n; i++ {
		req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://host-%d.test/p/%d", i, rng.Int()), nil)
		req.Method = fmt.Sprintf("M%d", i)
		req.Header.Set("X-Random", fmt.Sprint(rng.Int()))
		req.Header.Set("User-Agent", fmt.Sprint(i))
		c.ServeHTTP(httptest.NewRecorder(), req)
	}
	m := snapshot(c.st)
	if len(m.Versions) != 1 || len(m.Versions[0].Requests) != 1 {
		t.Fatalf("%d distinct requests made %d versions and %d series", n, len(m.Versions), len(m.Versions[0].Requests))
	}
	if r := m.Versions[0].Requests[0]; r.Method != "OTHER" || r.Count != uint64(n) {
		t.Errorf("series %+v", r)
	}
}

// TestSenderStopsWhenNoHandlerIsLive: one sender per process, started by
// the first reporting handler, gone once every handler's context has ended
// and the grace period passed, after a last report.
func TestSenderStopsWhenNoHandlerIsLive(t *testing.T) {
	reports := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		reports <- struct{}{}
		rw.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	prevGrace := atomic.LoadInt64(&senderGrace)
	atomic.StoreInt64(&senderGrace, int64(300*time.Millisecond))
	defer func() { atomic.StoreInt64(&senderGrace, prevGrace) }()

	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.Sidecar.Address = srv.URL
	cfg.Sidecar.Interval = "100ms"
	var cancels []context.CancelFunc
	for i := 0; i < 5; i++ { // five routers, or five reloads
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		if _, err := New(ctx, stableNext, cfg, "sender-life@file"); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-reports:
	case <-time.After(5 * time.Second):
		t.Fatal("no report")
	}
	for _, c := range cancels {
		c()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sender.Lock()
		running := sender.running
		sender.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender still runs after every handler's context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
