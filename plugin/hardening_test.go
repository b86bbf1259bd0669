package plugin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// observedSetups are the observed request paths: each feature that wraps the
// writer alone, everything on through its generated path and through the
// reference path.
// The primary is served by the test's next handler.
var observedSetups = []struct {
	name      string
	generated bool
	cfg       func(*Config)
}{
	{"breaker only", true, func(cfg *Config) { cfg.CircuitBreaker.ConsecutiveFailures = 3 }},
	{"reporting only", true, func(cfg *Config) { cfg.Sidecar.Address, cfg.Sidecar.Interval = "http://127.0.0.1:1", "1h" }},
	{"everything on", true, everythingOn},
	{"everything on, reference path", false, everythingOn},
}

func everythingOn(cfg *Config) {
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}, "canary": {Weight: 0, URL: "http://127.0.0.1:1"}}
	cfg.Sticky.Cookie.Secret = "s"
	cfg.RateLimit = rlConfig(100000, "1s", 100000)
	cfg.CircuitBreaker.ConsecutiveFailures = 3
	cfg.Sidecar.Address, cfg.Sidecar.Interval = "http://127.0.0.1:1", "1h"
}

var hardeningSeq int

// observedCanary builds setup's path with next as the primary and mutate applied last.
func observedCanary(t *testing.T, setup int, next http.Handler, mutate func(*Config)) *canary {
	t.Helper()
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}}
	observedSetups[setup].cfg(cfg)
	if mutate != nil {
		mutate(cfg)
	}
	hardeningSeq++
	c := pathCanary(t, next, cfg, fmt.Sprintf("hardening-%d@file", hardeningSeq), observedSetups[setup].generated)
	if !c.observe {
		t.Fatal("not an observed path")
	}
	return c
}

// countOf is how many GET requests the primary's figures hold with code.
func countOf(c *canary, code int) uint64 {
	vs := c.primary.vs
	if vs == nil {
		return 0
	}
	vs.sem <- struct{}{}
	defer func() { <-vs.sem }()
	return vs.counts[code<<4|methodIndex["GET"]]
}

// TestStreamsAreFlushedThroughTheWrapper: a response without a
// Content-Length reaches the client as the backend writes it, on every
// observed path, whatever the request's Accept says; and it is counted with
// its real status. A response with a Content-Length is not flushed per write.
func TestStreamsAreFlushedThroughTheWrapper(t *testing.T) {
	for i, setup := range observedSetups {
		t.Run(setup.name, func(t *testing.T) {
			for _, tc := range []struct {
				accept, length string
				flushed        bool
			}{
				{accept: "application/json", flushed: true},
				{accept: "*/*", flushed: true},
				{accept: "text/event-stream", flushed: true},
				{accept: "*/*", length: "6"},
			} {
				var rec *httptest.ResponseRecorder
				flushedInHandler := false
				next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
					if tc.length != "" {
						rw.Header().Set("Content-Length", tc.length)
					}
					rw.WriteHeader(http.StatusCreated)
					_, _ = io.WriteString(rw, "line1\n")
					flushedInHandler = rec.Flushed // before the handler returns
				})
				c := observedCanary(t, i, next, nil)
				rec = httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
				req.Header.Set("Accept", tc.accept)
				c.ServeHTTP(rec, req)
				if flushedInHandler != tc.flushed {
					t.Errorf("%+v: flushed after the first write: %v, want %v", tc, flushedInHandler, tc.flushed)
				}
				if rec.Code != http.StatusCreated || rec.Body.String() != "line1\n" {
					t.Errorf("%+v: got %d %q", tc, rec.Code, rec.Body.String())
				}
				if c.st != nil && countOf(c, http.StatusCreated) != 1 {
					t.Errorf("%+v: the response is not counted with its code 201", tc)
				}
			}
		})
	}
}

