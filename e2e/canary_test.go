package e2e

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// shopDynamic is a dynamic configuration with one router, "shop", whose
// service is the stable backend and whose edgecanary middleware has the given
// versions block and extra settings (each indented by 10 spaces).
func shopDynamic(stable, versions, extra string) string {
	return fmt.Sprintf(`http:
  routers:
    shop:
      rule: PathPrefix(`+"`/`"+`)
      entryPoints: [web]
      service: shop-stable
      middlewares: [shop]
  services:
    shop-stable:
      loadBalancer:
        servers:
          - url: %q
  middlewares:
    shop:
      plugin:
        edgecanary:
%s          sticky:
            cookie:
              secret: e2e-secret
%s`, stable, versions, extra)
}

// canaryDynamic is shopDynamic with a stable (primary) and a proxied canary.
func canaryDynamic(stable, canary string, stableWeight, canaryWeight int, extra string) string {
	return shopDynamic(stable, fmt.Sprintf(`          versions:
            stable:
              weight: %d
            canary:
              weight: %d
              url: %q
`, stableWeight, canaryWeight, canary), extra)
}

// assignment is what a fresh client got: its cookie and its version.
type assignment struct {
	cookie  *http.Cookie
	version string
}

// freshClients sends n requests without cookies, concurrently, and returns
// each client's cookie and version.
func freshClients(t *testing.T, c *http.Client, url string, n int) []assignment {
	t.Helper()
	out := make([]assignment, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := c.Get(url)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			res.Body.Close()
			ck := cookieNamed(res, "edgecanary")
			if res.StatusCode != http.StatusOK || ck == nil {
				mu.Lock()
				firstErr = fmt.Errorf("fresh client %d: status %d, cookie %v", i, res.StatusCode, ck)
				mu.Unlock()
				return
			}
			out[i] = assignment{cookie: ck, version: res.Header.Get("X-Version")}
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return out
}

// versionOf sends one request with a cookie and returns the serving version.
func versionOf(t *testing.T, c *http.Client, url string, ck *http.Cookie) string {
	t.Helper()
	res, _ := get(t, c, url, ck, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if cookieNamed(res, "edgecanary") != nil {
		t.Fatalf("a valid cookie %q was replaced", ck.Value)
	}
	return res.Header.Get("X-Version")
}

// checkShare fails unless the canary share of a is within 4.5 binomial
// standard deviations of p.
func checkShare(t *testing.T, a []assignment, p float64) float64 {
	t.Helper()
	n := float64(len(a))
	var k float64
	for _, x := range a {
		if x.version == "canary" {
			k++
		}
	}
	tol := 4.5 * math.Sqrt(n*p*(1-p))
	if math.Abs(k-n*p) > tol {
		t.Fatalf("canary got %.0f of %.0f fresh clients, want %.0f ± %.0f", k, n, n*p, tol)
	}
	t.Logf("canary share %.4f over %.0f fresh clients (weight %.2f, tolerance ±%.0f clients)", k/n, n, p, tol)
	return k / n
}

// withMarker adds a router named marker that matches nothing, so that
// waitApplied can tell when Traefik has applied this configuration.
func withMarker(dynamic, marker string) string {
	return strings.Replace(dynamic, "  routers:\n", "  routers:\n    "+marker+":\n      rule: Host(`"+marker+".invalid`)\n      service: shop-stable\n", 1)
}

// waitApplied polls Traefik's API until its raw configuration contains marker.
func waitApplied(t *testing.T, tr *traefikProc, marker string) {
	t.Helper()
	tr.waitFor(30*time.Second, "dynamic configuration "+marker, func() bool {
		res, err := http.Get(tr.api + "/api/rawdata")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			if strings.Contains(sc.Text(), marker) {
				return true
			}
		}
		return false
	})
}

func TestTraefikCanarySplitStickinessAndWeightChanges(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL, 80, 20, ""), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	url := tr.web + "/"

	// 1. The split over 2,000 fresh clients matches the weight.
	first := freshClients(t, c, url, 2000)
	checkShare(t, first, 0.20)

	// 2. Returning clients stay on their version, every time.
	for i, a := range first[:300] {
		for j := 0; j < 3; j++ {
			if got := versionOf(t, c, url, a.cookie); got != a.version {
				t.Fatalf("client %d moved from %s to %s", i, a.version, got)
			}
		}
	}

	// 3. Raising the weight in the watched file moves no canary user back.
	tr.writeDynamic(withMarker(canaryDynamic(stable.URL, canary.URL, 50, 50, ""), "fifty"))
	waitApplied(t, tr, "fifty@file")
	moved := 0
	for i, a := range first {
		got := versionOf(t, c, url, a.cookie)
		if a.version == "canary" && got != "canary" {
			t.Fatalf("raising the weight moved canary client %d back to %s", i, got)
		}
		if a.version == "stable" && got == "canary" {
			moved++
		}
	}
	stableBefore := 0
	for _, a := range first {
		if a.version == "stable" {
			stableBefore++
		}
	}
	// From 20% to 50%, 30/80 of the stable clients move to the canary.
	wantMoved := float64(stableBefore) * 30 / 80
	if tol := 4.5 * math.Sqrt(wantMoved*(1-30.0/80)); math.Abs(float64(moved)-wantMoved) > tol {
		t.Errorf("%d of %d stable clients moved to the canary, want %.0f ± %.0f", moved, stableBefore, wantMoved, tol)
	}
	checkShare(t, freshClients(t, c, url, 2000), 0.50)

	// 4. 0% rolls everyone back, 100% promotes everyone, with the same cookies.
	for _, step := range []struct {
		marker string
		weight int
		want   string
	}{{"rollback", 0, "stable"}, {"promote", 100, "canary"}} {
		tr.writeDynamic(withMarker(canaryDynamic(stable.URL, canary.URL, 100-step.weight, step.weight, ""), step.marker))
		waitApplied(t, tr, step.marker+"@file")
		for _, a := range first[:500] {
			if got := versionOf(t, c, url, a.cookie); got != step.want {
				t.Fatalf("canary at %d%%: a client is on %s", step.weight, got)
			}
		}
		for _, a := range freshClients(t, c, url, 200) {
			if a.version != step.want {
				t.Fatalf("canary at %d%%: a fresh client is on %s", step.weight, a.version)
			}
		}
	}
}

