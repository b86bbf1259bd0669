package plugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// observedSetups are the observed request paths: each feature that wraps the
// writer alone, everything on through serveAll and through the general path.
// The primary is served by the test's next handler.
var observedSetups = []struct {
	name  string
	fused bool
	cfg   func(*Config)
}{
	{"breaker only", true, func(cfg *Config) { cfg.CircuitBreaker.ConsecutiveFailures = 3 }},
	{"reporting only", true, func(cfg *Config) { cfg.Sidecar.Address, cfg.Sidecar.Interval = "http://127.0.0.1:1", "1h" }},
	{"everything on", true, everythingOn},
	{"everything on, general path", false, everythingOn},
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
	c := fusedCanary(t, next, cfg, fmt.Sprintf("hardening-%d@file", hardeningSeq), observedSetups[setup].fused)
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
// slot after probeTimeout, and its late outcome is discarded.
func TestHalfOpenProbeSlotExpires(t *testing.T) {
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.OpenDuration = "2s" })
	do(b, sec, outcomeFailure) // open until 3s
	ok, lost, _ := before(b, 4*sec)
	if !ok || b.state != stateHalfOpen {
		t.Fatal("no probe let through after openDuration")
	}
	if ok, _, _ := before(b, 5*sec); ok {
		t.Fatal("a second probe let through while the first is in flight")
	}
	ok, gen, _ := before(b, 6*sec+1) // 2s after the probe started
	if !ok {
		t.Fatal("the lost probe still holds its slot after probeTimeout")
	}
	after(b, lost, outcomeFailure, 6*sec+2) // the lost probe's late failure
	if b.state != stateHalfOpen {
		t.Fatal("a late outcome from an expired probe counted")
	}
	after(b, gen, outcomeSuccess, 6*sec+3)
	if b.state != stateClosed {
		t.Fatalf("breaker %s after a successful probe, want closed", stateNames[b.state])
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
				time.Sleep(80 * time.Millisecond)
				rw.WriteHeader(http.StatusOK)
			})
			slow := func(cfg *Config) {
				cfg.CircuitBreaker.ConsecutiveFailures = 1
				cfg.CircuitBreaker.SlowThreshold = "40ms"
			}
			c := observedCanary(t, i, slowClient, slow)
			c.ServeHTTP(&slowReader{ResponseWriter: httptest.NewRecorder(), delay: 80 * time.Millisecond}, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
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