// TestAbortedRequestsAreRecordedOnce: a handler that panics with
// http.ErrAbortHandler mid-body, as Go's and Traefik's proxies do when the
// upstream cuts the body, while the primary's breaker is half-open. The panic
// goes on up; the probe counts as a failure (the breaker opens again instead
// of staying half-open with its slot taken for ever) and the request is
// counted once as a 502. When the client has gone, it is neutral: the slot is
// given back and it is counted as a 499.
func TestAbortedRequestsAreRecordedOnce(t *testing.T) {
	// The upstream promises 100 bytes, sends 7 and closes the connection;
	// Go's reverse proxy, run as under a server, then panics.
	upstream := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Length", "100")
		rw.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rw, "partial")
		_ = http.NewResponseController(rw).Flush()
		if conn, _, err := http.NewResponseController(rw).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer upstream.Close()
	whole := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, strings.Repeat("x", 100))
	}))
	defer whole.Close()
	proxyTo := func(target string) http.Handler {
		u, _ := url.Parse(target)
		return httputil.NewSingleHostReverseProxy(u)
	}
	for i, setup := range observedSetups {
		for _, clientGone := range []bool{false, true} {
			t.Run(setup.name+" client gone "+strconv.FormatBool(clientGone), func(t *testing.T) {
				next := proxyTo(upstream.URL)
				if clientGone {
					next = proxyTo(whole.URL)
				}
				c := observedCanary(t, i, next, nil)
				b := c.primary.br
				if b != nil {
					now := int64(time.Since(epoch))
					b.sem <- struct{}{}
					b.setState(stateOpen, now)
					b.setState(stateHalfOpen, now)
					<-b.sem
				}
				req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
				ctx, cancel := context.WithCancel(context.WithValue(req.Context(), http.ServerContextKey, upstream.Config))
				defer cancel()
				req = req.WithContext(ctx)
				var rw http.ResponseWriter = httptest.NewRecorder()
				if clientGone {
					rw = &goneClient{ResponseWriter: rw, cancel: cancel}
				}
				if p := serveRecovering(c, rw, req); p != http.ErrAbortHandler {
					t.Fatalf("the panic did not go on up: recovered %v", p)
				}
				want, code := stateOpen, http.StatusBadGateway
				if clientGone {
					want, code = stateHalfOpen, statusClientClosedRequest
				}
				if b != nil {
					b.sem <- struct{}{}
					state, requests := b.state, b.requests
					<-b.sem
					if state != want || state == stateHalfOpen && requests != 0 {
						t.Errorf("breaker %s with %d probes in flight, want %s with none", stateNames[state], requests, stateNames[want])
					}
				}
				if c.st != nil && countOf(c, code) != 1 {
					t.Errorf("the aborted request is not counted once as %d", code)
				}
			})
		}
	}
}

func serveRecovering(h http.Handler, rw http.ResponseWriter, req *http.Request) (p interface{}) {
	defer func() { p = recover() }()
	h.ServeHTTP(rw, req)
	return nil
}

// goneClient is a client that hangs up when the body starts.
type goneClient struct {
	http.ResponseWriter
	cancel context.CancelFunc
}

func (w *goneClient) Write(p []byte) (int, error) {
	w.cancel()
	return 0, fmt.Errorf("client gone after %d bytes offered", len(p))
}

// TestHalfOpenProbeSlotExpires: a probe that never reports back frees its
// slot after probeTimeout; its success or failure still counts when it
// comes, as gobreaker's would, but a late neutral outcome (its client gave
// up) does not give back the slot another probe now holds.
func TestHalfOpenProbeSlotExpires(t *testing.T) {
	for _, late := range []int{outcomeSuccess, outcomeFailure, outcomeNeutral} {
		b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.OpenDuration = "2s" })
		do(b, sec, outcomeFailure) // open until 3s
		ok, lost, _ := before(b, 4*sec)
		if !ok || b.state != stateHalfOpen {
			t.Fatal("no probe let through after openDuration")
		}
		if ok, _, _ := before(b, 5*sec); ok {
			t.Fatal("a second probe let through while the first is in flight")
		}
		if ok, _, _ := before(b, 6*sec+1); !ok { // 2s after the lost probe started
			t.Fatal("the lost probe still holds its slot after probeTimeout")
		}
		after(b, lost, late, 7*sec)
		want := []int{stateClosed, stateOpen, stateHalfOpen}[late]
		if b.state != want {
			t.Errorf("late outcome %d of a freed probe: breaker %s, want %s", late, stateNames[b.state], stateNames[want])
		}
		if late == outcomeNeutral {
			if ok, _, _ := before(b, 7*sec+1); ok {
				t.Error("a late neutral outcome gave back the slot of the probe in flight: halfOpenRequests exceeded (found by review)")
			}
		}
	}
}

