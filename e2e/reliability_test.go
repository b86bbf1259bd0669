package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// loadResult is what a load generator saw.
type loadResult struct {
	mu        sync.Mutex
	byStatus  map[int]int
	errors    int
	latencies []time.Duration
}

func (r *loadResult) add(status int, err error, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byStatus == nil {
		r.byStatus = map[int]int{}
	}
	if err != nil {
		r.errors++
		return
	}
	r.byStatus[status]++
	r.latencies = append(r.latencies, d)
}

func (r *loadResult) percentile(p float64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.latencies) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.latencies...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

func (r *loadResult) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.errors
	for _, c := range r.byStatus {
		n += c
	}
	return n
}

// load runs workers returning clients (each with its cookie) until stop closes.
func load(t *testing.T, url string, cookies []*http.Cookie, workers int, stop <-chan struct{}, res *loadResult, pause time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := client("")
			defer c.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if len(cookies) > 0 {
					req.AddCookie(cookies[(w+i*workers)%len(cookies)])
				}
				start := time.Now()
				r, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, r.Body)
					r.Body.Close()
					res.add(r.StatusCode, nil, time.Since(start))
				} else {
					res.add(0, err, 0)
				}
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}(w)
	}
	return &wg
}

// TestTraefikReloadsUnderLoad rewrites the dynamic configuration every second
// for a minute (15 s in -short) with the weights changing, while load runs.
func TestTraefikReloadsUnderLoad(t *testing.T) {
	duration := time.Minute
	if testing.Short() {
		duration = 15 * time.Second
	}
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL, 80, 20, ""), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	users := freshClients(t, c, tr.web+"/", 200)
	cookies := make([]*http.Cookie, len(users))
	for i, u := range users {
		cookies[i] = u.cookie
	}
	c.CloseIdleConnections()
	// Warm up at the same concurrency, so connection pools are as full
	// before as after: what remains is what the reloads leave behind.
	warm := make(chan struct{})
	wwg := load(t, tr.web+"/", cookies, 8, warm, &loadResult{}, 0)
	time.Sleep(3 * time.Second)
	close(warm)
	wwg.Wait()
	time.Sleep(time.Second)
	goroutinesBefore, rssBefore := tr.goroutines(), tr.rss()

	stop := make(chan struct{})
	res := &loadResult{}
	wg := load(t, tr.web+"/", cookies, 8, stop, res, 0)
	// The canary only ever grows here, so every canary user must stay there.
	weights := []int{20, 25, 30, 35, 40, 45, 50, 55, 60}
	reloads := 0
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		w := weights[reloads%len(weights)]
		if reloads >= len(weights) {
			w = weights[len(weights)-1]
		}
		tr.writeDynamic(withMarker(canaryDynamic(stable.URL, canary.URL, 100-w, w, ""), fmt.Sprintf("reload-%d", reloads)))
		reloads++
		time.Sleep(time.Second)
	}
	waitApplied(t, tr, fmt.Sprintf("reload-%d@file", reloads-1))
	close(stop)
	wg.Wait()

	moved := 0
	for _, u := range users {
		if u.version == "canary" && versionOf(t, c, tr.web+"/", u.cookie) != "canary" {
			moved++
		}
	}
	c.CloseIdleConnections()
	var after int
	tr.waitFor(20*time.Second, "goroutines back to the baseline", func() bool {
		after = tr.goroutines()
		return after <= goroutinesBefore+20
	})
	rssAfter := tr.rss()
	t.Logf("%d reloads under load: %d requests, statuses %v, %d transport errors; p99 %v; goroutines %d -> %d; RSS %d -> %d MiB",
		reloads, res.total(), res.byStatus, res.errors, res.percentile(0.99), goroutinesBefore, after, rssBefore>>20, rssAfter>>20)
	if res.errors > 0 || len(res.byStatus) != 1 || res.byStatus[http.StatusOK] == 0 {
		t.Errorf("requests failed during reloads: statuses %v, %d errors", res.byStatus, res.errors)
	}
	if moved > 0 {
		t.Errorf("%d canary users left the canary while its weight only grew", moved)
	}
	if rssAfter > rssBefore+64<<20 {
		t.Errorf("RSS grew from %d to %d MiB", rssBefore>>20, rssAfter>>20)
	}
}

