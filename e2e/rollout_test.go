package e2e

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// rolloutYAML is a rollout block for canaryDynamic's extra.
func rolloutYAML(start time.Time, steps, interval string, threshold, minRequests int, extra string) string {
	if start.IsZero() {
		return ""
	}
	return fmt.Sprintf(`          rollout:
            start: %q
            stepWeights: %s
            interval: %s
            threshold: %d
            minRequests: %d
            metrics:
              - name: request-success-rate
                thresholdRange:
                  min: 99
              - name: request-duration
                thresholdRange:
                  max: 500
%s`, start.UTC().Format(time.RFC3339), steps, interval, threshold, minRequests, extra)
}

// failingBackend answers as version, with a 503 for every nth request
// (n 0: never).
func failingBackend(t *testing.T, version string, n int64) *httptest.Server {
	t.Helper()
	var count atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Version", version)
		if n > 0 && count.Add(1)%n == 0 {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = rw.Write([]byte(version))
	})}}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// nextSecond is the first whole second at least d from now: RFC 3339 in
// the config carries whole seconds.
func nextSecond(d time.Duration) time.Time {
	return time.Now().Add(d + time.Second).Truncate(time.Second)
}

// startRollout starts each Traefik on dynamic(time.Time{}) (the canary at
// its configured weight, no rollout), then, once all serve, loads
// dynamic(start) with start 3 s ahead, so a slow start-up on a loaded
// machine cannot eat into the schedule. It returns start.
func startRollouts(t *testing.T, n int, dynamic func(i int, start time.Time) string) ([]*traefikProc, time.Time) {
	t.Helper()
	var trs []*traefikProc
	for i := 0; i < n; i++ {
		tr := startTraefik(t, dynamic(i, time.Time{}), traefikOptions{})
		tr.waitRouter("shop")
		trs = append(trs, tr)
	}
	start := nextSecond(3 * time.Second)
	for i, tr := range trs {
		tr.writeDynamic(dynamic(i, start))
	}
	for _, tr := range trs {
		tr.waitFor(10*time.Second, "the rollout to load", func() bool {
			return strings.Contains(tr.logs.String(), "rollout of canary")
		})
	}
	if time.Until(start) < 500*time.Millisecond {
		t.Fatalf("the rollout loaded too late: %v before its start", time.Until(start))
	}
	return trs, start
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

func canaryShare(as []assignment) float64 {
	n := 0
	for _, a := range as {
		if a.version == "canary" {
			n++
		}
	}
	return float64(n) / float64(len(as))
}

// TestRolloutRampsInTraefik: a 4-step schedule of 3 s steps in the real
// Traefik. Fresh users split by each step's weight; no user of the canary
// moves back during the ramp; at the end everyone is on the canary, and the
// sidecar shows the rollout complete.
func TestRolloutRampsInTraefik(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t)
	steps := []int{10, 30, 60, 100}
	const interval = 3 * time.Second
	side := fmt.Sprintf("          sidecar:\n            address: %q\n            interval: 200ms\n", sc.ingest)
	trs, start := startRollouts(t, 1, func(_ int, start time.Time) string {
		return canaryDynamic(stable.URL, canary.URL, 90, 10, side+rolloutYAML(start, "[10, 30, 60, 100]", "3s", 2, 100000, ""))
	})
	tr := trs[0]
	c := client("127.0.0.1")
	if share := canaryShare(freshClients(t, c, tr.web+"/", 200)); share != 0 {
		t.Fatalf("before the start: %.2f of fresh users on the canary, want 0", share)
	}
	var onCanary []assignment
	const n = 400
	for k, w := range steps {
		sleepUntil(start.Add(time.Duration(k)*interval + 300*time.Millisecond))
		as := freshClients(t, c, tr.web+"/", n)
		// Binomial: 4 standard deviations of n draws, at least 2 points.
		tol := math.Max(0.02, 4*math.Sqrt(float64(w)/100*(1-float64(w)/100)/n))
		share := canaryShare(as)
		t.Logf("step %d (%d%%): %.3f of %d fresh users on the canary", k+1, w, share, n)
		if math.Abs(share-float64(w)/100) > tol {
			t.Errorf("step %d: %.3f of fresh users on the canary, want %d%% ± %.3f", k+1, share, w, tol)
		}
		for i, a := range onCanary {
			if i%4 == 0 { // a sample, within the step
				if v := versionOf(t, c, tr.web+"/", a.cookie); v != "canary" {
					t.Fatalf("step %d: a canary user moved back to %s", k+1, v)
				}
			}
		}
		for _, a := range as {
			if a.version == "canary" {
				onCanary = append(onCanary, a)
			}
		}
	}
	sleepUntil(start.Add(time.Duration(len(steps))*interval + 500*time.Millisecond))
	if share := canaryShare(freshClients(t, c, tr.web+"/", 200)); share != 1 {
		t.Errorf("after the last step: %.3f of fresh users on the canary, want 1", share)
	}
	for _, a := range onCanary {
		if v := versionOf(t, c, tr.web+"/", a.cookie); v != "canary" {
			t.Fatalf("after the ramp: a canary user is on %s", v)
		}
	}
	waitFor(t, 5*time.Second, "the sidecar to show the rollout complete", func() bool {
		mfs := sc.scrape()
		return gaugeOf(mfs, "edgecanary_rollout_state", "shop@file", "canary") == 2 &&
			gaugeOf(mfs, "edgecanary_rollout_step", "shop@file", "canary") == 4 &&
			gaugeOf(mfs, "edgecanary_version_weight", "shop@file", "canary") == 1
	})
	logs := tr.logs.String()
	for _, want := range []string{"rollout: advance canary weight 30 (step 2 of 4)", "rollout complete: canary weight 100", "WARNING: rollout without rollout.redis"} {
		if !strings.Contains(logs, want) {
			t.Errorf("Traefik's log lacks %q", want)
		}
	}
}

