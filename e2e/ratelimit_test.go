package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// route is a router matched by Host, served by backend, with an edgecanary
// middleware whose plugin block is pluginYAML (indented by 10 spaces).
type route struct {
	host       string
	backend    string
	pluginYAML string
}

// routesDynamic builds a dynamic configuration with one router, service and
// middleware per route.
func routesDynamic(routes []route) string {
	var b strings.Builder
	b.WriteString("http:\n  routers:\n")
	for i, r := range routes {
		fmt.Fprintf(&b, "    r%d:\n      rule: Host(`%s`)\n      entryPoints: [web]\n      service: s%d\n      middlewares: [m%d]\n", i, r.host, i, i)
	}
	b.WriteString("  services:\n")
	for i, r := range routes {
		fmt.Fprintf(&b, "    s%d:\n      loadBalancer:\n        servers:\n          - url: %q\n", i, r.backend)
	}
	b.WriteString("  middlewares:\n")
	for i, r := range routes {
		fmt.Fprintf(&b, "    m%d:\n      plugin:\n        edgecanary:\n          versions:\n            stable:\n              weight: 100\n%s", i, r.pluginYAML)
	}
	return b.String()
}

// getHost sends a GET for host from the given client.
func getHost(t testing.TB, c *http.Client, web, host string, headers map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, web+"/", nil)
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", host, err)
	}
	res.Body.Close()
	return res
}

// TestTraefikRateLimitLoadTable replays Traefik's own TestInMemoryRateLimit
// table (pkg/middlewares/ratelimiter/rate_limiter_test.go, v3.6.12) over HTTP
// through the plugin in the real Traefik, with Traefik's bounds.
func TestTraefikRateLimitLoadTable(t *testing.T) {
	testCases := []struct {
		desc         string
		average      int64
		period       time.Duration
		configBurst  int64
		loadDuration time.Duration
		incomingLoad int // in reqs/s
		burst        int
	}{
		{desc: "Average is respected", average: 100, configBurst: 1, loadDuration: 2 * time.Second, incomingLoad: 400},
		{desc: "burst allowed, no bursty traffic", average: 100, configBurst: 100, loadDuration: 2 * time.Second, incomingLoad: 200},
		{desc: "burst allowed, initial burst, under capacity", average: 100, configBurst: 100, loadDuration: 2 * time.Second, incomingLoad: 200, burst: 50},
		{desc: "burst allowed, initial burst, over capacity", average: 100, configBurst: 100, loadDuration: 2 * time.Second, incomingLoad: 200, burst: 150},
		{desc: "burst over average, initial burst, over capacity", average: 100, configBurst: 200, loadDuration: 2 * time.Second, incomingLoad: 200, burst: 300},
		{desc: "lower than 1/s", average: 5, period: 10 * time.Second, loadDuration: 2 * time.Second, incomingLoad: 100},
		{desc: "lower than 1/s, longer", average: 5, period: 10 * time.Second, loadDuration: time.Minute, incomingLoad: 100},
		{desc: "lower than 1/s, longer, harsher", average: 1, period: time.Minute, loadDuration: time.Minute, incomingLoad: 100},
		{desc: "period below 1 second", average: 50, period: 500 * time.Millisecond, loadDuration: 2 * time.Second, incomingLoad: 300},
	}
	backendSrv := newBackend(t, "stable")
	var routes []route
	for i, test := range testCases {
		period := test.period
		if period == 0 {
			period = time.Second
		}
		routes = append(routes, route{
			host:    fmt.Sprintf("case%d.test", i),
			backend: backendSrv.URL,
			pluginYAML: fmt.Sprintf("          rateLimit:\n            average: %d\n            period: %s\n            burst: %d\n",
				test.average, period, test.configBurst),
		})
	}
	tr := startTraefik(t, routesDynamic(routes), traefikOptions{})
	for i := range routes {
		tr.waitRouter(fmt.Sprintf("r%d", i))
	}

	for i, test := range testCases {
		host := routes[i].host
		t.Run(test.desc, func(t *testing.T) {
			if test.loadDuration >= time.Minute && testing.Short() {
				t.Skip("skipping test in short mode.")
			}
			t.Parallel()
			c := client("")
			reqCount, dropped := 0, 0
			loadPeriod := time.Duration(1e9 / test.incomingLoad)
			start := time.Now()
			end := start.Add(test.loadDuration)
			ticker := time.NewTicker(loadPeriod)
			defer ticker.Stop()
			for !time.Now().After(end) {
				res := getHost(t, c, tr.web, host, nil)
				if res.StatusCode == http.StatusOK {
					reqCount++
				} else if res.StatusCode == http.StatusTooManyRequests {
					dropped++
				} else {
					t.Fatalf("status %d", res.StatusCode)
				}
				if test.burst > 0 && reqCount < test.burst {
					continue
				}
				<-ticker.C
			}
			burst := test.configBurst
			if burst < 1 {
				burst = 1
			}
			period := test.period
			if period == 0 {
				period = time.Second
			}
			rate := float64(test.average) / float64(period)
			wantCount := int(int64(rate*float64(test.loadDuration)) + burst)
			maxCount := wantCount * 102 / 100
			minCount := wantCount * 95 / 100
			if os.Getenv("CI") != "" {
				minCount = wantCount * 60 / 100
			}
			t.Logf("%d admitted, %d rejected in %v (want %d, bounds %d..%d)", reqCount, dropped, time.Since(start).Round(time.Millisecond), wantCount, minCount, maxCount)
			if reqCount < minCount {
				t.Fatalf("rate was slower than expected: %d requests (wanted > %d) (dropped %d)", reqCount, minCount, dropped)
			}
			if reqCount > maxCount {
				t.Fatalf("rate was faster than expected: %d requests (wanted < %d) (dropped %d)", reqCount, maxCount, dropped)
			}
		})
	}
}