// TestTraefikSidecarFaultsUnderLoad kills, pauses (SIGSTOP) and restarts the
// sidecar while load runs: no request fails or slows beyond noise, and the
// counters account for every request afterwards.
func TestTraefikSidecarFaultsUnderLoad(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL, sc.ingest, ""), traefikOptions{})
	tr.waitRouter("shop")

	phase := func(name string, d time.Duration) *loadResult {
		stop := make(chan struct{})
		res := &loadResult{}
		wg := load(t, tr.web+"/", nil, 4, stop, res, 2*time.Millisecond)
		time.Sleep(d)
		close(stop)
		wg.Wait()
		t.Logf("%-28s %5d requests, statuses %v, errors %d, p50 %v, p99 %v", name, res.total(), res.byStatus, res.errors, res.percentile(0.5), res.percentile(0.99))
		return res
	}
	var all []*loadResult
	base := phase("sidecar up (baseline)", 3*time.Second)
	all = append(all, base)

	sc.cmd.Process.Signal(syscall.SIGSTOP)
	paused := phase("sidecar paused (SIGSTOP)", 5*time.Second)
	sc.cmd.Process.Signal(syscall.SIGCONT)
	all = append(all, paused)

	sc.stop(syscall.SIGKILL)
	killed := phase("sidecar killed", 3*time.Second)
	all = append(all, killed)
	sc.start()
	all = append(all, phase("sidecar restarted", 3*time.Second))

	sent := 0
	for _, r := range all {
		if r.errors > 0 || len(r.byStatus) != 1 || r.byStatus[http.StatusOK] == 0 {
			t.Errorf("requests failed: %v, %d errors", r.byStatus, r.errors)
		}
		sent += r.total()
	}
	// Latency: the request path does no I/O, so a stuck sidecar adds nothing
	// beyond noise (allow 3x the baseline p99 and at least 20 ms of noise).
	limit := 3 * base.percentile(0.99)
	if limit < 20*time.Millisecond {
		limit = 20 * time.Millisecond
	}
	for _, r := range []*loadResult{paused, killed} {
		if p := r.percentile(0.99); p > limit {
			t.Errorf("p99 %v under a sidecar fault, baseline %v", p, base.percentile(0.99))
		}
	}
	var got float64
	waitFor(t, 30*time.Second, "the counters to account for every request", func() bool {
		got = 0
		for _, v := range requestCounts(sc.scrape(), "shop@file") {
			got += v
		}
		return int(got) == sent
	})
	t.Logf("%d requests sent across a paused, killed and restarted sidecar; %d counted; none lost", sent, int(got))
}