// TestSlowHealthyProbesCloseTheBreaker: probes slower than probeTimeout,
// and probes far apart at low traffic, still close the breaker.
func TestSlowHealthyProbesCloseTheBreaker(t *testing.T) {
	ms := int64(time.Millisecond)
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.OpenDuration = "500ms" })
	do(b, sec, outcomeFailure) // open until 1.5s, probes held 1s at most
	ok, gen, _ := before(b, 2*sec)
	if !ok {
		t.Fatal("probe refused")
	}
	after(b, gen, outcomeSuccess, 2*sec+1200*ms) // a 200 after 1.2 s
	if b.state != stateClosed {
		t.Fatalf("a successful probe of 1.2 s left the breaker %s", stateNames[b.state])
	}
	b = testBreaker(t, func(c *CircuitBreakerConfig) {
		c.ConsecutiveFailures = 1
		c.OpenDuration = "2s"
		c.HalfOpenRequests = 3
	})
	do(b, sec, outcomeFailure) // open until 3s
	for i := int64(0); i < 3; i++ {
		do(b, 4*sec+i*1100*ms, outcomeSuccess)
	}
	if b.state != stateClosed {
		t.Fatalf("3 successes 1.1 s apart (halfOpenRequests 3) left the breaker %s", stateNames[b.state])
	}
}

// TestFailureWithALongBodyKeepsTheBreakerOpen: with slowThreshold set, an
// outcome is judged on the time to the headers but recorded when the body
// ends, so a failure whose body outlasts openDuration still opens the
// breaker for openDuration from then.
func TestFailureWithALongBodyKeepsTheBreakerOpen(t *testing.T) {
	for i, setup := range observedSetups {
		if setup.name == "reporting only" {
			continue
		}
		t.Run(setup.name, func(t *testing.T) {
			next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
				rw.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(rw, "error page, part 1\n")
				time.Sleep(300 * time.Millisecond)
				_, _ = io.WriteString(rw, "part 2\n")
			})
			c := observedCanary(t, i, next, func(cfg *Config) {
				cfg.CircuitBreaker.ConsecutiveFailures = 1
				cfg.CircuitBreaker.OpenDuration = "200ms"
				cfg.CircuitBreaker.SlowThreshold = "5s"
			})
			c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
			if ok, _, retryIn := before(c.primary.br, int64(time.Since(epoch))); ok {
				t.Fatalf("right after the failure the breaker lets a request through (retry in %v)", time.Duration(retryIn))
			}
		})
	}
}

// slowReader is a client that takes its time reading the body: each write to
// it blocks.
type slowReader struct {
	http.ResponseWriter
	delay time.Duration
}

func (w *slowReader) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	return w.ResponseWriter.Write(p)
}

// TestSlowThresholdJudgesTheBackend: slowThreshold measures from the request
// leaving the plugin to the response headers. A client that reads the body
// slowly does not open the breaker; a backend slow to answer does.
func TestSlowThresholdJudgesTheBackend(t *testing.T) {
	for i, setup := range observedSetups {
		if setup.name == "reporting only" {
			continue
		}
		t.Run(setup.name, func(t *testing.T) {
			slowClient := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
				rw.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(rw, "a large body")
			})
			slowBackend := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
				time.Sleep(300 * time.Millisecond)
				rw.WriteHeader(http.StatusOK)
			})
			// Margins wide enough for the interpreter on a loaded machine:
			// the fast headers must stay under the threshold under Yaegi too.
			slow := func(cfg *Config) {
				cfg.CircuitBreaker.ConsecutiveFailures = 1
				cfg.CircuitBreaker.SlowThreshold = "150ms"
			}
			c := observedCanary(t, i, slowClient, slow)
			c.ServeHTTP(&slowReader{ResponseWriter: httptest.NewRecorder(), delay: 300 * time.Millisecond}, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
			if c.primary.br.state != stateClosed {
				t.Error("a client reading slowly opened the breaker")
			}
			c = observedCanary(t, i, slowBackend, slow)
			c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
			if c.primary.br.state != stateOpen {
				t.Error("a backend slower than slowThreshold did not open the breaker")
			}
		})
	}
}

// TestEveryStickyCookieOfTheNameCounts: a stale cookie before the valid one
// does not re-draw the client.
func TestEveryStickyCookieOfTheNameCounts(t *testing.T) {
	srv := versionServer(t, "canary")
	c := testCanary(t, baseConfig(srv.URL, 50))
	for b := 0; b < numBuckets; b++ {
		if c.bucketOf[b].name != "canary" {
			continue
		}
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.Header.Set("Cookie", "edgecanary=stale; edgecanary="+c.signed.values[b])
		body, res := serve(c, req)
		if body != "canary" || stickyCookie(res, "edgecanary") != nil {
			t.Fatalf("stale then valid cookie: served %q, Set-Cookie %v", body, res.Header["Set-Cookie"])
		}
		return
	}
}