func TestTraefikRateLimitBurstHeadersAndKeys(t *testing.T) {
	backendSrv := newBackend(t, "stable")
	limit := "          rateLimit:\n            average: 1\n            period: 1m\n            burst: 5\n"
	routes := []route{
		{host: "peer.test", backend: backendSrv.URL, pluginYAML: limit},
		{host: "depth.test", backend: backendSrv.URL, pluginYAML: limit + "            sourceCriterion:\n              ipStrategy:\n                depth: 1\n"},
		{host: "dry.test", backend: backendSrv.URL, pluginYAML: limit + "            dryRun: true\n"},
	}
	// X-Forwarded-For is kept only from 127.0.0.1: Traefik's entry point strips
	// it from every other peer before any middleware runs.
	tr := startTraefik(t, routesDynamic(routes), traefikOptions{forwardedTrustedIPs: []string{"127.0.0.1/32"}})
	for i := range routes {
		tr.waitRouter(fmt.Sprintf("r%d", i))
	}
	c1, c2 := client("127.0.0.1"), client("127.0.0.2")

	t.Run("burst then 429 with headers", func(t *testing.T) {
		var codes []int
		for i := 0; i < 8; i++ {
			res := getHost(t, c1, tr.web, "peer.test", nil)
			codes = append(codes, res.StatusCode)
			if res.Header.Get("RateLimit-Policy") != `"m0@file";q=1;w=60` {
				t.Fatalf("RateLimit-Policy %q", res.Header.Get("RateLimit-Policy"))
			}
			if res.StatusCode == http.StatusOK {
				want := fmt.Sprintf(`"m0@file";r=%d;t=`, 4-i)
				if !strings.HasPrefix(res.Header.Get("RateLimit"), want) {
					t.Errorf("request %d: RateLimit %q, want prefix %q", i, res.Header.Get("RateLimit"), want)
				}
			} else {
				ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
				if err != nil || ra < 1 || ra > 60 {
					t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
				}
				if res.Header.Get("X-Retry-In") == "" {
					t.Error("no X-Retry-In")
				}
			}
		}
		if fmt.Sprint(codes) != "[200 200 200 200 200 429 429 429]" {
			t.Fatalf("codes %v, want exactly 5 (the burst) 200s then 429s", codes)
		}
		if n := backendSrv.requests.Load(); n != 5 {
			t.Errorf("backend saw %d requests, want 5", n)
		}
	})

	t.Run("second client unaffected", func(t *testing.T) {
		if res := getHost(t, c2, tr.web, "peer.test", nil); res.StatusCode != http.StatusOK {
			t.Fatalf("second client: %d", res.StatusCode)
		}
	})

	t.Run("rotating X-Forwarded-For at depth 0 is still limited", func(t *testing.T) {
		ok := 0
		for i := 0; i < 20; i++ {
			res := getHost(t, c2, tr.web, "peer.test", map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)})
			if res.StatusCode == http.StatusOK {
				ok++
			}
		}
		if ok != 4 { // the second client had used one of its five tokens
			t.Errorf("rotating XFF got %d 200s, want 4", ok)
		}
	})

	t.Run("depth 1 from a trusted proxy keys by X-Forwarded-For", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			for j := 0; j < 5; j++ {
				res := getHost(t, c1, tr.web, "depth.test", map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i)})
				if res.StatusCode != http.StatusOK {
					t.Fatalf("client %d request %d: %d", i, j, res.StatusCode)
				}
			}
			if res := getHost(t, c1, tr.web, "depth.test", map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i)}); res.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("client %d past its burst: %d", i, res.StatusCode)
			}
		}
	})

	t.Run("depth 1 from an untrusted peer cannot rotate its key", func(t *testing.T) {
		ok := 0
		for i := 0; i < 20; i++ {
			res := getHost(t, c2, tr.web, "depth.test", map[string]string{"X-Forwarded-For": fmt.Sprintf("192.0.2.%d", i)})
			if res.StatusCode == http.StatusOK {
				ok++
			}
		}
		if ok != 5 {
			t.Errorf("untrusted peer rotating XFF got %d 200s, want the burst 5", ok)
		}
	})

	t.Run("dryRun lets everything through", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			if res := getHost(t, c1, tr.web, "dry.test", nil); res.StatusCode != http.StatusOK {
				t.Fatalf("dry run request %d: %d", i, res.StatusCode)
			}
		}
	})

	t.Run("concurrent burst admits exactly burst", func(t *testing.T) {
		c3 := client("127.0.0.3")
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					res := getHost(t, c3, tr.web, "peer.test", nil)
					mu.Lock()
					codes[res.StatusCode]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if codes[http.StatusOK] != 5 || codes[http.StatusTooManyRequests] != 15 {
			t.Errorf("codes %v, want 5 OK and 15 rejected", codes)
		}
	})
}
