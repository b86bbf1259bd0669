package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// Micro-benchmarks of the per-request path, run through the Yaegi
// interpreter exactly as Traefik runs the plugin. They show where the
// interpreted time goes; `make bench` measures the real Traefik.
//
//	cd e2e && go test -run '^$' -bench Yaegi -benchtime 20000x

// nopWriter is a ResponseWriter that discards everything, so the benchmark
// measures the plugin, not the recorder.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

var nopNext = http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })

// benchHandler builds the plugin in Yaegi from a raw config.
func benchHandler(b *testing.B, raw map[string]any) http.Handler {
	b.Helper()
	p := loadYaegiPluginLogging(b, io.Discard) // keep the benchmark output parseable
	cfg, err := p.config(raw)
	if err != nil {
		b.Fatal(err)
	}
	h, err := p.handler(context.Background(), nopNext, cfg, "bench@file")
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// runServe serves req b.N times. The request carries Accept as curl sends it
// (and as make bench's wrk does) unless it sets its own.
func runServe(b *testing.B, h http.Handler, req *http.Request) {
	b.Helper()
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "*/*")
	}
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range w.h {
			delete(w.h, k)
		}
		h.ServeHTTP(w, req)
	}
}

var benchVersions = map[string]any{
	"stable": map[string]any{"weight": 80},
	"canary": map[string]any{"weight": 20, "url": "http://127.0.0.1:1"},
}

// stableCookie returns a cookie of the primary version for h.
func stableCookie(b *testing.B, h http.Handler) *http.Cookie {
	b.Helper()
	for i := 0; i < 1000; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
		if rec.Code == http.StatusOK {
			for _, c := range rec.Result().Cookies() {
				if c.Name == "edgecanary" {
					return c
				}
			}
		}
	}
	b.Fatal("no stable cookie")
	return nil
}

