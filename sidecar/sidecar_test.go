package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/traefik/paerser/cli"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var testBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// mkReport builds a report from one instance with cumulative counts.
func mkReport(source, instance string, sentAt int64, stable, canary uint64) *report {
	hist := func(n uint64) []uint64 {
		h := make([]uint64, len(testBuckets)+1)
		h[0] = n
		return h
	}
	return &report{
		Version: 1, Source: source, Instance: instance, StartedAt: 1, SentAt: sentAt,
		Middlewares: []reportMWStat{{
			Name:    "shop@file",
			Buckets: testBuckets,
			Versions: []reportVersion{
				{Name: "canary", Weight: 0.2, Configured: true, State: 0, Requests: []reportRequest{{Code: 200, Method: "GET", Count: canary}}, Hist: hist(canary), SumSeconds: float64(canary) * 0.001},
				{Name: "stable", Primary: true, Weight: 0.8, Configured: true, Requests: []reportRequest{{Code: 200, Method: "GET", Count: stable}}, Hist: hist(stable), SumSeconds: float64(stable) * 0.001},
			},
			RateLimitRejected: 3,
			Fallbacks:         []reportFallback{{From: "canary", To: "stable", Count: 1}},
		}},
	}
}

func body(t testing.TB, r *report) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gather scrapes s at t0.
func gather(t testing.TB, s *store) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{store: s, now: func() time.Time { return t0 }})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// requests returns the published edgecanary_requests_total of a version.
func requests(t testing.TB, s *store, version string) float64 {
	t.Helper()
	var sum float64
	for _, mf := range gather(t, s) {
		if mf.GetName() != "edgecanary_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "version" && l.GetValue() == version {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func TestMergeCumulativeReports(t *testing.T) {
	s := newStore(defaultMaxSeries)
	steps := []struct {
		desc       string
		r          *report
		wantStable float64
		wantCanary float64
	}{
		{desc: "first report", r: mkReport("a", "i1", 1, 10, 2), wantStable: 10, wantCanary: 2},
		{desc: "later totals", r: mkReport("a", "i1", 2, 15, 4), wantStable: 15, wantCanary: 4},
		{desc: "duplicate", r: mkReport("a", "i1", 2, 15, 4), wantStable: 15, wantCanary: 4},
		{desc: "late, out of order", r: mkReport("a", "i1", 1, 10, 2), wantStable: 15, wantCanary: 4},
		{desc: "a second replica adds", r: mkReport("b", "j1", 5, 7, 1), wantStable: 22, wantCanary: 5},
		{desc: "Traefik restarted: new instance, totals from zero", r: mkReport("a", "i2", 3, 1, 0), wantStable: 23, wantCanary: 5},
		{desc: "the old instance's last report arrives late", r: mkReport("a", "i1", 3, 16, 4), wantStable: 24, wantCanary: 5},
		{desc: "the new instance grows", r: mkReport("a", "i2", 4, 5, 3), wantStable: 28, wantCanary: 8},
	}
	for _, step := range steps {
		if !s.merge(step.r, t0) {
			t.Fatalf("%s: rejected", step.desc)
		}
		if got := requests(t, s, "stable"); got != step.wantStable {
			t.Errorf("%s: stable %v, want %v", step.desc, got, step.wantStable)
		}
		if got := requests(t, s, "canary"); got != step.wantCanary {
			t.Errorf("%s: canary %v, want %v", step.desc, got, step.wantCanary)
		}
	}
	// Retiring a silent instance keeps its totals, and a report from it
	// after that is not counted twice.
	s.retire(t0.Add(retireAfter + time.Minute))
	if got := requests(t, s, "stable"); got != 28 {
		t.Errorf("after retiring: stable %v, want 28", got)
	}
	s.merge(mkReport("a", "i1", 9, 16, 4), t0.Add(retireAfter+2*time.Minute))
	if got := requests(t, s, "stable"); got != 28 {
		t.Errorf("a retired instance counted twice: stable %v, want 28", got)
	}
}

func TestIngestValidation(t *testing.T) {
	good := body(t, mkReport("a", "i1", 1, 1, 1))
	bad := func(mutate func(r *report)) []byte {
		r := mkReport("a", "i1", 1, 1, 1)
		mutate(r)
		return body(t, r)
	}
	testCases := []struct {
		desc       string
		method     string
		token      string
		ctype      string
		body       []byte
		wantStatus int
		wantReason string
	}{
		{desc: "good", body: good, wantStatus: 204},
		{desc: "wrong method", method: http.MethodGet, wantStatus: 405, wantReason: reasonUnsupported},
		{desc: "no token", token: "-", body: good, wantStatus: 401, wantReason: reasonUnauthorized},
		{desc: "wrong token", token: "nope", body: good, wantStatus: 401, wantReason: reasonUnauthorized},
		{desc: "bare token without Bearer", token: "bare", body: good, wantStatus: 401, wantReason: reasonUnauthorized},
		{desc: "no content type", ctype: "-", body: good, wantStatus: 415, wantReason: reasonUnsupported},
		{desc: "not json", body: []byte("hello"), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "foreign json", body: []byte(`{"hello":"world"}`), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "unknown field", body: bytes.Replace(good, []byte(`"source"`), []byte(`"extra":1,"source"`), 1), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "future version", body: []byte(`{"version":2}`), wantStatus: 422, wantReason: reasonUnsupported},
		{desc: "wrong content type", ctype: "text/plain", body: good, wantStatus: 415, wantReason: reasonUnsupported},
		{desc: "too large", body: append([]byte(`{"version":1,"source":"`), bytes.Repeat([]byte("a"), 2<<20)...), wantStatus: 413, wantReason: reasonTooLarge},
		{desc: "bad version name", body: bad(func(r *report) { r.Middlewares[0].Versions[0].Name = "Canary!" }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "bad method", body: bad(func(r *report) { r.Middlewares[0].Versions[0].Requests[0].Method = "BREW" }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "bad code", body: bad(func(r *report) { r.Middlewares[0].Versions[0].Requests[0].Code = 1000 }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "histogram length", body: bad(func(r *report) { r.Middlewares[0].Versions[0].Hist = []uint64{1} }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "weight above 1", body: bad(func(r *report) { r.Middlewares[0].Versions[0].Weight = 2 }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "label with a quote", body: bad(func(r *report) { r.Middlewares[0].Name = `a"b` }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "no source", body: bad(func(r *report) { r.Source = "" }), wantStatus: 400, wantReason: reasonMalformed},
		{desc: "fallback to unknown version", body: bad(func(r *report) { r.Middlewares[0].Fallbacks[0].To = "ghost" }), wantStatus: 400, wantReason: reasonMalformed},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			s := newStore(defaultMaxSeries)
			h := &ingestHandler{store: s, token: "s3cret", maxBody: 1 << 20, now: func() time.Time { return t0 }}
			method := test.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/v1/reports", bytes.NewReader(test.body))
			switch test.token {
			case "":
				req.Header.Set("Authorization", "Bearer s3cret")
			case "-":
			case "bare":
				req.Header.Set("Authorization", "s3cret")
			default:
				req.Header.Set("Authorization", "Bearer "+test.token)
			}
			switch test.ctype {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", test.ctype)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != test.wantStatus {
				t.Fatalf("status %d, want %d (%s)", rec.Code, test.wantStatus, rec.Body.String())
			}
			for reason, n := range s.rejected {
				want := uint64(0)
				if reason == test.wantReason {
					want = 1
				}
				if n != want {
					t.Errorf("rejected{reason=%q} = %d, want %d", reason, n, want)
				}
			}
			if test.wantStatus == 204 && s.reports != 1 {
				t.Errorf("reports %d, want 1", s.reports)
			}
		})
	}
}

// TestCardinalityIsBounded: middlewares past the cap are rejected, counted
// under their own reason, and never published.
func TestCardinalityIsBounded(t *testing.T) {
	s := newStore(defaultMaxSeries)
	for i := 0; i < defaultMaxSeries; i++ {
		r := mkReport("a", "i1", int64(i), 1, 1)
		r.Middlewares[0].Name = fmt.Sprintf("mw-%d@file", i)
		if !s.merge(r, t0) {
			break
		}
	}
	if n := publishedSeries(t, s); n > defaultMaxSeries {
		t.Errorf("%d series published, cap %d", n, defaultMaxSeries)
	}
	if s.rejected[reasonCardinality] == 0 || s.rejected[reasonMalformed] != 0 {
		t.Errorf("rejections %v: want the reports past the cap under %q only", s.rejected, reasonCardinality)
	}
}

// ingestRequest is a well-formed POST of body, without a token.
func ingestRequest(body []byte) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/v1/reports", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

// publishedSeries counts the series a scrape exposes, as Prometheus stores
// them (a histogram is one series per bucket, plus sum and count).
func publishedSeries(t testing.TB, s *store) int {
	t.Helper()
	n := 0
	for _, mf := range gather(t, s) {
		if strings.HasPrefix(mf.GetName(), "edgecanary_sidecar_reports") {
			continue // the sidecar's own counters: a fixed number of series
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				n += len(h.GetBucket()) + 3
				continue
			}
			n++
		}
	}
	return n
}

// TestEverySeriesKindCountsAgainstTheCap: one report within the size limit
// that holds histogram and transition series for 64 versions of many
// middlewares (227,356 series were accepted from such a report) is merged
// only as far as the cap allows, and counted as a cardinality rejection.
func TestEverySeriesKindCountsAgainstTheCap(t *testing.T) {
	s := newStore(defaultMaxSeries)
	r := &report{Version: 1, Source: "a", Instance: "i1", SentAt: 1}
	bounds := make([]float64, 64)
	for i := range bounds {
		bounds[i] = float64(i + 1)
	}
	for m := 0; m < 12; m++ { // 12 × 64 versions × 73 series: 56,064
		mw := reportMWStat{Name: fmt.Sprintf("mw-%d@file", m), Buckets: bounds, Fallbacks: []reportFallback{}}
		for v := 0; v < maxVersionsPerMW; v++ {
			mw.Versions = append(mw.Versions, reportVersion{Name: fmt.Sprintf("v%d", v), Requests: []reportRequest{}, Hist: make([]uint64, 65)})
		}
		r.Middlewares = append(r.Middlewares, mw)
	}
	if err := validate(r); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h := &ingestHandler{store: s, maxBody: 1 << 20, now: func() time.Time { return t0 }}
	h.ServeHTTP(rec, ingestRequest(body(t, r)))
	if rec.Code != http.StatusNoContent || s.rejected[reasonCardinality] != 1 {
		t.Fatalf("status %d, rejections %v: want the report merged up to the cap and counted once", rec.Code, s.rejected)
	}
	if n := publishedSeries(t, s); n > defaultMaxSeries || s.seriesN < defaultMaxSeries-100 {
		t.Errorf("%d series published, %d counted, cap %d", n, s.seriesN, defaultMaxSeries)
	}
}

// TestNewSeriesNearTheCapDoNotFreezeAProcess: near the cap, a Traefik whose
// canary starts answering 503 (new series) keeps publishing everything else:
// the canary's open breaker and the stable counts. (Found by review.)
func TestNewSeriesNearTheCapDoNotFreezeAProcess(t *testing.T) {
	s := newStore(100)
	r := mkReport("traefik-a", "i1", 1, 10, 10)
	for code := 201; code < 254; code++ {
		r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests, reportRequest{Code: code, Method: "GET", Count: 1})
	}
	if !s.merge(r, t0) {
		t.Fatalf("first report rejected: %v (%d series)", s.rejected, s.seriesN)
	}
	for i := int64(2); i <= 10; i++ {
		r2 := mkReport("traefik-a", "i1", i, 10+uint64(i)*100, 10)
		r2.Middlewares[0].Versions[1].Requests = append(r2.Middlewares[0].Versions[1].Requests, r.Middlewares[0].Versions[1].Requests[1:]...)
		r2.Middlewares[0].Versions[0].State = 2
		r2.Middlewares[0].Versions[0].Requests = append(r2.Middlewares[0].Versions[0].Requests, reportRequest{Code: 503, Method: "GET", Count: uint64(i)})
		s.merge(r2, t0)
	}
	if got := gaugeOf(t, s, "edgecanary_circuit_state", "canary"); got != 2 {
		t.Errorf("canary circuit state published as %v, want 2 (open); rejections %v", got, s.rejected)
	}
	if got := requests(t, s, "stable"); got != 10+1000+53 {
		t.Errorf("stable requests %v, want 1063: frozen", got)
	}
	if n := publishedSeries(t, s); n > 100 {
		t.Errorf("%d series published, cap 100", n)
	}
}

// TestLiveReplicasKeepCounting: many live Traefik replicas reporting the
// same series are all held; none is folded away while it reports, so no
// count is lost. (Found by review.)
func TestLiveReplicasKeepCounting(t *testing.T) {
	s := newStore(100)
	report := func(replica int, count uint64, sentAt int64) *report {
		r := mkReport(fmt.Sprintf("traefik-%d", replica), "i1", sentAt, count, 0)
		r.Middlewares[0].Versions[1].Requests = nil
		for code := 200; code < 240; code++ { // 40 request series, shared by all replicas
			r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests, reportRequest{Code: code, Method: "GET", Count: count})
		}
		return r
	}
	now := t0
	const replicas = 9
	for round := int64(1); round <= 3; round++ {
		for i := 0; i < replicas; i++ {
			now = now.Add(time.Second)
			if !s.merge(report(i, uint64(round), round), now) {
				t.Fatalf("round %d replica %d rejected: %v", round, i, s.rejected)
			}
		}
	}
	if got, want := requests(t, s, "stable"), float64(replicas*3*40); got != want {
		t.Errorf("stable requests %v, want %v (counts of live replicas lost)", got, want)
	}
}

// gaugeOf is the published value of a gauge for a version, -1 if absent.
func gaugeOf(t *testing.T, s *store, name, version string) float64 {
	t.Helper()
	for _, mf := range gather(t, s) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "version" && l.GetValue() == version {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestRestartLoopIsAccepted: Traefik restarted 300 times, each process a
// new instance on a new host (as a new pod is), reporting the same 100
// series and going silent. Every process is accepted, the totals add up,
// and what the sidecar holds stays bounded.
func TestRestartLoopIsAccepted(t *testing.T) {
	s := newStore(defaultMaxSeries)
	now := t0
	var want float64
	for i := 0; i < 300; i++ {
		r := mkReport(fmt.Sprintf("traefik-%d", i), fmt.Sprintf("i%d", i), now.UnixMilli(), 1, 1)
		for code := 200; code < 300; code++ {
			r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests[:0:0], reportRequest{Code: code, Method: "GET", Count: 1})
		}
		r.Middlewares[0].Versions[1].Requests = nil
		for code := 200; code < 300; code++ {
			r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests, reportRequest{Code: code, Method: "GET", Count: 1})
		}
		if !s.merge(r, now) {
			t.Fatalf("restart %d rejected: %v", i, s.rejected)
		}
		want += 100
		now = now.Add(2 * time.Minute)
		s.retire(now)
	}
	if got := requests(t, s, "stable"); got != want {
		t.Errorf("stable requests %v, want %v", got, want)
	}
	if len(s.lastReport) > maxSources || len(s.instances) > maxInstances || s.held > s.maxHeld {
		t.Errorf("held: %d sources, %d instances, %d entries", len(s.lastReport), len(s.instances), s.held)
	}
	if s.rejected[reasonCardinality] != 0 {
		t.Errorf("rejections %v", s.rejected)
	}
}

// TestLastReportIsBounded: 20,000 sources reporting at once leave at most
// maxSources last-report series; the reports past what the sidecar can hold
// are counted as cardinality rejections; none is kept after retireAfter, and
// new sources are accepted again then.
func TestLastReportIsBounded(t *testing.T) {
	s := newStore(defaultMaxSeries)
	accepted := 0
	for i := 0; i < 20000; i++ {
		if s.merge(mkReport(fmt.Sprintf("host-%d", i), "i1", 1, 1, 1), t0.Add(time.Duration(i)*time.Millisecond)) {
			accepted++
		}
	}
	if len(s.lastReport) > maxSources || accepted == 0 || s.rejected[reasonCardinality] != uint64(20000-accepted) {
		t.Errorf("%d last-report series (bound %d), %d accepted, rejections %v", len(s.lastReport), maxSources, accepted, s.rejected)
	}
	later := t0.Add(retireAfter + time.Minute)
	s.retire(later)
	if len(s.lastReport) != 0 || len(s.instances) != 0 {
		t.Errorf("%d silent sources and %d processes kept after retireAfter", len(s.lastReport), len(s.instances))
	}
	if !s.merge(mkReport("host-new", "i1", 1, 1, 1), later) {
		t.Error("a new source is still rejected after the others were retired")
	}
}

// TestInstancesHoldBoundedMemory: many live instances of a large
// configuration are folded, oldest first, to keep maxHeld entries, and no
// count is lost.
func TestInstancesHoldBoundedMemory(t *testing.T) {
	s := newStore(defaultMaxSeries)
	var want float64
	for i := 0; i < maxInstances; i++ {
		r := mkReport("a", fmt.Sprintf("i%d", i), 1, 1, 1)
		for code := 0; code < 300; code++ {
			r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests, reportRequest{Code: 100 + code, Method: "PUT", Count: 1})
		}
		want += 301
		if !s.merge(r, t0.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatalf("instance %d rejected: %v", i, s.rejected)
		}
		if s.held > s.maxHeld {
			t.Fatalf("instance %d: %d entries held, bound %d", i, s.held, s.maxHeld)
		}
	}
	if got := requests(t, s, "stable"); got != want {
		t.Errorf("stable requests %v, want %v", got, want)
	}
}

// TestExpositionPassesPromtool checks the scrape with Prometheus's own linter.
func TestExpositionPassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: apt-get install --no-install-recommends prometheus")
	}
	s := newStore(defaultMaxSeries)
	s.merge(mkReport("a", "i1", 1, 10, 2), t0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{store: s, now: func() time.Time { return t0 }})
	srv := httptest.NewServer(promHandler(reg))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(res.Body)
	res.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
	for _, want := range []string{
		`edgecanary_requests_total{code="200",method="GET",middleware="shop@file",version="canary"} 2`,
		`edgecanary_request_duration_seconds_bucket{middleware="shop@file",version="stable",le="0.005"} 10`,
		`edgecanary_ratelimit_rejected_total{middleware="shop@file"} 3`,
		`edgecanary_fallback_total{from="canary",middleware="shop@file",to="stable"} 1`,
		`edgecanary_version_weight{middleware="shop@file",version="canary"} 0.2`,
		`edgecanary_circuit_state{middleware="shop@file",version="canary"} 0`,
		`edgecanary_version_info{middleware="shop@file",primary="true",version="stable"} 1`,
		`edgecanary_sidecar_reports_total 1`,
		`edgecanary_sidecar_reports_rejected_total{reason="too_large"} 0`,
		`edgecanary_sidecar_last_report_timestamp_seconds{source="a"}`,
	} {
		if !strings.Contains(string(exposition), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

func TestConfigurationSources(t *testing.T) {
	load := func(args []string, env map[string]string) (*Configuration, error) {
		for k, v := range env {
			t.Setenv(k, v)
		}
		cfg := NewConfiguration()
		cmd := &cli.Command{Name: "edgecanary-sidecar", Configuration: cfg, Resources: resources()}
		for _, r := range cmd.Resources {
			done, err := r.Load(args, cmd)
			if err != nil {
				return nil, err
			}
			if done {
				break
			}
		}
		return cfg, cfg.validate()
	}
	cfg, err := load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ingest.Address != "127.0.0.1:9191" || cfg.Ingest.MaxBodyBytes != 1<<20 || cfg.Metrics.Address != ":9190" || cfg.Ingest.Token != "" {
		t.Errorf("defaults: %+v %+v %v", cfg.Ingest, cfg.Metrics, err)
	}
	cfg, err = load([]string{"--ingest.address=127.0.0.1:7000", "--ingest.token=abc", "--metrics.address=127.0.0.1:7001"}, nil)
	if err != nil || cfg.Ingest.Address != "127.0.0.1:7000" || cfg.Ingest.Token != "abc" || cfg.Metrics.Address != "127.0.0.1:7001" || cfg.Ingest.MaxBodyBytes != 1<<20 {
		t.Errorf("flags: %+v %+v %v", cfg.Ingest, cfg.Metrics, err)
	}
	cfg, err = load(nil, map[string]string{"EDGECANARY_INGEST_TOKEN": "fromenv", "EDGECANARY_INGEST_MAXBODYBYTES": "2048"})
	if err != nil || cfg.Ingest.Token != "fromenv" || cfg.Ingest.MaxBodyBytes != 2048 {
		t.Errorf("env: %+v %v", cfg.Ingest, err)
	}
	dir := t.TempDir()
	yml := filepath.Join(dir, "sidecar.yml")
	os.WriteFile(yml, []byte("ingest:\n  address: 127.0.0.1:7100\n  token: fromfile\nmetrics:\n  address: 127.0.0.1:7101\n"), 0o644)
	cfg, err = load([]string{"--configFile=" + yml}, nil)
	if err != nil || cfg.Ingest.Token != "fromfile" || cfg.Metrics.Address != "127.0.0.1:7101" {
		t.Errorf("yaml file: %+v %+v %v", cfg.Ingest, cfg.Metrics, err)
	}
	toml := filepath.Join(dir, "sidecar.toml")
	os.WriteFile(toml, []byte("[ingest]\n  address = \"127.0.0.1:7200\"\n  maxBodyBytes = 4096\n"), 0o644)
	cfg, err = load([]string{"--configFile=" + toml}, nil)
	if err != nil || cfg.Ingest.Address != "127.0.0.1:7200" || cfg.Ingest.MaxBodyBytes != 4096 {
		t.Errorf("toml file: %+v %v", cfg.Ingest, err)
	}
	if _, err := load([]string{"--ingest.maxBodyBytes=-1"}, nil); err == nil || !strings.Contains(err.Error(), "ingest.maxBodyBytes") {
		t.Errorf("negative maxBodyBytes: %v", err)
	}
	if _, err := load([]string{"--ingest.address=nonsense"}, nil); err == nil || !strings.Contains(err.Error(), "ingest.address") {
		t.Errorf("bad address: %v", err)
	}
}

func TestServeAndShutdown(t *testing.T) {
	cfg := NewConfiguration()
	cfg.Ingest.Address = "127.0.0.1:0"
	cfg.Metrics.Address = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, io.Discard, ready) }()
	addrs := <-ready
	res, err := http.Post("http://"+addrs[0]+"/v1/reports", "application/json", bytes.NewReader(body(t, mkReport("a", "i1", 1, 3, 1))))
	if err != nil || res.StatusCode != 204 {
		t.Fatalf("ingest: %v %v", err, res)
	}
	for _, path := range []string{"/-/healthy", "/-/ready", "/metrics", "/", "/api/status", "/status/live", "/status.js", "/status.css"} {
		res, err := http.Get("http://" + addrs[1] + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, err, res)
		}
		res.Body.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no graceful shutdown")
	}
}