// TestTwoMiddlewaresShareTheDefaultCookieName: two middlewares on one host,
// both with the default cookie name and different secrets. Each leaves the
// other's cookie alone and keeps the client on one version, so the client is
// not re-drawn on every request as they take turns.
func TestTwoMiddlewaresShareTheDefaultCookieName(t *testing.T) {
	srv := versionServer(t, "canary")
	cfgA, cfgB := baseConfig(srv.URL, 50), baseConfig(srv.URL, 50)
	cfgA.Sticky.Cookie.Secret, cfgB.Sticky.Cookie.Secret = "secret-of-a", "secret-of-b"
	a, err := newCanary(context.Background(), stableNext, cfgA, "api@file")
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCanary(context.Background(), stableNext, cfgB, "shop@file")
	if err != nil {
		t.Fatal(err)
	}
	for client := 0; client < 20; client++ {
		_, res := serve(a, httptest.NewRequest(http.MethodGet, "http://shop.test/api", nil))
		ck := stickyCookie(res, "edgecanary")
		if ck == nil {
			t.Fatal("no cookie from the first middleware")
		}
		first := map[*canary]string{}
		for i := 0; i < 6; i++ {
			h := a
			if i%2 == 1 {
				h = b
			}
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.AddCookie(ck)
			body, res := serve(h, req)
			if nc := stickyCookie(res, "edgecanary"); nc != nil {
				t.Fatalf("client %d, request %d: the cookie was replaced (%s)", client, i, nc.Value)
			}
			if first[h] == "" {
				first[h] = body
			} else if body != first[h] {
				t.Fatalf("client %d, request %d: served %q, then %q by the same middleware", client, i, first[h], body)
			}
		}
	}
}

// TestForeignSecretCannotChooseAVersion: whoever configures a middleware
// with the default cookie name and a secret they know (another tenant's
// Middleware) can mint its cookies for any bucket, but another middleware
// derives its own bucket from such a cookie: minting every canary bucket of
// a 1% canary lands about 1% of them on the canary. (Found by review.)
func TestForeignSecretCannotChooseAVersion(t *testing.T) {
	srv := versionServer(t, "canary")
	attacker := baseConfig(srv.URL, 50)
	attacker.Sticky.Cookie.Secret = "attacker-chosen"
	if _, err := newCanary(context.Background(), stableNext, attacker, "tenant-b-x@kubernetescrd"); err != nil {
		t.Fatal(err)
	}
	shop := testCanary(t, baseConfig(srv.URL, 1)) // 1% canary
	tried, canary := 0, 0
	for b := 0; b < numBuckets; b++ {
		if shop.bucketOf[b].name != "canary" {
			continue
		}
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.AddCookie(&http.Cookie{Name: "edgecanary", Value: cookieValue([]byte("attacker-chosen"), b)})
		if body, _ := serve(shop, req); body == "canary" {
			canary++
		}
		tried++
	}
	if tried == 0 || canary > tried/10 {
		t.Fatalf("%d of %d cookies minted for canary buckets with another middleware's secret were served by the canary", canary, tried)
	}
}

// TestSecretOfARemovedMiddlewareIsForgotten: a middleware removed from the
// configuration (its New's context is done at the next reload) vouches for
// its cookies for reloadGrace, then no longer: after shop rotated away from
// that secret without keeping it in previousSecrets, a cookie signed with it
// is re-drawn. (Found by review.)
func TestSecretOfARemovedMiddlewareIsForgotten(t *testing.T) {
	srv := versionServer(t, "canary")
	old := baseConfig(srv.URL, 50)
	old.Sticky.Cookie.Secret = "old-secret"
	live, reload := context.WithCancel(context.Background())
	legacy, err := newCanary(live, stableNext, old, "legacy@file")
	if err != nil {
		t.Fatal(err)
	}
	revoked := legacy.signed.values[42]
	reload() // the next configuration: legacy is gone
	t1 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	if !signedElsewhere("edgecanary", "shop@file", revoked, t1) {
		t.Error("during the reload, legacy's cookie is no longer recognised")
	}
	if signedElsewhere("edgecanary", "shop@file", revoked, t1.Add(reloadGrace+time.Second)) {
		t.Error("a removed middleware's cookie is still recognised after reloadGrace")
	}
}