// BenchmarkYaegiBaselineNext is a handler that only calls next, for scale.
func BenchmarkYaegiBaselineNext(b *testing.B) {
	runServe(b, nopNext, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiSingleVersion: one version, nothing else on: the plugin only
// forwards.
func BenchmarkYaegiSingleVersion(b *testing.B) {
	h := benchHandler(b, map[string]any{"versions": map[string]any{"stable": map[string]any{"weight": 1}}})
	runServe(b, h, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiCookieCheck: a returning client's cookie is verified and its
// version chosen.
func BenchmarkYaegiCookieCheck(b *testing.B) {
	h := benchHandler(b, map[string]any{"versions": benchVersions, "sticky": map[string]any{"cookie": map[string]any{"secret": "s"}}})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.AddCookie(stableCookie(b, h))
	runServe(b, h, req)
}

// BenchmarkYaegiNewClient: a client without a cookie gets a bucket and a cookie.
func BenchmarkYaegiNewClient(b *testing.B) {
	h := benchHandler(b, map[string]any{"versions": map[string]any{"stable": map[string]any{"weight": 100}, "canary": map[string]any{"weight": 0, "url": "http://127.0.0.1:1"}}})
	runServe(b, h, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiStickyHeader: the bucket is an HMAC of a header.
func BenchmarkYaegiStickyHeader(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions": map[string]any{"stable": map[string]any{"weight": 100}, "canary": map[string]any{"weight": 0, "url": "http://127.0.0.1:1"}},
		"sticky":   map[string]any{"header": "X-User-ID"},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.Header.Set("X-User-ID", "user-42")
	runServe(b, h, req)
}

// BenchmarkYaegiRateLimit: one client's token bucket, with the RateLimit
// headers, never limited.
func BenchmarkYaegiRateLimit(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions":  map[string]any{"stable": map[string]any{"weight": 1}},
		"rateLimit": map[string]any{"average": 1000000, "burst": 1000},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	runServe(b, h, req)
}

// BenchmarkYaegiRateLimitNoHeaders: the same without the RateLimit headers.
func BenchmarkYaegiRateLimitNoHeaders(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions":  map[string]any{"stable": map[string]any{"weight": 1}},
		"rateLimit": map[string]any{"average": 1000000, "burst": 1000, "headers": false},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	runServe(b, h, req)
}

// BenchmarkYaegiBreaker: a closed breaker around the primary: status
// observed, outcome recorded.
func BenchmarkYaegiBreaker(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions":       map[string]any{"stable": map[string]any{"weight": 1}},
		"circuitBreaker": map[string]any{"consecutiveFailures": 5, "failureRatio": 0.5},
	})
	runServe(b, h, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// bodyNext answers as a backend behind Traefik's proxy does: WriteHeader,
// then a body with its Content-Length, or without one (a stream).
func bodyNext(length bool) http.Handler {
	body := []byte("ok\n")
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if length {
			rw.Header()["Content-Length"] = []string{"3"}
		}
		rw.WriteHeader(http.StatusOK)
		_, _ = rw.Write(body)
	})
}

// benchBreakerBody is BenchmarkYaegiBreaker with a body written through the
// status wrapper: its Write is interpreted, and flushes when the response
// has no Content-Length.
func benchBreakerBody(b *testing.B, length bool) {
	p := loadYaegiPluginLogging(b, io.Discard)
	cfg, err := p.config(map[string]any{
		"versions":       map[string]any{"stable": map[string]any{"weight": 1}},
		"circuitBreaker": map[string]any{"consecutiveFailures": 5, "failureRatio": 0.5},
	})
	if err != nil {
		b.Fatal(err)
	}
	h, err := p.handler(context.Background(), bodyNext(length), cfg, "bench@file")
	if err != nil {
		b.Fatal(err)
	}
	runServe(b, h, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiBreakerBody: a response with a Content-Length, one write.
func BenchmarkYaegiBreakerBody(b *testing.B) { benchBreakerBody(b, true) }

// BenchmarkYaegiBreakerStream: a response without one, one write and a flush.
func BenchmarkYaegiBreakerStream(b *testing.B) { benchBreakerBody(b, false) }

// BenchmarkYaegiAggregation: the per-version figures for the sidecar (the
// sender itself runs in the background and is not timed).
func BenchmarkYaegiAggregation(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions": map[string]any{"stable": map[string]any{"weight": 1}},
		"sidecar":  map[string]any{"address": "http://127.0.0.1:1", "interval": "1h"},
	})
	runServe(b, h, httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiEverything: cookie, limiter, breaker and aggregation.
func BenchmarkYaegiEverything(b *testing.B) {
	h := benchHandler(b, map[string]any{
		"versions":       benchVersions,
		"sticky":         map[string]any{"cookie": map[string]any{"secret": "s"}},
		"rateLimit":      map[string]any{"average": 1000000, "burst": 1000},
		"circuitBreaker": map[string]any{"consecutiveFailures": 5, "failureRatio": 0.5},
		"sidecar":        map[string]any{"address": "http://127.0.0.1:1", "interval": "1h"},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.AddCookie(stableCookie(b, h))
	runServe(b, h, req)
}

// benchCookieReporting is the configuration of BenchmarkYaegiCookieReporting,
// and, with a rollout, of BenchmarkYaegiRollout.
func benchCookieReporting(rollout map[string]any) map[string]any {
	cfg := map[string]any{
		"versions": benchVersions,
		"sticky":   map[string]any{"cookie": map[string]any{"secret": "s"}},
		"sidecar":  map[string]any{"address": "http://127.0.0.1:1", "interval": "1h"},
	}
	if rollout != nil {
		cfg["rollout"] = rollout
	}
	return cfg
}

// BenchmarkYaegiCookieReporting: a returning stable client, with reporting
// (path PS): what a rollout needs, without one.
func BenchmarkYaegiCookieReporting(b *testing.B) {
	h := benchHandler(b, benchCookieReporting(nil))
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.AddCookie(stableCookie(b, h))
	runServe(b, h, req)
}

// BenchmarkYaegiRollout: the same with a running rollout (path PSR): its
// only work per request is comparing the bucket with the cut.
func BenchmarkYaegiRollout(b *testing.B) {
	h := benchHandler(b, benchCookieReporting(map[string]any{
		"start":       time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
		"stepWeights": []any{20, 40},
		"interval":    "24h",
	}))
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.AddCookie(stableCookie(b, h))
	runServe(b, h, req)
}

// oracleHelpers is added, only in the benchmark's staged copy of the
// plugin, to compare the lean limiter and breaker with the libraries they
// replace, both interpreted by Yaegi, op for op.
const oracleHelpers = `package plugin

import (
	"context"
	"time"

	"github.com/sony/gobreaker"
	"golang.org/x/time/rate"
)

func BenchXTimeRate(n int) {
	l := rate.NewLimiter(rate.Limit(1e9), 1000000)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		r := l.ReserveN(t0.Add(time.Duration(i)), 1)
		_ = r.DelayFrom(t0.Add(time.Duration(i)))
	}
}

func BenchLeanLimiter(n int) {
	cfg := defaultRateLimitConfig()
	cfg.Average, cfg.Burst = 1000000000, 1000000
	l, _ := newLimiter(context.Background(), "bench-oracle@file", cfg)
	for i := 0; i < n; i++ {
		take(l, "k", int64(i))
	}
}

func BenchGobreaker(n int) {
	cb := gobreaker.NewTwoStepCircuitBreaker(gobreaker.Settings{ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 5 }})
	for i := 0; i < n; i++ {
		done, err := cb.Allow()
		if err == nil {
			done(true)
		}
	}
}

func BenchLeanBreaker(n int) {
	cfg := defaultCircuitBreakerConfig()
	cfg.ConsecutiveFailures = 5
	s, _ := newBreakerSettings(cfg)
	b := newBreaker(s, "bench/v", breakerNow())
	for i := 0; i < n; i++ {
		now := breakerNow()
		ok, gen, _ := before(b, now)
		if ok {
			after(b, gen, outcomeSuccess, now)
		}
	}
}
`

func oracleBench(b *testing.B, fn string) {
	goPath := b.TempDir()
	stagePlugin(b, goPath)
	dir := filepath.Join(goPath, "src", filepath.FromSlash(moduleName), "plugin")
	if err := os.WriteFile(filepath.Join(dir, "zz_oracles.go"), []byte(oracleHelpers), 0o644); err != nil {
		b.Fatal(err)
	}
	i := yaegiImport(b, goPath, io.Discard, moduleName+"/plugin")
	v, err := i.Eval("plugin." + fn)
	if err != nil {
		b.Fatal(err)
	}
	f := v.Interface().(func(int))
	b.ReportAllocs()
	b.ResetTimer()
	f(b.N)
}

// The libraries kept as oracles, against their lean replacements, per
// operation, all interpreted.
func BenchmarkYaegiOracleXTimeRateReserve(b *testing.B) { oracleBench(b, "BenchXTimeRate") }
func BenchmarkYaegiLeanLimiterTake(b *testing.B)        { oracleBench(b, "BenchLeanLimiter") }
func BenchmarkYaegiOracleGobreakerAllow(b *testing.B)   { oracleBench(b, "BenchGobreaker") }
func BenchmarkYaegiLeanBreakerBeforeAfter(b *testing.B) { oracleBench(b, "BenchLeanBreaker") }

// floorHandler builds the benchmark's reference plugin (cmd/bench/floor) in
// Yaegi, in the given mode.
func floorHandler(b *testing.B, mode string) http.Handler {
	b.Helper()
	goPath := b.TempDir()
	dst := filepath.Join(goPath, "src", "github.com", "edgecanary", "benchfloor")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{"floor.go", "status_gen.go"} { // the status wrapper is rendered by internal/gen
		src, err := os.ReadFile(filepath.Join("cmd", "bench", "floor", f))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), src, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	i := yaegiImport(b, goPath, io.Discard, "github.com/edgecanary/benchfloor")
	fnNew, err := i.Eval("benchfloor.New")
	if err != nil {
		b.Fatal(err)
	}
	fnCfg, err := i.Eval("benchfloor.CreateConfig")
	if err != nil {
		b.Fatal(err)
	}
	cfg := fnCfg.Call(nil)[0]
	cfg.Elem().FieldByName("Mode").SetString(mode)
	out := fnNew.Call([]reflect.Value{reflect.ValueOf(context.Background()), reflect.ValueOf(nopNext), cfg, reflect.ValueOf("floor@file")})
	if !out[1].IsNil() {
		b.Fatal(out[1].Interface())
	}
	return out[0].Interface().(http.Handler)
}

// BenchmarkYaegiFloorNext: the benchmark's reference plugin that only calls
// next: the cost of entering the interpreter.
func BenchmarkYaegiFloorNext(b *testing.B) {
	runServe(b, floorHandler(b, "next"), httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiFloorObserve: the reference plugin that reads the status code
// and times the request, and does nothing else.
func BenchmarkYaegiFloorObserve(b *testing.B) {
	runServe(b, floorHandler(b, "observe"), httptest.NewRequest(http.MethodGet, "http://bench.test/", nil))
}

// BenchmarkYaegiFloorLimit: the reference plugin that reads the clock, takes
// a lock, stores the instant by peer and writes the two RateLimit fields.
func BenchmarkYaegiFloorLimit(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	runServe(b, floorHandler(b, "limit"), req)
}

// BenchmarkYaegiFloorPick: the reference plugin that calls the handler its
// request's cookie names, and does nothing else.
func BenchmarkYaegiFloorPick(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.AddCookie(&http.Cookie{Name: "floor", Value: "stable"})
	runServe(b, floorHandler(b, "pick"), req)
}

// BenchmarkYaegiFloorAll: the reference plugin that does what the limit,
// pick and observe ones do, in one handler (line 5e).
func BenchmarkYaegiFloorAll(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.AddCookie(&http.Cookie{Name: "floor", Value: "stable"})
	runServe(b, floorHandler(b, "all"), req)
}

// BenchmarkYaegiRedisLease: the rate limit shared through a real
// redis-server, one client: the request is admitted from this replica's
// lease, and a round trip is made in the background once per lease (the
// limits of make bench's line 6b).
func BenchmarkYaegiRedisLease(b *testing.B) {
	rd := startRedis(b)
	h := benchHandler(b, map[string]any{
		"versions":  map[string]any{"stable": map[string]any{"weight": 1}},
		"rateLimit": map[string]any{"average": 100000, "burst": 1000, "redis": map[string]any{"endpoints": []any{rd.addr}}},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	runServe(b, h, req)
}

// BenchmarkYaegiRedisPerRequest is a store call per request: a burst below
// 32 leases nothing, so each request takes its one token from the store.
func BenchmarkYaegiRedisPerRequest(b *testing.B) {
	rd := startRedis(b)
	h := benchHandler(b, map[string]any{
		"versions":  map[string]any{"stable": map[string]any{"weight": 1}},
		"rateLimit": map[string]any{"average": 100000, "burst": 16, "redis": map[string]any{"endpoints": []any{rd.addr}}},
	})
	req := httptest.NewRequest(http.MethodGet, "http://bench.test/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	runServe(b, h, req)
}
