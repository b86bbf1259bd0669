package main

// The hostile review of issue 18 (the status page's history): each test
// reproduces one defect and fails until it is fixed.

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// r18Report is one Traefik process's report for shop@file with the given
// bucket layout: one version, ok 200s all observed in the first bucket.
func r18Report(instance string, sentAt int64, bounds []float64, version string, primary bool, state int, transitions [3]uint64, ok uint64) *report {
	hist := make([]uint64, len(bounds)+1)
	hist[0] = ok
	m := reportMWStat{Name: "shop@file", Buckets: bounds, Versions: []reportVersion{{
		Name: version, Primary: primary, Weight: 0.5, Configured: true, State: state, Transitions: transitions,
		Requests: []reportRequest{{Code: 200, Method: "GET", Count: ok}}, Hist: hist,
	}}}
	return &report{Version: 1, Source: "traefik-" + instance, Instance: instance, StartedAt: 1, SentAt: sentAt, Middlewares: []reportMWStat{m}}
}

// TestReview18LayoutChangeAcrossARestart: Traefik restarts with a new
// sidecar.buckets (the usual way a layout changes). The store keeps the old
// process's totals and, of two layouts, the histogram with more observations,
// so the summed histogram stays the old, frozen one until the new process has
// served as many requests. Meanwhile every request of the new process shows
// as "refused by the breaker" and the version has no latency at all, sample
// after sample. README ("Known limitations") says only the one sample that
// spans the change overcounts refusals.
func TestReview18LayoutChangeAcrossARestart(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	oldBounds, newBounds := []float64{0.1, 0.2, 0.4}, []float64{0.05, 0.1, 0.2, 0.4}
	mustMerge(t, s, r18Report("old", 1, oldBounds, "stable", true, 0, [3]uint64{}, 1000), t0)
	h.record(s.snapshot(t0), t0)
	at := t0
	for i := 1; i <= 6; i++ { // the new process serves 25 requests per step, every one observed
		at = at.Add(5 * time.Second)
		mustMerge(t, s, r18Report("new", int64(i), newBounds, "stable", true, 0, [3]uint64{}, uint64(25*i)), at)
		h.record(s.snapshot(at), at)
	}
	st := findVersion(t, h.doc(), "stable")
	withRefusals, withoutP50 := 0, 0
	for i := 1; i <= 6; i++ {
		if st.Refused[i] != nil && *st.Refused[i] > 0 {
			withRefusals++
		}
		if i >= 2 && st.P50[i] == nil {
			withoutP50++
		}
	}
	if withRefusals > 1 {
		t.Errorf("%d samples after the restart show breaker refusals (refused %v in total, of %d requests, none refused); README says at most the one sample that spans the change",
			withRefusals, st.Totals.Refused, st.Totals.Requests)
	}
	if withoutP50 > 0 {
		t.Errorf("%d of 5 samples after the restart have no p50 though every request was observed", withoutP50)
	}
}

// TestReview18WallClockStepsBack: the history is keyed by the wall clock and
// ignores a sample at or before the last one. When the clock is stepped back
// (NTP correcting a drifted VM by a minute), the history freezes for that
// long: the page shows nothing new; and the first sample taken once the wall
// clock passes the old last instant divides the increase of the whole frozen
// period by a few seconds, a spike of the request rate.
func TestReview18WallClockStepsBack(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	wall, served := t0, 0 // served: seconds of traffic, 10 requests per second
	sample := func() {
		mustMerge(t, s, r18Report("a", int64(served+1), []float64{0.1}, "stable", true, 0, [3]uint64{}, uint64(10*served)), wall)
		h.record(s.snapshot(wall), wall)
	}
	for i := 0; i < 5; i++ {
		sample()
		wall, served = wall.Add(5*time.Second), served+5
	}
	wall = wall.Add(-65 * time.Second) // stepped back a minute
	before := len(h.doc().Times)
	for i := 0; i < 12; i++ { // the next minute
		sample()
		wall, served = wall.Add(5*time.Second), served+5
	}
	if got := len(h.doc().Times) - before; got < 6 {
		t.Errorf("in the minute after the wall clock went back a minute, %d of 12 samples were kept: the history froze", got)
	}
	sample() // at the last instant kept: ignored
	wall, served = wall.Add(5*time.Second), served+5
	sample() // the first instant after it: 70 s of traffic since the last sample kept
	st := findVersion(t, h.doc(), "stable")
	for i, r := range st.RequestsPS {
		if r != nil && math.Abs(*r-10) > 1 {
			t.Errorf("sample %d: %v requests per second, the traffic is a steady 10/s", i, *r)
		}
	}
}

