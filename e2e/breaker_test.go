package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Failure modes of a switchable backend.
const (
	modeOK int32 = iota
	mode500
	modeHang
	modeRefuse // the listener is closed: connections are refused
)

// switchBackend is a version whose behaviour the test changes at will, on a
// fixed loopback port so that it can refuse connections and come back.
type switchBackend struct {
	t        testing.TB
	version  string
	addr     string
	mode     atomic.Int32
	requests atomic.Int64
	mu       sync.Mutex
	srv      *http.Server
	release  chan struct{}
}

func newSwitchBackend(t testing.TB, version string) *switchBackend {
	t.Helper()
	b := &switchBackend{t: t, version: version, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), release: make(chan struct{})}
	b.listen()
	t.Cleanup(func() {
		b.setMode(modeOK)
		b.mu.Lock()
		if b.srv != nil {
			b.srv.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *switchBackend) URL() string { return "http://" + b.addr }

func (b *switchBackend) listen() {
	b.t.Helper()
	var l net.Listener
	var err error
	waitFor(b.t, 10*time.Second, "listening on "+b.addr, func() bool {
		l, err = net.Listen("tcp", b.addr)
		return err == nil
	})
	srv := &http.Server{Handler: http.HandlerFunc(b.serve)}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

func (b *switchBackend) serve(rw http.ResponseWriter, req *http.Request) {
	b.requests.Add(1)
	rw.Header().Set("X-Version", b.version)
	switch b.mode.Load() {
	case mode500:
		rw.WriteHeader(http.StatusInternalServerError)
		return
	case modeHang:
		select {
		case <-b.release:
		case <-req.Context().Done():
		}
		return
	}
	_, _ = io.WriteString(rw, b.version)
}

// setMode switches the failure mode.
func (b *switchBackend) setMode(m int32) {
	prev := b.mode.Swap(m)
	if prev == modeHang && m != modeHang {
		close(b.release)
		b.release = make(chan struct{})
	}
	if m == modeRefuse && prev != modeRefuse {
		b.mu.Lock()
		b.srv.Close()
		b.srv = nil
		b.mu.Unlock()
	}
	if prev == modeRefuse && m != modeRefuse {
		b.listen()
	}
}

func TestTraefikBreakerFailoverAndRecovery(t *testing.T) {
	for _, test := range []struct {
		desc string
		mode int32
	}{
		{desc: "500s", mode: mode500},
		{desc: "hang", mode: modeHang},
		{desc: "refused connections", mode: modeRefuse},
	} {
		t.Run(test.desc, func(t *testing.T) {
			stable := newBackend(t, "stable")
			canary := newSwitchBackend(t, "canary")
			dyn := canaryDynamic(stable.URL, canary.URL(), 0, 100, `          circuitBreaker:
            consecutiveFailures: 3
            openDuration: 2s
`)
			// The canary's timeout bounds a hanging upstream.
			dyn = replaceOnce(dyn, "              url: "+strconv.Quote(canary.URL())+"\n",
				"              url: "+strconv.Quote(canary.URL())+"\n              timeout: 300ms\n")
			tr := startTraefik(t, dyn, traefikOptions{})
			tr.waitRouter("shop")
			c := client("")
			a := freshClients(t, c, tr.web+"/", 1)[0]
			if a.version != "canary" {
				t.Fatalf("fresh client on %s at canary weight 100", a.version)
			}
			canary.setMode(test.mode)
			codes := []int{}
			for i := 0; i < 3; i++ {
				res, _ := get(t, c, tr.web+"/", a.cookie, nil)
				codes = append(codes, res.StatusCode)
			}
			t.Logf("while tripping: %v", codes)
			before := canary.requests.Load()
			for i := 0; i < 20; i++ {
				res, body := get(t, c, tr.web+"/", a.cookie, nil)
				if res.StatusCode != http.StatusOK || body != "stable" || res.Header.Get("Edgecanary-Fallback") != "canary" {
					t.Fatalf("after the trip, request %d: %d %q fallback %q", i, res.StatusCode, body, res.Header.Get("Edgecanary-Fallback"))
				}
				if cookieNamed(res, "edgecanary") != nil {
					t.Fatal("fallback replaced the user's cookie")
				}
			}
			if n := canary.requests.Load() - before; n != 0 && test.mode != modeRefuse {
				t.Errorf("the open canary received %d requests", n)
			}
			// Recovery: after openDuration a probe succeeds and the user is back.
			canary.setMode(modeOK)
			start := time.Now()
			tr.waitFor(10*time.Second, "the canary user back on the canary", func() bool {
				res, body := get(t, c, tr.web+"/", a.cookie, nil)
				return res.StatusCode == http.StatusOK && body == "canary" && res.Header.Get("Edgecanary-Fallback") == ""
			})
			t.Logf("back on the canary %v after recovery (openDuration 2s)", time.Since(start).Round(100*time.Millisecond))
		})
	}
}

func TestTraefikBreakerPrimaryOutage(t *testing.T) {
	stable := newSwitchBackend(t, "stable")
	canary := newBackend(t, "canary")
	tr := startTraefik(t, canaryDynamic(stable.URL(), canary.URL, 100, 0, `          circuitBreaker:
            consecutiveFailures: 2
            openDuration: 30s
            responseCode: 503
`), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	stable.setMode(mode500)
	for i := 0; i < 2; i++ {
		get(t, c, tr.web+"/", nil, nil)
	}
	before := stable.requests.Load()
	for i := 0; i < 5; i++ {
		res, _ := get(t, c, tr.web+"/", nil, nil)
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		if res.StatusCode != http.StatusServiceUnavailable || err != nil || ra < 1 || ra > 30 {
			t.Fatalf("primary outage: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
		}
	}
	if n := stable.requests.Load() - before; n != 0 {
		t.Errorf("the open primary received %d requests", n)
	}
	res, err := http.Get(tr.api + "/ping")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("Traefik unhealthy during the outage: %v", err)
	}
}

func TestTraefikBreakerSlowCanaryTrips(t *testing.T) {
	stable := newBackend(t, "stable")
	slow := http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		time.Sleep(150 * time.Millisecond)
		rw.Header().Set("X-Version", "canary")
		_, _ = io.WriteString(rw, "canary")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = slow.Serve(l) }()
	t.Cleanup(func() { slow.Close() })
	tr := startTraefik(t, canaryDynamic(stable.URL, "http://"+l.Addr().String(), 0, 100, `          circuitBreaker:
            consecutiveFailures: 2
            slowThreshold: 50ms
            openDuration: 1m
`), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	var bodies []string
	for i := 0; i < 4; i++ {
		_, body := get(t, c, tr.web+"/", nil, nil)
		bodies = append(bodies, body)
	}
	if fmt.Sprint(bodies) != "[canary canary stable stable]" {
		t.Fatalf("a slow canary did not trip after two slow responses: %v", bodies)
	}
}

func replaceOnce(s, old, new string) string { return strings.Replace(s, old, new, 1) }