// gaugeOf is the value of a metric with the given middleware and version
// labels, or -1.
func gaugeOf(mfs map[string]*dto.MetricFamily, name, middleware, version string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	for _, m := range mf.GetMetric() {
		l := labels(m)
		if l["middleware"] == middleware && l["version"] == version {
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// checksOf is edgecanary_rollout_checks_total by result.
func checksOf(mfs map[string]*dto.MetricFamily, middleware string) map[string]float64 {
	out := map[string]float64{}
	if mf := mfs["edgecanary_rollout_checks_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if l := labels(m); l["middleware"] == middleware {
				out[l["result"]] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// traffic sends requests from fresh and returning users to url until stop
// is closed, and counts the 5xx they get after the mark is set.
type traffic struct {
	mu         sync.Mutex
	users      []assignment
	fivexx     atomic.Int64
	fivexxLate atomic.Int64 // 5xx once late is set
	late       atomic.Bool
	requests   atomic.Int64
}

func (tf *traffic) run(t *testing.T, c *http.Client, url string, stop chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		var ck *http.Cookie
		tf.mu.Lock()
		if i%3 != 0 && len(tf.users) > 0 {
			ck = tf.users[i%len(tf.users)].cookie
		}
		tf.mu.Unlock()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if ck != nil {
			req.AddCookie(ck)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		res.Body.Close()
		tf.requests.Add(1)
		if res.StatusCode >= 500 {
			tf.fivexx.Add(1)
			if tf.late.Load() {
				tf.fivexxLate.Add(1)
			}
		}
		if ck == nil {
			if nc := cookieNamed(res, "edgecanary"); nc != nil {
				tf.mu.Lock()
				if len(tf.users) < 500 {
					tf.users = append(tf.users, assignment{cookie: nc, version: res.Header.Get("X-Version")})
				}
				tf.mu.Unlock()
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// failingRollout is a rollout (steps of 3 s from 30%, threshold 2,
// minRequests 20) of a canary answering 10% 5xx, in one Traefik reporting to
// a sidecar started with sidecarArgs, driven by workers clients until
// Traefik logs the rollback. stop ends the traffic.
type failingRollout struct {
	tr    *traefikProc
	sc    *sidecarProc
	c     *http.Client
	tf    *traffic
	start time.Time
	stop  func()
}

func startFailingRollout(t *testing.T, workers int, sidecarArgs ...string) *failingRollout {
	t.Helper()
	stable := newBackend(t, "stable")
	canary := failingBackend(t, "canary", 10)
	f := &failingRollout{sc: startSidecar(t, sidecarArgs...), c: client("127.0.0.1"), tf: &traffic{}}
	side := fmt.Sprintf("          sidecar:\n            address: %q\n            interval: 200ms\n", f.sc.ingest)
	trs, start := startRollouts(t, 1, func(_ int, start time.Time) string {
		return canaryDynamic(stable.URL, canary.URL, 90, 10, side+rolloutYAML(start, "[30, 60, 100]", "3s", 2, 20, ""))
	})
	f.tr, f.start = trs[0], start
	sleepUntil(start)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go f.tf.run(t, f.c, f.tr.web+"/", stop, &wg)
	}
	f.stop = func() { close(stop); wg.Wait() }
	f.tr.waitFor(15*time.Second, "the rollback", func() bool {
		return strings.Contains(f.tr.logs.String(), "rolled back after 2 failed checks")
	})
	return f
}

// TestRolloutRollsBackInTraefik: a canary answering 10% 5xx is rolled back
// after threshold (2) failed checks. Its users return to stable with the
// same cookies, no 5xx follows the rollback, and the sidecar shows it.
func TestRolloutRollsBackInTraefik(t *testing.T) {
	f := startFailingRollout(t, 4)
	tr, sc, c, tf, start := f.tr, f.sc, f.c, f.tf, f.start
	rolledBackAt := time.Since(start)
	tf.late.Store(true)
	time.Sleep(time.Second)
	f.stop()
	t.Logf("rolled back %v after the start; %d requests, %d 5xx (10%% of the canary's)", rolledBackAt, tf.requests.Load(), tf.fivexx.Load())
	if rolledBackAt > 7*time.Second {
		t.Errorf("rolled back %v after the start, want at the end of the second window (6 s)", rolledBackAt)
	}
	if n := tf.fivexxLate.Load(); n != 0 {
		t.Errorf("%d 5xx after the rollback", n)
	}
	users := 0
	for _, a := range tf.users {
		if a.version != "canary" {
			continue
		}
		users++
		if v := versionOf(t, c, tr.web+"/", a.cookie); v != "stable" { // versionOf fails on a new cookie
			t.Fatalf("after the rollback a canary user is on %s", v)
		}
	}
	if users < 20 {
		t.Errorf("only %d users had been on the canary", users)
	}
	if share := canaryShare(freshClients(t, c, tr.web+"/", 200)); share != 0 {
		t.Errorf("after the rollback %.2f of fresh users on the canary", share)
	}
	waitFor(t, 5*time.Second, "the sidecar to show the rollback", func() bool {
		mfs := sc.scrape()
		ch := checksOf(mfs, "shop@file")
		return gaugeOf(mfs, "edgecanary_rollout_state", "shop@file", "canary") == 3 &&
			gaugeOf(mfs, "edgecanary_version_weight", "shop@file", "canary") == 0 && ch["fail"] == 2
	})
	if !regexp.MustCompile(`rollout: halt: request-success-rate (89|90|91)(\.\d+)?% < 99%`).MatchString(tr.logs.String()) {
		t.Errorf("Traefik's log lacks the failed check")
	}
}

// TestRolloutThreeReplicasShareRollback: three replicas with one Redis;
// only the first one's canary fails. All three roll back within one
// interval, and a replica restarted afterwards stays rolled back.
func TestRolloutThreeReplicasShareRollback(t *testing.T) {
	rd := startRedis(t)
	stable := newBackend(t, "stable")
	bad, good := failingBackend(t, "canary", 2), failingBackend(t, "canary", 0)
	const interval = 3 * time.Second
	redis := fmt.Sprintf("            redis:\n              endpoints: [%q]\n              readTimeout: 500ms\n", rd.addr)
	dynamic := func(i int, start time.Time) string {
		u := good.URL
		if i == 0 {
			u = bad.URL
		}
		return canaryDynamic(stable.URL, u, 90, 10, rolloutYAML(start, "[50, 100]", "3s", 1, 20, redis))
	}
	trs, start := startRollouts(t, 3, dynamic)
	sleepUntil(start)
	c := client("127.0.0.1")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tfs := make([]*traffic, 3)
	for i, tr := range trs {
		tfs[i] = &traffic{}
		wg.Add(1)
		go tfs[i].run(t, c, tr.web+"/", stop, &wg)
	}
	trs[0].waitFor(2*interval, "replica 1's rollback", func() bool {
		return strings.Contains(trs[0].logs.String(), "rolled back after 1 failed checks")
	})
	first := time.Now()
	for i, tr := range trs[1:] {
		tr.waitFor(interval, fmt.Sprintf("replica %d to roll back", i+2), func() bool {
			return strings.Contains(tr.logs.String(), "rolled back by another replica")
		})
	}
	t.Logf("replicas 2 and 3 rolled back %v after replica 1", time.Since(first))
	close(stop)
	wg.Wait()
	for i, tr := range trs {
		if share := canaryShare(freshClients(t, c, tr.web+"/", 100)); share != 0 {
			t.Errorf("replica %d: %.2f of fresh users on the canary after the rollback", i+1, share)
		}
	}
	// A replica restarted after the rollback stays rolled back, although the
	// schedule says 100%.
	trs[1].stop()
	restarted := startTraefik(t, dynamic(1, start), traefikOptions{})
	restarted.waitRouter("shop")
	if share := canaryShare(freshClients(t, c, restarted.web+"/", 200)); share != 0 {
		t.Errorf("restarted replica: %.2f of fresh users on the canary, want 0", share)
	}
	if !strings.Contains(restarted.logs.String(), "rolled back by another replica") {
		t.Errorf("the restarted replica did not log the rollback it read")
	}
}