// TestCookieTablesDropTheOldestFirst: at the bound of middlewares sharing a
// cookie name, a removed middleware's table goes first, then the one
// published longest ago; the table published a moment before stays. Tables
// were dropped at random: in a yaegi test run, where more than 64 tests'
// middlewares share the default cookie name,
// TestTwoMiddlewaresShareTheDefaultCookieName lost its first middleware's
// table when it made the second (failed CI at 8700b26).
func TestCookieTablesDropTheOldestFirst(t *testing.T) {
	const name = "cookie-tables-bound"
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	table := func(i int) *signedBuckets {
		return &signedBuckets{current: map[string]int{fmt.Sprint("value-", i): 1}}
	}
	removed, reload := context.WithCancel(context.Background())
	reload()
	for i := 0; i < maxCookieTables; i++ {
		live := context.Background()
		if i == 40 {
			live = removed
		}
		shareCookieTable(live, name, fmt.Sprint("mw-", i), table(i), now)
	}
	known := func(i int) bool { return signedElsewhere(name, "", fmt.Sprint("value-", i), now) }
	shareCookieTable(context.Background(), name, "mw-new-1", table(100), now)
	if known(40) {
		t.Error("a live middleware's table was dropped before the removed one's")
	}
	shareCookieTable(context.Background(), name, "mw-new-2", table(101), now)
	if known(0) || !known(1) {
		t.Errorf("with every middleware live, the oldest (mw-0) must go first: mw-0 kept %v, mw-1 kept %v", known(0), known(1))
	}
	for i := 1; i < maxCookieTables; i++ {
		if i != 40 && !known(i) {
			t.Errorf("mw-%d was dropped", i)
		}
	}
	if !known(100) || !known(101) {
		t.Error("a table published a moment ago was dropped")
	}
	cookieTables.Lock()
	defer cookieTables.Unlock()
	if n := len(cookieTables.m[name]); n != maxCookieTables {
		t.Errorf("%d tables share the name, want the bound, %d", n, maxCookieTables)
	}
}

// TestReloadKeepsTheOtherMiddlewaresCookie: Traefik cancels the previous
// configuration's context before it builds the new handlers, and the old
// ones serve meanwhile; in that window a middleware must not overwrite the
// cookie of another one still configured. (Found by review.)
func TestReloadKeepsTheOtherMiddlewaresCookie(t *testing.T) {
	srv := versionServer(t, "canary")
	cfgA, cfgB := baseConfig(srv.URL, 50), baseConfig(srv.URL, 50)
	cfgA.Sticky.Cookie.Secret, cfgB.Sticky.Cookie.Secret = "secret-of-a", "secret-of-b"
	live, reload := context.WithCancel(context.Background())
	a, err := newCanary(live, stableNext, cfgA, "api-rw@file")
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCanary(live, stableNext, cfgB, "shop-rw@file")
	if err != nil {
		t.Fatal(err)
	}
	_, res := serve(a, httptest.NewRequest(http.MethodGet, "http://shop.test/api", nil))
	ck := stickyCookie(res, "edgecanary")
	reload()
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.AddCookie(ck)
	if _, res := serve(b, req); stickyCookie(res, "edgecanary") != nil {
		t.Fatal("during a reload, shop replaced api's cookie (api is still configured)")
	}
}

// TestVersionTimeoutCoversConnecting: an upstream that accepts connections
// and never answers the TLS handshake gets the version's timeout, not
// Go's 10 s handshake timeout.
func TestVersionTimeoutCoversConnecting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn) // accepted, and silent
			mu.Unlock()
		}
	}()
	cfg := baseConfig("https://"+l.Addr().String(), 100)
	cfg.Versions["canary"] = VersionConfig{Weight: 100, URL: "https://" + l.Addr().String(), Timeout: "300ms"}
	c := testCanary(t, cfg)
	start := time.Now()
	_, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if elapsed := time.Since(start); res.StatusCode != http.StatusGatewayTimeout || elapsed > 3*time.Second {
		t.Fatalf("status %d after %v, want 504 after about 300ms", res.StatusCode, elapsed)
	}
}

// TestProxyErrorsAreLoggedRateLimited: one line per 10 s, at fixed instants.
func TestProxyErrorsAreLoggedRateLimited(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).Add(time.Duration(hardeningSeq) * time.Hour)
	hardeningSeq++
	err := fmt.Errorf("connection refused")
	if !logProxyError("127.0.0.1:1", 502, err, t0) {
		t.Fatal("the first error was not logged")
	}
	for i := 1; i < 10; i++ {
		if logProxyError("127.0.0.1:1", 502, err, t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("error %d within 10 s was logged", i)
		}
	}
	if !logProxyError("127.0.0.1:1", 502, err, t0.Add(10*time.Second)) {
		t.Fatal("no line after 10 s")
	}
}