// TestReview18WindowTotalsAreOverTheWindow: "What the edge did, over the
// window" and /api/status' totals ("their sums over the window") sum every
// sample held, not the samples in the window. After a gap (the sidecar
// starved or suspended for an hour), the table counts requests from more
// than an hour ago that no chart draws any more.
func TestReview18WindowTotalsAreOverTheWindow(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	at := t0
	for i := 0; i <= 10; i++ { // 10 requests per step, 100 in all
		mustMerge(t, s, r18Report("a", int64(i+1), []float64{0.1}, "stable", true, 0, [3]uint64{}, uint64(10*i)), at)
		h.record(s.snapshot(at), at)
		at = at.Add(5 * time.Second)
	}
	at = at.Add(time.Hour) // no request since; the sidecar took no sample for an hour
	for i := 0; i < 3; i++ {
		mustMerge(t, s, r18Report("a", int64(100+i), []float64{0.1}, "stable", true, 0, [3]uint64{}, 100), at)
		h.record(s.snapshot(at), at)
		at = at.Add(5 * time.Second)
	}
	d := h.doc()
	end := d.Times[len(d.Times)-1]
	var inWindow uint64
	st := findVersion(t, d, "stable")
	for i, ts := range d.Times {
		if ts >= end-int64(d.WindowSeconds*1000) && st.Requests[i] != nil {
			inWindow += uint64(*st.Requests[i])
		}
	}
	if st.Totals.Requests != inWindow {
		t.Errorf("window totals: %d requests, but the samples of the last %v s hold %d", st.Totals.Requests, d.WindowSeconds, inWindow)
	}
	var page strings.Builder
	sp := &statusPages{store: s, history: h, now: func() time.Time { return at }}
	doc := sp.doc()
	renderLive(pageWriter{&page}, doc)
	if strings.Contains(page.String(), `<tr data-version="stable"><td><span class="key primary">stable</span></td><td>100</td>`) {
		t.Errorf("the page says the edge served 100 requests over the window (15 minutes); the last was served an hour ago")
	}
}

// TestReview18BandShowsABreakerOpenOnAnyReplica: with two Traefik replicas,
// the band shows only the freshest report's state. A breaker that stays open
// on one replica (half the users refused or sent elsewhere) shows closed as
// soon as the other replica, whose breaker is closed, reported last; with
// replicas reporting every second, the band flickers at random.
func TestReview18BandShowsABreakerOpenOnAnyReplica(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	b := []float64{0.1}
	mustMerge(t, s, r18Report("a", 1, b, "canary", false, 0, [3]uint64{}, 10), t0)
	mustMerge(t, s, r18Report("b", 2, b, "canary", false, 0, [3]uint64{}, 10), t0)
	h.record(s.snapshot(t0), t0)
	at := t0
	for i := 1; i <= 4; i++ {
		at = at.Add(5 * time.Second)
		// Replica a's breaker opened in the first step and stays open; b's is closed and reports last.
		mustMerge(t, s, r18Report("a", int64(10*i), b, "canary", false, 2, [3]uint64{0, 0, 1}, 10), at)
		mustMerge(t, s, r18Report("b", int64(10*i+1), b, "canary", false, 0, [3]uint64{}, uint64(10+10*i)), at)
		h.record(s.snapshot(at), at)
	}
	ca := findVersion(t, h.doc(), "canary")
	var states []string
	for _, p := range ca.CircuitState {
		if p == nil {
			states = append(states, "none")
		} else {
			states = append(states, *p)
		}
	}
	if got := fmt.Sprint(states[1:]); got != "[open open open open]" {
		t.Errorf("replica a's breaker is open from the first step on; the band shows %s", got)
	}
}