// TestTraefikSpoofedAddressCannotDrainVictim: at depth 0 a client that puts
// its victim's address in X-Forwarded-For spends only its own bucket.
func TestTraefikSpoofedAddressCannotDrainVictim(t *testing.T) {
	backendSrv := newBackend(t, "stable")
	tr := startTraefik(t, routesDynamic([]route{{host: "shop.test", backend: backendSrv.URL,
		pluginYAML: "          rateLimit:\n            average: 1\n            period: 1m\n            burst: 3\n"}}),
		traefikOptions{forwardedTrustedIPs: []string{"127.0.0.1/32", "127.0.0.2/32"}})
	tr.waitRouter("r0")
	attacker, victim := client("127.0.0.2"), client("127.0.0.1")
	for i := 0; i < 20; i++ {
		getHost(t, attacker, tr.web, "shop.test", map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1"})
	}
	for i := 0; i < 3; i++ {
		if res := getHost(t, victim, tr.web, "shop.test", nil); res.StatusCode != http.StatusOK {
			t.Fatalf("the victim's request %d was limited (%d): the attacker drained its bucket", i, res.StatusCode)
		}
	}
}

// TestSoak runs mixed traffic (canary users, a rate-limited user, a canary
// whose breaker trips and recovers, reloads) and reports what was served, the
// errors by cause and Traefik's memory. `make soak` runs ten minutes
// (EDGECANARY_SOAK); the suite runs 20 seconds.
func TestSoak(t *testing.T) {
	duration := 20 * time.Second
	if d, err := time.ParseDuration(os.Getenv("EDGECANARY_SOAK")); err == nil {
		duration = d
	}
	if testing.Short() {
		duration = 10 * time.Second
	}
	stable := newBackend(t, "stable")
	canary := newSwitchBackend(t, "canary")
	sc := startSidecar(t)
	extra := fmt.Sprintf(`          rateLimit:
            average: 50
            burst: 20
            sourceCriterion:
              requestHeaderName: X-User
          circuitBreaker:
            consecutiveFailures: 5
            openDuration: 2s
          sidecar:
            address: %q
            interval: 500ms
`, sc.ingest)
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL(), 70, 30, extra), traefikOptions{})
	tr.waitRouter("shop")
	rssStart := tr.rss()
	goroutinesStart := tr.goroutines()
	// Connection pools (clients, the plugin's transport, Traefik's) hold a
	// few goroutines per idle connection: allow for 6 workers' worth.
	poolAllowance := 40

	var served, limited, fallback, tripErrors, otherErrors, transport atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := client("")
			defer c.CloseIdleConnections()
			// Each user keeps its own sticky cookie: about 100 users, so
			// some are always canary users (with one cookie per worker, all
			// six could land on stable, and the breaker would go untested).
			cookies := map[string]*http.Cookie{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("user-%d-%d", w, i%20)
				if w == 0 {
					user = "greedy"
				}
				req, _ := http.NewRequest(http.MethodGet, tr.web+"/", nil)
				req.Header.Set("X-User", user)
				if ck := cookies[user]; ck != nil {
					req.AddCookie(ck)
				}
				res, err := c.Do(req)
				if err != nil {
					transport.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if nc := cookieNamed(res, "edgecanary"); nc != nil {
					cookies[user] = nc
				}
				switch {
				case res.StatusCode == http.StatusTooManyRequests:
					limited.Add(1)
				case res.StatusCode == http.StatusOK:
					served.Add(1)
					if res.Header.Get("Edgecanary-Fallback") != "" {
						fallback.Add(1)
					}
				case res.StatusCode == http.StatusInternalServerError && res.Header.Get("X-Version") == "canary":
					tripErrors.Add(1) // a failing canary's answers before its breaker trips
				default:
					otherErrors.Add(1)
				}
				if w != 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}(w)
	}
	deadline := time.Now().Add(duration)
	for i := 0; time.Now().Before(deadline); i++ {
		time.Sleep(time.Second)
		canary.setModeQuiet(i%10 >= 6) // the canary fails 4 s out of 10
		if i%5 == 0 {
			w := 20 + i%3*10
			tr.writeDynamic(canaryDynamic(stable.URL, canary.URL(), 100-w, w, extra))
		}
	}
	close(stop)
	wg.Wait()
	canary.setModeQuiet(false)
	var goroutinesEnd int
	tr.waitFor(20*time.Second, "goroutines back to the baseline", func() bool {
		goroutinesEnd = tr.goroutines()
		return goroutinesEnd <= goroutinesStart+poolAllowance
	})
	rssEnd := tr.rss()
	t.Logf("soak of %v: %d served (%d by fallback), %d rate-limited, %d canary 500s before a trip, %d other errors, %d transport errors; RSS %d -> %d MiB; goroutines %d -> %d",
		duration, served.Load(), fallback.Load(), limited.Load(), tripErrors.Load(), otherErrors.Load(), transport.Load(), rssStart>>20, rssEnd>>20, goroutinesStart, goroutinesEnd)
	if otherErrors.Load() > 0 || transport.Load() > 0 {
		t.Errorf("unexpected errors: %d other, %d transport", otherErrors.Load(), transport.Load())
	}
	if fallback.Load() == 0 || limited.Load() == 0 {
		t.Errorf("the soak did not exercise the breaker (%d fallbacks) and the limiter (%d)", fallback.Load(), limited.Load())
	}
	if rssEnd > rssStart+128<<20 {
		t.Errorf("RSS grew from %d to %d MiB", rssStart>>20, rssEnd>>20)
	}
}