func TestStatusQuantiles(t *testing.T) {
	h := &histTotals{bounds: []float64{0.1, 0.2, 0.4}, counts: []uint64{50, 40, 10, 0}}
	if got := *quantile(0.5, h); got != 0.1 {
		t.Errorf("p50 %v, want 0.1", got)
	}
	if got := *quantile(0.9, h); got < 0.199 || got > 0.201 {
		t.Errorf("p90 %v, want 0.2", got)
	}
	if got := *quantile(0.95, h); got < 0.29 || got > 0.31 {
		t.Errorf("p95 %v, want 0.3", got)
	}
}

func fullReport(source, instance string, sentAt int64, extra int) *report {
	r := mkReport(source, instance, sentAt, 1, 1)
	for code := 0; code < extra; code++ {
		r.Middlewares[0].Versions[1].Requests = append(r.Middlewares[0].Versions[1].Requests, reportRequest{Code: 300 + code, Method: "GET", Count: 1})
	}
	return r
}

// TestNewSourcesStayUnderTheCap: at the cap, reports from new sources whose
// series are all known are merged, and their last-report gauges never take
// the series past the cap. (Found by review.)
func TestNewSourcesStayUnderTheCap(t *testing.T) {
	s := newStore(100)
	s.merge(fullReport("a", "i1", 1, 200), t0) // fills the cap exactly
	if s.seriesN+len(s.lastReport) != 100 {
		t.Fatalf("setup: %d series + %d sources", s.seriesN, len(s.lastReport))
	}
	for i := 0; i < 20; i++ {
		s.merge(fullReport(fmt.Sprintf("replica-%d", i), "i1", 1, 200), t0)
	}
	if n := publishedSeries(t, s); n > 100 {
		t.Errorf("%d series published, cap 100 (%d last-report gauges)", n, len(s.lastReport))
	}
}