// TestReview18ANewcomerAtTheCapEvictsLiveHistories: at the cap, a new
// middleware is to take "the place of the one idle longest, if one was idle
// at this sample". Idleness is judged while the sample is half taken: every
// middleware whose name sorts after the newcomer has not been recorded yet,
// so it looks idle though its reports are fresh. One new middleware at the
// cap evicts a live one, which, recorded next, evicts the next live one, and
// so on: the charts of every middleware after it lose their whole history.
func TestReview18ANewcomerAtTheCapEvictsLiveHistories(t *testing.T) {
	h := newHistory(5 * time.Second)
	v := view{mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}}
	for i := 0; i < maxHistoryMiddlewares; i++ {
		name := fmt.Sprintf("shop-%02d@file", i)
		v.mws[name] = newMWTotals()
		v.gauges[name] = map[string]versionGauge{"stable": {primary: true, weight: 1, configured: true}}
	}
	at := t0
	for i := 0; i < 10; i++ {
		at = at.Add(5 * time.Second)
		for _, m := range v.mws {
			m.requests[reqKey{"stable", 200, "GET"}] += 50
		}
		h.record(v, at)
	}
	// One more middleware reports: every tracked one is live.
	v.mws["api@file"] = newMWTotals()
	v.gauges["api@file"] = map[string]versionGauge{"stable": {primary: true, weight: 1, configured: true}}
	at = at.Add(5 * time.Second)
	h.record(v, at)
	d := h.doc()
	lost := []string{}
	for _, m := range d.Middlewares {
		if m.Name == "api@file" {
			continue
		}
		var rated int
		for _, r := range m.Versions[0].RequestsPS {
			if r != nil {
				rated++
			}
		}
		if rated < 10 {
			lost = append(lost, m.Name)
		}
	}
	tracked := map[string]bool{}
	for _, m := range d.Middlewares {
		tracked[m.Name] = true
	}
	for i := 0; i < maxHistoryMiddlewares; i++ {
		if name := fmt.Sprintf("shop-%02d@file", i); !tracked[name] {
			lost = append(lost, name+" (evicted)")
		}
	}
	if len(lost) > 0 {
		t.Errorf("one new middleware at the cap; %d live middlewares lost their history: %v", len(lost), lost)
	}
}

// TestReview18ANewVersionAtTheCapEvictsLiveVersions: the same within a
// middleware, at maxHistoryVersions: a ninth version named before the others
// evicts live versions one after another.
func TestReview18ANewVersionAtTheCapEvictsLiveVersions(t *testing.T) {
	h := newHistory(5 * time.Second)
	mw := newMWTotals()
	g := map[string]versionGauge{}
	for j := 0; j < maxHistoryVersions; j++ {
		g[fmt.Sprintf("v%d", j+1)] = versionGauge{weight: 0.125, configured: true, primary: j == 0}
	}
	v := view{mws: map[string]*mwTotals{"shop@file": mw}, gauges: map[string]map[string]versionGauge{"shop@file": g}}
	at := t0
	for i := 0; i < 10; i++ {
		at = at.Add(5 * time.Second)
		for vn := range g {
			mw.requests[reqKey{vn, 200, "GET"}] += 50
		}
		h.record(v, at)
	}
	g["a-new"] = versionGauge{weight: 0, configured: true}
	at = at.Add(5 * time.Second)
	h.record(v, at)
	var lost []string
	tracked := map[string]bool{}
	for _, vd := range h.doc().Middlewares[0].Versions {
		tracked[vd.Name] = true
		var rated int
		for _, r := range vd.RequestsPS {
			if r != nil {
				rated++
			}
		}
		if vd.Name != "a-new" && rated < 10 {
			lost = append(lost, vd.Name)
		}
	}
	for j := 0; j < maxHistoryVersions; j++ {
		if vn := fmt.Sprintf("v%d", j+1); !tracked[vn] {
			lost = append(lost, vn+" (evicted)")
		}
	}
	if len(lost) > 0 {
		t.Errorf("a ninth version; %d live versions lost their history: %v", len(lost), lost)
	}
}