func TestTraefikOverrideOnlyFromTrustedPeers(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	extra := `          override:
            header: X-Canary
            trustedIPs: ["127.0.0.1/32"]
`
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL, 100, 0, extra), traefikOptions{})
	tr.waitRouter("shop")
	url := tr.web + "/"

	trusted := client("127.0.0.1")
	res, _ := get(t, trusted, url, nil, map[string]string{"X-Canary": "canary"})
	if v := res.Header.Get("X-Version"); v != "canary" {
		t.Fatalf("trusted override served %q", v)
	}
	if seen := res.Header.Get("X-Seen-Canary"); seen != "" {
		t.Errorf("the override header reached the backend: %q", seen)
	}
	res, _ = get(t, trusted, url, nil, map[string]string{"X-Canary": "does-not-exist"})
	if v := res.Header.Get("X-Version"); v != "stable" || res.StatusCode != http.StatusOK {
		t.Fatalf("unknown override: %d %q", res.StatusCode, v)
	}

	untrusted := client("127.0.0.2")
	for _, h := range []map[string]string{
		{"X-Canary": "canary"},
		{"X-Canary": "always"},
		{"X-Canary": "canary", "Connection": "X-Canary"},
		{"X-Canary": "canary", "Connection": "keep-alive, X-Canary"},
	} {
		res, _ := get(t, untrusted, url, nil, h)
		if v := res.Header.Get("X-Version"); v != "stable" {
			t.Fatalf("untrusted override %v served %q", h, v)
		}
	}
	if n := stable.overSeen.Load() + canary.overSeen.Load(); n != 0 {
		t.Errorf("%d requests reached a backend with the override header", n)
	}
}