// TestHeldBoundHoldsAsInstancesGrow: live instances admitted with a small
// first report (a fresh Traefik has seen few status codes) that grow
// afterwards stay within maxHeld. (Found by review.)
func TestHeldBoundHoldsAsInstancesGrow(t *testing.T) {
	s := newStore(100) // maxHeld 1600
	s.merge(fullReport("a", "i0", 1, 200), t0)
	now := t0
	for i := 1; i <= 60; i++ {
		if !s.merge(fullReport("a", fmt.Sprintf("i%d", i), 1, 0), now) { // small first report
			t.Fatalf("instance %d rejected on its first report", i)
		}
	}
	for i := 1; i <= 60; i++ {
		now = now.Add(time.Second)
		s.merge(fullReport("a", fmt.Sprintf("i%d", i), 2, 200), now) // grows to every published series
	}
	if s.held > s.maxHeld {
		t.Errorf("%d entries held by %d live instances, bound %d", s.held, len(s.instances), s.maxHeld)
	}
}

// TestInstanceSilentForMinutesKeepsCounting: a process silent for a few
// minutes (a network blip) while other processes fill the memory is not
// folded to make room, so its counts go on when it comes back. (Found by
// review.)
func TestInstanceSilentForMinutesKeepsCounting(t *testing.T) {
	s := newStore(100) // maxHeld 1600
	s.merge(fullReport("a", "blip", 1, 200), t0)
	now := t0.Add(gaugeStaleAfter + time.Second)
	// Other live instances fill the held memory, one needs room: "blip" is folded.
	for i := 0; i < 40; i++ {
		s.merge(fullReport("a", fmt.Sprintf("i%d", i), 1, 200), now)
	}
	before := requests(t, s, "stable")
	r := fullReport("a", "blip", 2, 200)
	r.Middlewares[0].Versions[1].Requests[0].Count = 1000 // 999 more stable 200s since
	if !s.merge(r, now.Add(time.Second)) {
		t.Fatal("rejected")
	}
	if got := requests(t, s, "stable"); got != before+999 {
		t.Errorf("stable requests %v after the returning instance reported 999 more, want %v", got, before+999)
	}
}