// TestReview18AReplicaJoiningIsNotARateSpike: the history takes the increase
// of the sum over replicas (rate of a sum), not the sum of each replica's
// increase. A replica whose first report reaches the sidecar after it has
// served for a while (the sidecar restarted and the plugin's
// sidecar.interval is longer than the step, or a process admitted once the
// store had room for it) adds its whole lifetime to one step: a spike that
// never happened. rate() over each replica's series, as Prometheus scraping
// Traefik would compute it, has no increase at a series' first sample.
func TestReview18AReplicaJoiningIsNotARateSpike(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	b := []float64{0.1}
	// Both replicas have served 10 requests per second for a day; the sidecar just started.
	const day = 86400 * 10
	at := t0
	for i := 0; i < 4; i++ {
		mustMerge(t, s, r18Report("a", int64(1+i), b, "stable", true, 0, [3]uint64{}, uint64(day+50*i)), at)
		if i >= 2 { // b reports every 10 s: its first report arrives after two samples
			mustMerge(t, s, r18Report("b", int64(1+i), b, "stable", true, 0, [3]uint64{}, uint64(day+50*i)), at)
		}
		h.record(s.snapshot(at), at)
		at = at.Add(5 * time.Second)
	}
	st := findVersion(t, h.doc(), "stable")
	for i, r := range st.RequestsPS {
		if r != nil && *r > 25 {
			t.Errorf("sample %d: %v requests per second; the two replicas serve 20", i, *r)
		}
	}
}

// TestReview18SmallErrorRatiosAreVisible: the error-ratio chart's scale is
// fixed at 0–100 %, so the ratios a canary is judged on (the README's own
// alert fires at 5 points worse than stable; analysis templates use 1 %) are
// drawn within a pixel or four of the zero line, indistinguishable from
// stable's 0. The other charts scale to their data (niceMax).
func TestReview18SmallErrorRatiosAreVisible(t *testing.T) {
	s, h := newStore(defaultMaxSeries), newHistory(5*time.Second)
	at := t0
	for i := 0; i < 6; i++ { // the canary answers 1 % 500s
		c := vfig{name: "canary", weight: 0.2, ok: uint64(99 * i), failed: uint64(i), hist: [4]uint64{uint64(100 * i), 0, 0, 0}}
		st := vfig{name: "stable", primary: true, weight: 0.8, ok: uint64(400 * i), hist: [4]uint64{uint64(400 * i), 0, 0, 0}}
		mustMerge(t, s, histReport("a", int64(i+1), 0, 0, 0, nil, c, st), at)
		h.record(s.snapshot(at), at)
		at = at.Add(5 * time.Second)
	}
	var b strings.Builder
	d := h.doc()
	renderHistory(pageWriter{&b}, &d)
	page := b.String()
	m := regexp.MustCompile(`<path class="line c0" data-version="canary" data-metric="errorRatio" data-v="[^"]*" d="([^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no canary error-ratio line:\n%s", page)
	}
	zero := float64(plotTop + plotH)
	for _, pt := range regexp.MustCompile(`[ML][0-9.]+ ([0-9.]+)`).FindAllStringSubmatch(m[1], -1) {
		y, _ := strconv.ParseFloat(pt[1], 64)
		if zero-y < 10 {
			t.Errorf("a 1 %% error ratio is drawn %.1f units above 0 on a %d-unit chart: it cannot be told from stable's 0", zero-y, plotH)
			break
		}
	}
}