func TestTraefikInvalidCookiesAreReassigned(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	extra := `          override:
            trustedIPs: []
`
	dyn := strings.Replace(canaryDynamic(stable.URL, canary.URL, 50, 50, extra), "      plugin:", "      plugin:", 1)
	tr := startTraefik(t, dyn, traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	url := tr.web + "/"
	a := freshClients(t, c, url, 1)[0]

	tampered := &http.Cookie{Name: "edgecanary", Value: a.cookie.Value[:len(a.cookie.Value)-2] + "zz"}
	for _, ck := range []*http.Cookie{
		tampered,
		{Name: "edgecanary", Value: "1.AAAAAAAAAAAAAAAAAAAAAA"},
		{Name: "edgecanary", Value: strings.Repeat("9", 200)},
	} {
		res, _ := get(t, c, url, ck, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("cookie %q: status %d", ck.Value, res.StatusCode)
		}
		if nc := cookieNamed(res, "edgecanary"); nc == nil || nc.Value == ck.Value {
			t.Fatalf("cookie %q was not replaced", ck.Value)
		}
	}

	// A cookie whose version is removed from the config: its bucket is mapped by
	// the current weights, with a 200.
	var onCanary *http.Cookie
	for _, x := range freshClients(t, c, url, 50) {
		if x.version == "canary" {
			onCanary = x.cookie
			break
		}
	}
	if onCanary == nil {
		t.Fatal("no canary client among 50 at 50%")
	}
	tr.writeDynamic(shopDynamic(stable.URL, "          versions:\n            stable:\n              weight: 100\n", ""))
	tr.waitFor(30*time.Second, "canary removed", func() bool {
		res, _ := get(t, c, url, onCanary, nil)
		return res.Header.Get("X-Version") == "stable"
	})
	res, _ := get(t, c, url, onCanary, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("removed version: status %d", res.StatusCode)
	}
}

func TestTraefikStreamsThroughPlugin(t *testing.T) {
	for _, setup := range []struct{ desc, extra string }{
		{desc: "routing only"},
		// With the breaker and reporting on, requests are observed; streams
		// must still get the original writer. The sidecar here is down.
		{desc: "breaker and reporting", extra: `          circuitBreaker:
            consecutiveFailures: 1
          sidecar:
            address: http://127.0.0.1:1
`},
		// Everything on takes its own request path (pathLPBS).
		{desc: "everything on", extra: `          rateLimit:
            average: 1000
            burst: 1000
          circuitBreaker:
            consecutiveFailures: 1
          sidecar:
            address: http://127.0.0.1:1
`},
	} {
		t.Run(setup.desc, func(t *testing.T) { testStreams(t, setup.extra) })
	}
}

func testStreams(t *testing.T, extra string) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL, 50, 50, `          override:
            trustedIPs: ["127.0.0.1/32"]
`+extra), traefikOptions{})
	tr.waitRouter("shop")

	for _, version := range []string{"stable", "canary"} {
		t.Run(version+"/websocket", func(t *testing.T) {
			h := http.Header{"X-Canary": {version}}
			conn, res, err := websocket.DefaultDialer.Dial(strings.Replace(tr.web, "http", "ws", 1)+"/ws", h)
			if err != nil {
				status := 0
				if res != nil {
					status = res.StatusCode
				}
				t.Fatalf("dial: %v (status %d)", err, status)
			}
			defer conn.Close()
			for i := 0; i < 3; i++ {
				msg := fmt.Sprintf("ping-%d", i)
				if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, got, err := conn.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != version+":"+msg {
					t.Fatalf("echo %q, want %q", got, version+":"+msg)
				}
			}
		})
		t.Run(version+"/sse", func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tr.web+"/sse", nil)
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("X-Canary", version)
			start := time.Now()
			res, err := client("").Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			line, err := bufio.NewReader(res.Body).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			if line != "data: hello from "+version+"\n" {
				t.Fatalf("first event %q", line)
			}
			// The backend holds the stream open for 1.5 s after the first event:
			// a buffered stream would deliver it only then.
			if elapsed > time.Second {
				t.Fatalf("first event after %v: the stream was buffered", elapsed)
			}
		})
	}
}

func TestTraefikSurvivesReloadsWithFlatGoroutines(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	// Reporting on: the per-process sender must not multiply with reloads.
	sc := startSidecar(t)
	reporting := fmt.Sprintf("          sidecar:\n            address: %q\n            interval: 200ms\n", sc.ingest)
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL, 80, 20, reporting), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	url := tr.web + "/"
	cookies := freshClients(t, c, url, 100)

	// Warm up: a few reloads and requests so pools and caches exist.
	reload := func(i int) {
		w := 10 + i%40
		marker := fmt.Sprintf("reload-%d", i)
		tr.writeDynamic(withMarker(canaryDynamic(stable.URL, canary.URL, 100-w, w, reporting), marker))
		waitApplied(t, tr, marker+"@file")
		for _, a := range cookies[:20] {
			get(t, c, url, a.cookie, nil)
		}
	}
	for i := 0; i < 5; i++ {
		reload(i)
	}
	time.Sleep(time.Second) // let the last reload's old handlers go idle
	before := tr.goroutines()
	rssBefore := tr.rss()
	for i := 5; i < 55; i++ {
		reload(i)
	}
	// Goroutines that serve idle keep-alive connections come and go; allow
	// for that, not for one goroutine per reload.
	var after int
	tr.waitFor(20*time.Second, "goroutines back to the baseline", func() bool {
		after = tr.goroutines()
		return after <= before+10
	})
	t.Logf("50 reloads: goroutines %d -> %d, RSS %d MiB -> %d MiB", before, after, rssBefore>>20, tr.rss()>>20)
	res, _ := get(t, c, url, cookies[0].cookie, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("after 50 reloads: status %d", res.StatusCode)
	}
}