// slowBody is a request body that trickles in: n chunks, one per delay.
type slowBody struct {
	n     int
	delay time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.delay)
	s.n--
	p[0] = 'x'
	return 1, nil
}

// TestSlowUploadIsNotABackendTimeout: a version's timeout does not run while
// the client uploads its body. An upload slower than the timeout (a large
// file, or a client that trickles its body on purpose) is served by a healthy
// backend, and does not open the version's breaker. (Found by review.)
func TestSlowUploadIsNotABackendTimeout(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		n, _ := io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(rw, "got "+time.Duration(n).String())
	}))
	defer backend.Close()
	cfg := baseConfig(backend.URL, 100)
	cfg.Versions["canary"] = VersionConfig{Weight: 100, URL: backend.URL, Timeout: "500ms"}
	cfg.CircuitBreaker.ConsecutiveFailures = 1
	c := testCanary(t, cfg)
	req := httptest.NewRequest(http.MethodPost, "http://shop.test/upload", &slowBody{n: 8, delay: 120 * time.Millisecond})
	req.ContentLength = 8
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("healthy backend, upload of ~1 s: got %d, want 200", rec.Code)
	}
	for _, r := range c.routes {
		if r.name == "canary" && r.br.state != stateClosed {
			t.Errorf("a slow upload opened the canary's breaker (%s)", stateNames[r.br.state])
		}
	}
}

// earlyAnswer is a full-duplex backend: it answers 200 at once, then reads
// the request body, and writes "done" 400 ms later.
func earlyAnswer(t *testing.T) *httptest.Server {
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		_ = http.NewResponseController(rw).EnableFullDuplex()
		rw.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(rw).Flush()
		_, _ = io.Copy(io.Discard, req.Body)
		time.Sleep(400 * time.Millisecond)
		_, _ = io.WriteString(rw, "done")
	}))
	t.Cleanup(backend.Close)
	return backend
}

// TestEarlyAnswerIsNotCutByTheTimeout: a backend that sends its headers
// before it has read the whole request body (full duplex, or an early
// answer): the request is written after RoundTrip returned, and the timeout
// must not be re-armed then and cancel the body being read. (Found by review.)
func TestEarlyAnswerIsNotCutByTheTimeout(t *testing.T) {
	backend := earlyAnswer(t)
	d := &headerDeadline{next: newTransport(), timeout: 200 * time.Millisecond}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, backend.URL, pr)
	req.ContentLength = -1
	res, err := d.RoundTrip(req)
	if err != nil {
		t.Fatalf("headers were immediate, got %v", err)
	}
	_, _ = pw.Write([]byte("upload"))
	pw.Close() // the request is written now: WroteRequest runs after RoundTrip returned
	body, err := io.ReadAll(res.Body)
	if err != nil || string(body) != "done" {
		t.Fatalf("headers in at once, yet the body was cut: %q, %v", body, err)
	}
}

// TestFullDuplexBackendKeepsItsBreakerClosed: the same through the
// middleware: a healthy full-duplex backend whose headers come at once is
// served whole and does not open its breaker. (Found by review.)
func TestFullDuplexBackendKeepsItsBreakerClosed(t *testing.T) {
	backend := earlyAnswer(t)
	cfg := baseConfig(backend.URL, 100)
	cfg.Versions["canary"] = VersionConfig{Weight: 100, URL: backend.URL, Timeout: "200ms"}
	cfg.CircuitBreaker.ConsecutiveFailures = 1
	c := testCanary(t, cfg)
	pr, pw := io.Pipe()
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = pw.Write([]byte("upload"))
		pw.Close()
	}()
	req := httptest.NewRequest(http.MethodPost, "http://shop.test/upload", pr)
	req = req.WithContext(context.WithValue(req.Context(), http.ServerContextKey, &http.Server{})) // as under Traefik's server
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	func() {
		defer func() { recover() }()
		c.ServeHTTP(rec, req)
	}()
	if rec.Body.String() != "done" {
		t.Errorf("body %q, want \"done\"", rec.Body.String())
	}
	for _, r := range c.routes {
		if r.name == "canary" && r.br.state != stateClosed {
			t.Errorf("a healthy backend answering at once opened the canary's breaker (%s)", stateNames[r.br.state])
		}
	}
}