// TestGoldenReportIsAccepted parses the report that the plugin's
// TestReportMatchesGolden writes (testdata/report.golden.json) as ingest
// does, strictly, and publishes it: a field added, renamed or dropped on one
// side fails here or there.
func TestGoldenReportIsAccepted(t *testing.T) {
	b, err := os.ReadFile("../testdata/report.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseReport(b)
	if err != nil {
		t.Fatalf("the plugin's golden report is rejected: %v", err)
	}
	if r.Source != "traefik-0" || len(r.Middlewares) != 1 || r.Middlewares[0].Name != "golden@file" || len(r.Middlewares[0].Versions) != 2 {
		t.Fatalf("parsed %+v", r)
	}
	canary := r.Middlewares[0].Versions[0]
	if canary.Name != "canary" || canary.Weight != 0.25 || canary.Transitions != [3]uint64{1, 1, 2} || len(canary.Hist) != 3 || canary.SumSeconds != 1.5 {
		t.Errorf("canary parsed as %+v", canary)
	}
	s := newStore(defaultMaxSeries)
	if !s.merge(r, t0) {
		t.Fatal("the golden report was not merged")
	}
	if got := requests(t, s, "canary"); got != 9 {
		t.Errorf("canary requests %v, want 9", got)
	}
	if f := r.Middlewares[0].Fallbacks; len(f) != 1 || f[0] != (reportFallback{From: "canary", To: "stable", Count: 4}) {
		t.Errorf("fallbacks %+v", f)
	}
}

// metricOf returns the value of a middleware-level series, and whether it is published.
func metricOf(t *testing.T, s *store, name string) (float64, bool) {
	t.Helper()
	for _, mf := range gather(t, s) {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestRateLimitStoreSeries: a middleware with a shared rate-limit store
// publishes its errors (summed over replicas) and up (0 while any fresh
// replica cannot reach it); one without a store publishes neither.
func TestRateLimitStoreSeries(t *testing.T) {
	s := newStore(defaultMaxSeries)
	if !s.merge(mkReport("traefik-a", "i1", 1, 1, 1), t0) {
		t.Fatal("rejected")
	}
	if _, ok := metricOf(t, s, "edgecanary_ratelimit_store_up"); ok {
		t.Fatal("store_up published for a middleware without a store")
	}
	withStore := func(source string, sentAt int64, up bool, errors uint64) *report {
		r := mkReport(source, "i-"+source, sentAt, 1, 1)
		r.Middlewares[0].RateLimitStore, r.Middlewares[0].RateLimitStoreUp, r.Middlewares[0].RateLimitStoreErrors = "redis", up, errors
		return r
	}
	s.merge(withStore("traefik-a", 2, true, 2), t0)
	s.merge(withStore("traefik-b", 2, false, 3), t0)
	if up, _ := metricOf(t, s, "edgecanary_ratelimit_store_up"); up != 0 {
		t.Errorf("store_up %v with one replica down, want 0", up)
	}
	if n, _ := metricOf(t, s, "edgecanary_ratelimit_store_errors_total"); n != 5 {
		t.Errorf("store errors %v, want 2 + 3", n)
	}
	s.merge(withStore("traefik-b", 3, true, 3), t0)
	if up, _ := metricOf(t, s, "edgecanary_ratelimit_store_up"); up != 1 {
		t.Errorf("store_up %v with every replica up, want 1", up)
	}
	leasing := func(source string, sentAt int64, lease int64, leased, returned uint64) *report {
		r := withStore(source, sentAt, true, 3)
		r.Middlewares[0].RateLimitLease, r.Middlewares[0].RateLimitLeased, r.Middlewares[0].RateLimitReturned = lease, leased, returned
		return r
	}
	s.merge(leasing("traefik-a", 4, 256, 1000, 300), t0)
	s.merge(leasing("traefik-b", 4, 128, 500, 100), t0)
	if n, _ := metricOf(t, s, "edgecanary_ratelimit_store_lease_tokens"); n != 256 {
		t.Errorf("lease %v, want the largest, 256", n)
	}
	if n, _ := metricOf(t, s, "edgecanary_ratelimit_store_leased_tokens_total"); n != 1500 {
		t.Errorf("leased tokens %v, want 1000 + 500", n)
	}
	if n, _ := metricOf(t, s, "edgecanary_ratelimit_store_returned_tokens_total"); n != 400 {
		t.Errorf("returned tokens %v, want 300 + 100", n)
	}
}

// TestRolloutSeries: a middleware with a rollout publishes its step and
// state (the furthest fresh replica's: a rollback on one shows) and its
// checks summed over replicas; one without a rollout publishes none.
func TestRolloutSeries(t *testing.T) {
	s := newStore(defaultMaxSeries)
	s.merge(mkReport("traefik-a", "i1", 1, 1, 1), t0)
	if _, ok := metricOf(t, s, "edgecanary_rollout_state"); ok {
		t.Fatal("rollout_state published without a rollout")
	}
	withRollout := func(source string, sentAt int64, step, state int, checks [3]uint64) *report {
		r := mkReport(source, "i-"+source, sentAt, 1, 1)
		r.Middlewares[0].Rollout = &wire.Rollout{Version: "canary", Step: step, State: state, Checks: checks, StepWeights: []float64{10, 50, 100},
			Recent: []wire.Check{{At: 1, Step: 1, Result: "bogus", Reason: strings.Repeat("x", 500)}}}
		return r
	}
	s.merge(withRollout("traefik-a", 2, 2, wire.RolloutProgressing, [3]uint64{1, 0, 1}), t0)
	s.merge(withRollout("traefik-b", 2, 2, wire.RolloutRolledBack, [3]uint64{0, 2, 0}), t0)
	if v, _ := metricOf(t, s, "edgecanary_rollout_state"); v != wire.RolloutRolledBack {
		t.Errorf("state %v with one replica rolled back, want 3", v)
	}
	if v, _ := metricOf(t, s, "edgecanary_rollout_step"); v != 2 {
		t.Errorf("step %v, want 2", v)
	}
	got := map[string]float64{}
	for _, mf := range gather(t, s) {
		if mf.GetName() == "edgecanary_rollout_checks_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" {
						got[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if got["pass"] != 1 || got["fail"] != 2 || got["inconclusive"] != 1 {
		t.Errorf("checks %v, want pass 1, fail 2, inconclusive 1", got)
	}
	ro := s.snapshot(t0).rollout["shop@file"]
	if len(ro.Recent) != 1 || ro.Recent[0].Result != "inconclusive" || len(ro.Recent[0].Reason) != 200 {
		t.Errorf("a report's checks are not bounded: %+v", ro.Recent)
	}
}
