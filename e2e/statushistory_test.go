package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// TestStatusPageHistoryInChromium drives traffic through the real Traefik,
// fails the canary with 500s for a while and heals it, with the real sidecar
// sampling its history every second (--status.step=1s). Headless Chromium
// then loads the status page: the test reads the canary's error-ratio line
// back from the drawn SVG (its samples are in data attributes) and finds the
// failure window there, sees the breaker's open band and the fallbacks, finds
// no console message, and saves a screenshot in the test's artifact
// directory (go test -artifacts keeps it; EDGECANARY_SCREENSHOT=path copies it,
// which is how docs/status-page.png is made).
func TestStatusPageHistoryInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: apt-get install --no-install-recommends chromium")
	}
	stable, canary := newBackend(t, "stable"), newSwitchBackend(t, "canary")
	sc := startSidecar(t, "--status.step=1s")
	tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL(), sc.ingest, `          circuitBreaker:
            consecutiveFailures: 3
            openDuration: 2s
`), traefikOptions{})
	tr.waitRouter("shop")

	// New users (no cookie), half of them on the canary.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(done)
		c := client("")
		for ctx.Err() == nil {
			if res, err := c.Get(tr.web + "/"); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				sent.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { cancel(); <-done }()

	time.Sleep(5 * time.Second) // a healthy baseline
	failStart := time.Now()
	canary.setMode(mode500)
	time.Sleep(6 * time.Second)
	failEnd := time.Now()
	canary.setMode(modeOK)
	time.Sleep(7 * time.Second) // openDuration, a probe, and a few healthy samples
	t.Logf("%d requests sent; canary failing from +%.1fs to +%.1fs", sent.Load(), 5.0, failEnd.Sub(failStart).Seconds()+5)

	dom, console := runChromium(t, chromium, "--virtual-time-budget=3000", "--dump-dom", sc.metrics+"/")
	noConsoleMessages(t, console)
	if e := regexp.MustCompile(`<p id="error">([^<]*)</p>`).FindStringSubmatch(dom); e == nil || e[1] != "" {
		t.Errorf("the page shows an error: %v", e)
	}

	times, ratios := drawnSeries(t, dom, "errorRatio")
	var inWindow, after []float64
	var first, last time.Time
	for i, v := range ratios {
		if v == nil {
			continue
		}
		at := time.UnixMilli(times[i])
		switch {
		case at.Before(failStart):
			if *v > 0.01 {
				t.Errorf("the canary's error ratio is %v at %s, before the failure", *v, at.Format("15:04:05.000"))
			}
		case at.Before(failEnd.Add(3500 * time.Millisecond)): // a sample covers the second before it, plus the report interval
			inWindow = append(inWindow, *v)
			if *v > 0.01 { // the baseline is 0: any 5xx is the failure
				if first.IsZero() {
					first = at
				}
				last = at
			}
		default:
			after = append(after, *v)
			if *v > 0.01 {
				t.Errorf("the canary's error ratio is %v at %s, after the recovery", *v, at.Format("15:04:05.000"))
			}
		}
	}
	if first.IsZero() {
		t.Fatalf("no failure in the canary's error-ratio line: %v during the window", inWindow)
	}
	if first.Sub(failStart) > 2500*time.Millisecond {
		t.Errorf("the failure shows in the line at %s, %v after it began", first.Format("15:04:05.000"), first.Sub(failStart))
	}
	if len(after) == 0 {
		t.Error("the canary served no request after the recovery")
	}
	t.Logf("failure window in the drawn error-ratio line: %s to %s (failure injected %s to %s); samples in the window %v, after %v",
		first.Format("15:04:05.000"), last.Format("15:04:05.000"), failStart.Format("15:04:05.000"), failEnd.Format("15:04:05.000"), inWindow, after)

	states := regexp.MustCompile(`data-version="canary" data-metric="circuitState" data-v="([^"]*)"`).FindStringSubmatch(dom)
	if states == nil {
		t.Fatal("the page draws no breaker band for the canary")
	}
	if !strings.Contains(states[1], "open") {
		t.Errorf("the canary's breaker band shows no open state: %s", states[1])
	}
	if !strings.HasSuffix(states[1], "closed") {
		t.Errorf("the canary's breaker band does not end closed: %s", states[1])
	}
	edge := regexp.MustCompile(`<tr data-version="canary"><td><span class="key c0">canary</span></td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>`).FindStringSubmatch(dom)
	if edge == nil {
		t.Fatalf("no 'what the edge did' row for the canary:\n%s", dom)
	}
	if n, _ := strconv.Atoi(edge[3]); n == 0 {
		t.Errorf("no fallback counted for the canary: %v", edge[1:])
	}
	t.Logf("canary over the window: %s requests, %s 5xx, %s fallbacks, %s refused", edge[1], edge[2], edge[3], edge[4])

	// Without JavaScript the page is the same: it is rendered on the server.
	// (Chromium's --dump-dom needs script, so the page is read as sent.)
	res, err := http.Get(sc.metrics + "/")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	noJS := string(raw)
	if !strings.Contains(noJS, `<tr data-version="canary"><td>shop@file</td>`) {
		t.Errorf("with JavaScript off, no row for the canary:\n%s", noJS)
	}
	drawnSeries(t, noJS, "errorRatio")

	shot := filepath.Join(t.ArtifactDir(), "status-page.png")
	_, console = runChromium(t, chromium, "--virtual-time-budget=3000", "--hide-scrollbars", "--window-size=1200,1500", "--screenshot="+shot, sc.metrics+"/")
	noConsoleMessages(t, console)
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if dst := os.Getenv("EDGECANARY_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// drawnSeries reads the canary's line of a metric back from the page: its
// sample times and values (nil where none was drawn).
func drawnSeries(t *testing.T, dom, metric string) ([]int64, []*float64) {
	t.Helper()
	sec := regexp.MustCompile(`<section class="mw" data-middleware="shop@file" data-t="([0-9,]*)">`).FindStringSubmatch(dom)
	m := regexp.MustCompile(`<path class="line [a-z0-9 ]+" data-version="canary" data-metric="` + metric + `" data-v="([^"]*)"`).FindStringSubmatch(dom)
	if sec == nil || m == nil {
		t.Fatalf("the page draws no %s line for the canary:\n%s", metric, dom)
	}
	ts, vs := strings.Split(sec[1], ","), strings.Split(m[1], ",")
	if len(ts) != len(vs) || len(ts) < 10 {
		t.Fatalf("%d times for %d values", len(ts), len(vs))
	}
	times, values := make([]int64, len(ts)), make([]*float64, len(vs))
	for i := range ts {
		var err error
		if times[i], err = strconv.ParseInt(ts[i], 10, 64); err != nil {
			t.Fatal(err)
		}
		if vs[i] != "" {
			v, err := strconv.ParseFloat(vs[i], 64)
			if err != nil {
				t.Fatal(err)
			}
			values[i] = &v
		}
	}
	return times, values
}

// TestStatusPageRolloutInChromium: the real sidecar receives synthetic
// reports whose middleware carries a rollout (wire.Rollout; the plugin's side
// is issue 16), stepping through its schedule with a failed check; headless
// Chromium draws the schedule, the current step and each check on the time
// axis, with the check's reason escaped, and no console message.
func TestStatusPageRolloutInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: apt-get install --no-install-recommends chromium")
	}
	sc := startSidecar(t, "--status.step=1s")
	begin := time.Now()
	start := begin.Add(-2 * time.Second)
	const interval = 3 * time.Second
	weights := []float64{10, 25, 50, 100}
	results := []string{"pass", "fail", "pass"}
	var stable, canary uint64
	post := func(now time.Time) {
		step := min(1+int(now.Sub(start)/interval), len(weights))
		var recent []wire.Check
		for k := 1; k <= len(results); k++ {
			at := start.Add(time.Duration(k) * interval)
			if at.After(now) {
				break
			}
			reason := "request-success-rate 100% >= 99%"
			if results[k-1] == "fail" {
				reason = "request-success-rate 80% < 99% <img src=x>"
			}
			recent = append(recent, wire.Check{At: at.UnixMilli(), Step: k, Result: results[k-1], Reason: reason})
		}
		w := weights[step-1] / 100
		stable += uint64(100 * (1 - w))
		canary += uint64(100 * w)
		hist := func(n uint64) []uint64 { return []uint64{n / 2, n - n/2, 0, 0} }
		r := wire.Report{
			Version: wire.FormatVersion, Source: "synthetic", Instance: "rollout-test", StartedAt: begin.UnixMilli(), SentAt: now.UnixMilli(),
			Middlewares: []wire.Middleware{{
				Name: "shop@file", Buckets: []float64{0.005, 0.01, 0.025}, Fallbacks: []wire.Fallback{},
				Versions: []wire.Version{
					{Name: "canary", Weight: w, Configured: true, Requests: []wire.Request{{Code: 200, Method: "GET", Count: canary}}, Hist: hist(canary)},
					{Name: "stable", Primary: true, Weight: 1 - w, Configured: true, Requests: []wire.Request{{Code: 200, Method: "GET", Count: stable}}, Hist: hist(stable)},
				},
				Rollout: &wire.Rollout{
					Version: "canary", Start: start.UnixMilli(), IntervalMs: interval.Milliseconds(), StepWeights: weights,
					Step: step, State: wire.RolloutProgressing, Failed: 0, Checks: [3]uint64{2, 1, 0}, Recent: recent,
				},
			}},
		}
		body, _ := json.Marshal(r)
		res, err := http.Post(sc.ingest+"/v1/reports", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("report rejected: %s", res.Status)
		}
	}
	for now := time.Now(); now.Sub(begin) < 9*time.Second; now = time.Now() {
		post(now)
		time.Sleep(250 * time.Millisecond)
	}

	dom, console := runChromium(t, chromium, "--virtual-time-budget=3000", "--dump-dom", sc.metrics+"/")
	noConsoleMessages(t, console)
	for _, want := range []string{
		`<div class="rollout" data-state="progressing" data-step="4">`, `<li class="current">100 %</li>`, `<path class="schedule"`,
		`class="check pass" data-result="pass"`, `class="check fail" data-result="fail"`, `80% &lt; 99% &lt;img src=x&gt;`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(dom, "<img src") {
		t.Error("a check's reason became markup")
	}
	checks := regexp.MustCompile(`<circle class="check (pass|fail)" data-result="[a-z]+" data-at="([0-9]+)" data-step="([0-9])"`).FindAllStringSubmatch(dom, -1)
	var drawn []string
	for _, c := range checks {
		drawn = append(drawn, c[1]+"@step"+c[3])
	}
	if strings.Join(drawn, " ") != "pass@step1 fail@step2 pass@step3" {
		t.Errorf("checks drawn: %v", drawn)
	}
	_, weight := drawnSeries(t, dom, "weight")
	seen := map[float64]bool{}
	for _, v := range weight {
		if v != nil {
			seen[*v] = true
		}
	}
	if !seen[0.25] || !seen[0.5] || !seen[1] {
		t.Errorf("the canary's weight line does not follow the schedule: %v", seen)
	}
	shot := filepath.Join(t.ArtifactDir(), "status-page-rollout.png")
	_, console = runChromium(t, chromium, "--virtual-time-budget=3000", "--hide-scrollbars", "--window-size=1200,1450", "--screenshot="+shot, sc.metrics+"/")
	noConsoleMessages(t, console)
}

// TestStatusPageRealRolloutInChromium: the real plugin in the real Traefik
// runs a rollout whose canary answers 10% 503s; it is rolled back after two
// failed checks. Headless Chromium then finds on the status page the rollout
// rolled back, its failed checks as dots within the rollout's time, and the
// canary's weight line from the first step's 30% down to 0.
func TestStatusPageRealRolloutInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: apt-get install --no-install-recommends chromium")
	}
	f := startFailingRollout(t, 2, "--status.step=1s")
	sc, start := f.sc, f.start
	rolledBack := time.Now()
	time.Sleep(3 * time.Second) // samples after the rollback
	f.stop()

	dom, console := runChromium(t, chromium, "--virtual-time-budget=3000", "--dump-dom", sc.metrics+"/")
	noConsoleMessages(t, console)
	if !strings.Contains(dom, `<div class="rollout" data-state="rolled_back"`) {
		t.Errorf("the page does not show the rollout rolled back:\n%s", dom)
	}
	fails := regexp.MustCompile(`<circle class="check fail" data-result="fail" data-at="([0-9]+)"`).FindAllStringSubmatch(dom, -1)
	if len(fails) < 2 {
		t.Errorf("%d failed checks drawn, want 2", len(fails))
	}
	for _, f := range fails {
		at, _ := strconv.ParseInt(f[1], 10, 64)
		if at < start.UnixMilli() || at > rolledBack.Add(time.Second).UnixMilli() {
			t.Errorf("a failed check drawn at %d, outside the rollout (%d to %d)", at, start.UnixMilli(), rolledBack.UnixMilli())
		}
	}
	_, weight := drawnSeries(t, dom, "weight")
	var seen []float64
	for _, v := range weight {
		if v != nil && (len(seen) == 0 || seen[len(seen)-1] != *v) {
			seen = append(seen, *v)
		}
	}
	if len(seen) < 2 || !slices.Contains(seen, 0.3) || seen[len(seen)-1] != 0 {
		t.Errorf("the canary's weight line went through %v, want 0.3 and then 0 at the end", seen)
	}
	t.Logf("rolled back %v after the start; the canary's weight drawn through %v; %d failed checks drawn", rolledBack.Sub(start).Round(100*time.Millisecond), seen, len(fails))
	shot := filepath.Join(t.ArtifactDir(), "status-page-real-rollout.png")
	_, console = runChromium(t, chromium, "--virtual-time-budget=3000", "--hide-scrollbars", "--window-size=1200,1450", "--screenshot="+shot, sc.metrics+"/")
	noConsoleMessages(t, console)
	if dst := os.Getenv("EDGECANARY_ROLLOUT_SCREENSHOT"); dst != "" {
		png, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Error(err)
		}
	}
}
