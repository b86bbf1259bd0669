package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The status page is rendered on the server: today's table, then for each
// middleware its charts as inline SVG on one time axis, the rollout and what
// the edge did. It reads the same with JavaScript off. With JavaScript, the
// script /status.js (same origin, the only script the Content-Security-Policy
// allows) replaces the live part every 2 s with /status/live, the same
// rendering: one renderer, in Go. Each drawn series carries its samples in
// data-v (values, empty where there is none), and its middleware's section
// their instants in data-t (Unix milliseconds), so tests and tools can read
// back what was drawn.

const statusCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// statusPages serves the page, its live fragment and /api/status. The
// history changes once per step and its rendering is the costly part (at the
// caps, megabytes): it is rendered once per sample, as HTML and as JSON, and
// every request until the next sample writes the same bytes. A render is
// done by one request at a time (the others wait for it), and a slow reader
// holds no rendering of its own, only a reference to the shared bytes.
type statusPages struct {
	store   *store
	history *history
	now     func() time.Time

	historyHTML, historyJSON renderCache
}

// renderCache is the rendering of the history at one sample.
type renderCache struct {
	mu    sync.Mutex
	seq   uint64 // the history's samples when rendered
	valid bool
	body  []byte // shared by every response: never written
}

// get returns the rendering of the history at seq samples, rendering it when
// the cached one is older.
func (c *renderCache) get(seq uint64, render func(*bytes.Buffer)) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.valid || c.seq != seq {
		var buf bytes.Buffer
		render(&buf)
		c.body, c.seq, c.valid = buf.Bytes(), seq, true
	}
	return c.body
}

// doc is the whole status document, history included, rendered anew.
func (p *statusPages) doc() statusDoc {
	d := p.store.status(p.now())
	h := p.history.doc()
	d.History = &h
	return d
}

func (p *statusPages) json(rw http.ResponseWriter, _ *http.Request) {
	hist := p.historyJSON.get(p.history.samples(), func(b *bytes.Buffer) {
		h := p.history.doc()
		_ = json.NewEncoder(b).Encode(&h)
	})
	// The table now, encoded per request (small), then the cached history
	// written as is: the response holds no copy of it.
	head, err := json.Marshal(p.store.status(p.now())) // History nil: omitted
	if err != nil || len(head) < 2 {
		http.Error(rw, "status unavailable", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(rw, 32<<10)
	_, _ = bw.Write(head[:len(head)-1]) // without its closing brace
	_, _ = bw.WriteString(`,"history":`)
	_, _ = bw.Write(bytes.TrimSpace(hist))
	_, _ = bw.WriteString("}\n")
	_ = bw.Flush()
}

// live writes the live part: the table now, then the history as rendered
// at its last sample.
func (p *statusPages) live(b pageWriter) {
	hist := p.historyHTML.get(p.history.samples(), func(buf *bytes.Buffer) {
		h := p.history.doc()
		renderHistory(pageWriter{buf}, &h)
	})
	renderTable(b, p.store.status(p.now()))
	_, _ = b.w.Write(hist)
}

func (p *statusPages) page(rw http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/" {
		http.NotFound(rw, req)
		return
	}
	setPageHeaders(rw, "text/html; charset=utf-8")
	bw := bufio.NewWriterSize(rw, 32<<10)
	b := pageWriter{bw}
	b.str(pageHead)
	b.str(`<div id="live">`)
	p.live(b)
	b.str("</div>\n</body>\n</html>\n")
	_ = bw.Flush()
}

func (p *statusPages) fragment(rw http.ResponseWriter, _ *http.Request) {
	setPageHeaders(rw, "text/html; charset=utf-8")
	bw := bufio.NewWriterSize(rw, 32<<10)
	p.live(pageWriter{bw})
	_ = bw.Flush()
}

// pageWriter is where the page is rendered: the response, through a buffer.
// Its errors (a client gone) are not checked: the rest of the page is lost.
type pageWriter struct{ w io.Writer }

func (p pageWriter) str(s string)              { _, _ = io.WriteString(p.w, s) }
func (p pageWriter) f(format string, a ...any) { _, _ = fmt.Fprintf(p.w, format, a...) }

func setPageHeaders(rw http.ResponseWriter, contentType string) {
	rw.Header().Set("Content-Type", contentType)
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Content-Type-Options", "nosniff")
	rw.Header().Set("Content-Security-Policy", statusCSP)
}

func staticAsset(contentType, body string) http.HandlerFunc {
	return func(rw http.ResponseWriter, _ *http.Request) {
		setPageHeaders(rw, contentType)
		_, _ = rw.Write([]byte(body))
	}
}

var esc = html.EscapeString

func fmtPct(v *float64) string {
	if v == nil {
		return "–"
	}
	return strconv.FormatFloat(100**v, 'f', 1, 64) + " %"
}

func fmtMs(v *float64) string {
	if v == nil {
		return "–"
	}
	return strconv.FormatFloat(1000**v, 'f', 1, 64) + " ms"
}

// renderLive writes the part of the page that the script refreshes.
func renderLive(b pageWriter, d statusDoc) {
	renderTable(b, d)
	if d.History != nil {
		renderHistory(b, d.History)
	}
}

// renderTable writes the live part before the history: the figures now.
func renderTable(b pageWriter, d statusDoc) {
	b.f(`<p class="meta">Per-version figures over the last %.0f s. Raw metrics: <a href="/metrics">/metrics</a>, JSON: <a href="/api/status">/api/status</a>.</p>
<table class="now">
<thead><tr><th>middleware</th><th>version</th><th>weight</th><th>breaker</th><th>req/s</th><th>error ratio</th><th>p50</th><th>p95</th><th>p99</th><th>total</th></tr></thead>
<tbody id="rows">`, d.Window)
	if len(d.Versions) == 0 {
		b.str(`<tr><td colspan="10">waiting for the first report…</td></tr>`)
	}
	for _, v := range d.Versions {
		primary := ""
		if v.Primary {
			primary = `<span class="primary"> (primary)</span>`
		}
		b.f(`<tr data-version="%s"><td>%s</td><td>%s%s</td><td>%s</td><td class="state-%s">%s</td><td>%.1f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td></tr>`,
			esc(v.Version), esc(v.Middleware), esc(v.Version), primary, fmtPct(v.Weight),
			esc(v.State), esc(strings.ReplaceAll(v.State, "_", "-")), v.Rate, fmtPct(v.ErrorRatio), fmtMs(v.P50), fmtMs(v.P95), fmtMs(v.P99), v.Total)
	}
	b.str("</tbody>\n</table>\n")
	var srcs []string
	for _, src := range sortedKeys(d.LastReports) {
		srcs = append(srcs, fmt.Sprintf("%s %v s ago", src, d.LastReports[src]))
	}
	last := ""
	if len(srcs) > 0 {
		last = "; last from " + strings.Join(srcs, ", ")
	}
	b.f(`<p class="meta" id="reports">%d reports accepted%s</p>`+"\n", d.Reports, esc(last))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Chart geometry, in SVG user units: every chart has the same width and the
// same plot area left and right, so the time axes line up.
const (
	chartW     = 960
	plotLeft   = 64
	plotRight  = 16
	plotTop    = 22
	plotH      = 90
	axisH      = 22
	bandRowH   = 14
	plotWidth  = chartW - plotLeft - plotRight
	chartTotal = plotTop + plotH + axisH
)

// timeAxis maps Unix milliseconds to x over the window ending at the last sample.
type timeAxis struct{ start, end int64 }

func (a timeAxis) x(ms int64) float64 {
	return plotLeft + float64(ms-a.start)/float64(a.end-a.start)*plotWidth
}

func (a timeAxis) contains(ms int64) bool { return ms >= a.start && ms <= a.end }

func renderHistory(b pageWriter, h *historyDoc) {
	b.f(`<h2>History</h2>
<p class="meta">The last %s, one sample every %s, summed over every Traefik process reporting here.`,
		esc(time.Duration(h.WindowSeconds*float64(time.Second)).String()), esc(time.Duration(h.StepSeconds*float64(time.Second)).String()))
	if h.Untracked > 0 {
		b.f(` %d middlewares or versions are not drawn (at most %d middlewares of %d versions).`, h.Untracked, maxHistoryMiddlewares, maxHistoryVersions)
	}
	b.str("</p>\n")
	if len(h.Times) < 2 {
		b.f(`<p class="meta" id="history-wait">Collecting: the charts start after two samples (%v s apart).</p>`+"\n", h.StepSeconds)
		return
	}
	// The axis spans the window, or the samples held while they cover less.
	end := h.Times[len(h.Times)-1]
	ax := timeAxis{start: max(end-int64(h.WindowSeconds*1000), h.Times[0]), end: end}
	for i := range h.Middlewares {
		renderMiddleware(b, h, &h.Middlewares[i], ax)
	}
}

// versionClasses are the colour classes of the versions: "primary" for stable, and
// c0, c1, ... for the others in name order.
func versionClasses(m *mwHistoryDoc) map[string]string {
	out := map[string]string{}
	n := 0
	for _, v := range m.Versions {
		if v.Primary {
			out[v.Name] = "primary"
			continue
		}
		out[v.Name] = "c" + strconv.Itoa(n%6)
		n++
	}
	return out
}

func renderMiddleware(b pageWriter, h *historyDoc, m *mwHistoryDoc, ax timeAxis) {
	cls := versionClasses(m)
	b.f(`<section class="mw" data-middleware="%s" data-t="%s">
<h3>%s</h3>
<p class="legend">`, esc(m.Name), joinTimes(h.Times), esc(m.Name))
	for _, v := range m.Versions {
		role := "canary"
		if v.Primary {
			role = "stable"
		}
		b.f(`<span class="key %s">%s</span> (%s) `, cls[v.Name], esc(v.Name), role)
	}
	b.str(`· latency: <span class="key q">p99 solid, p95 dashed, p50 dotted</span></p>` + "\n")
	if m.Rollout != nil {
		renderRollout(b, m.Rollout)
	}
	lines := func(metric string, get func(*versionHistoryDoc) []*float64, dash string) []chartLine {
		var out []chartLine
		for i := range m.Versions {
			v := &m.Versions[i]
			out = append(out, chartLine{version: v.Name, metric: metric, class: cls[v.Name] + dash, values: get(v)})
		}
		return out
	}
	rps := lines("requestsPerSecond", func(v *versionHistoryDoc) []*float64 { return v.RequestsPS }, "")
	renderChart(b, h, m, ax, "requests per second", "requestsPerSecond", rps, niceMax(seriesMax(rps), 1), fmtRate, nil)
	errs := lines("errorRatio", func(v *versionHistoryDoc) []*float64 { return v.ErrorRatio }, "")
	// Scaled to the data, from 5 % (the ratios a canary is judged on are a
	// few points) up to 100 %; the axis is labelled.
	renderChart(b, h, m, ax, "error ratio (5xx)", "errorRatio", errs, math.Min(niceMax(seriesMax(errs), 0.05), 1), fmtPctAxis, nil)
	var lat []chartLine
	lat = append(lat, lines("p99Seconds", func(v *versionHistoryDoc) []*float64 { return v.P99 }, "")...)
	lat = append(lat, lines("p95Seconds", func(v *versionHistoryDoc) []*float64 { return v.P95 }, " q95")...)
	lat = append(lat, lines("p50Seconds", func(v *versionHistoryDoc) []*float64 { return v.P50 }, " q50")...)
	renderChart(b, h, m, ax, "latency p50 · p95 · p99", "latency", lat, niceMax(seriesMax(lat), 0.001), fmtSecondsAxis, nil)
	wts := lines("weight", func(v *versionHistoryDoc) []*float64 { return v.Weight }, "")
	renderChart(b, h, m, ax, "share of new users (weight)", "weight", wts, 1, fmtPctAxis, m.Rollout)
	renderBand(b, h, m, ax, cls)
	renderEdge(b, m, cls)
	b.str("</section>\n")
}

type chartLine struct {
	version, metric, class string
	values                 []*float64
}

func seriesMax(lines []chartLine) float64 {
	mx := 0.0
	for _, l := range lines {
		for _, v := range l.values {
			if v != nil && *v > mx {
				mx = *v
			}
		}
	}
	return mx
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten, at least floor.
func niceMax(v, floor float64) float64 {
	if !(v > floor) {
		v = floor
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtRate(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

func fmtPctAxis(v float64) string { return strconv.FormatFloat(100*v, 'g', 3, 64) + "%" }

func fmtSecondsAxis(v float64) string {
	if v < 1 {
		return strconv.FormatFloat(1000*v, 'g', 3, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + " s"
}

// joinValues writes the samples for data-v: empty where there is none.
func joinValues(vals []*float64) []byte {
	out := make([]byte, 0, 8*len(vals))
	for i, v := range vals {
		if i > 0 {
			out = append(out, ',')
		}
		if v != nil {
			out = strconv.AppendFloat(out, *v, 'g', 6, 64)
		}
	}
	return out
}

func joinTimes(ts []int64) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = strconv.FormatInt(t, 10)
	}
	return strings.Join(parts, ",")
}

func renderChart(b pageWriter, h *historyDoc, m *mwHistoryDoc, ax timeAxis, title, chart string, lines []chartLine, yMax float64, format func(float64) string, ro *rolloutDoc) {
	b.f(`<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" role="img" aria-label="%s, %s">`, chart, chartW, chartTotal, esc(title), esc(m.Name))
	b.f(`<text class="title" x="%d" y="14">%s</text>`, plotLeft, esc(title))
	y := func(v float64) float64 { return plotTop + plotH - v/yMax*plotH }
	for _, g := range []float64{0, 0.5, 1} {
		b.f(`<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text class="ylabel" x="%d" y="%.1f">%s</text>`,
			plotLeft, chartW-plotRight, y(g*yMax), y(g*yMax), plotLeft-6, y(g*yMax)+4, esc(format(g*yMax)))
	}
	renderTimeTicks(b, ax, plotTop, plotTop+plotH)
	if ro != nil {
		renderSchedule(b, ro, ax, y)
	}
	for _, l := range lines {
		d := make([]byte, 0, 12*len(l.values))
		var dots [][2]float64
		drawn := func(i int) bool {
			return i >= 0 && i < len(l.values) && i < len(h.Times) && l.values[i] != nil && ax.contains(h.Times[i])
		}
		for i, v := range l.values {
			if !drawn(i) {
				continue
			}
			x, yv := ax.x(h.Times[i]), y(math.Min(*v, yMax))
			switch {
			case drawn(i - 1):
				d = appendPoint(d, 'L', x, yv)
			case drawn(i + 1):
				d = appendPoint(d, 'M', x, yv)
			default: // a lone sample between gaps: a dot, drawn below
				dots = append(dots, [2]float64{x, yv})
			}
		}
		if len(d) == 0 {
			d = append(d, "M0 0"...) // draws nothing, and keeps d valid
		}
		b.f(`<path class="line %s" data-version="%s" data-metric="%s" data-v="%s" d="%s"><title>%s %s</title></path>`,
			l.class, esc(l.version), l.metric, joinValues(l.values), d, esc(l.version), l.metric)
		for _, dot := range dots {
			b.f(`<circle class="dot %s" cx="%.1f" cy="%.1f" r="3"/>`, l.class, dot[0], dot[1])
		}
	}
	if ro != nil {
		renderChecks(b, ro, ax)
	}
	b.str("</svg>\n")
}

// appendPoint appends an SVG path command to a point, to a tenth of a unit.
func appendPoint(d []byte, cmd byte, x, y float64) []byte {
	d = append(d, cmd)
	d = strconv.AppendFloat(d, x, 'f', 1, 64)
	d = append(d, ' ')
	return strconv.AppendFloat(d, y, 'f', 1, 64)
}

// renderTimeTicks draws the shared time axis: a tick every round interval,
// labelled in UTC.
func renderTimeTicks(b pageWriter, ax timeAxis, top, bottom float64) {
	span := ax.end - ax.start
	tick := int64(900000)
	for _, t := range []int64{5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000, 900000} {
		if span/t <= 8 {
			tick = t
			break
		}
	}
	for t := (ax.start/tick + 1) * tick; t <= ax.end; t += tick {
		x := ax.x(t)
		b.f(`<line class="tick" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, x, x, top, bottom+4)
		if x <= chartW-28 { // a label that fits
			b.f(`<text class="xlabel" x="%.1f" y="%.1f">%s</text>`, x, bottom+16, time.UnixMilli(t).UTC().Format("15:04:05"))
		}
	}
}

// renderSchedule draws a rollout's planned weights as a step line.
func renderSchedule(b pageWriter, ro *rolloutDoc, ax timeAxis, y func(float64) float64) {
	if ro.IntervalMs <= 0 || len(ro.Schedule) == 0 {
		return
	}
	var d strings.Builder
	clampX := func(ms int64) float64 { return math.Max(plotLeft, math.Min(chartW-plotRight, ax.x(ms))) }
	for i, s := range ro.Schedule {
		from, to := s.At, s.At+ro.IntervalMs
		if to < ax.start || from > ax.end {
			continue
		}
		cmd := "L"
		if d.Len() == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&d, "%s%.1f %.1f L%.1f %.1f ", cmd, clampX(from), y(s.Weight/100), clampX(to), y(s.Weight/100))
		if i+1 == ro.Step {
			b.f(`<rect class="current-step %s" x="%.1f" y="%d" width="%.1f" height="%d"/>`, esc(ro.State), clampX(from), plotTop, clampX(to)-clampX(from), plotH)
		}
	}
	if d.Len() > 0 {
		b.f(`<path class="schedule" data-metric="schedule" d="%s"><title>rollout schedule of %s</title></path>`, strings.TrimSpace(d.String()), esc(ro.Version))
	}
}

// renderChecks marks each recent check of a rollout on the time axis.
func renderChecks(b pageWriter, ro *rolloutDoc, ax timeAxis) {
	for _, c := range ro.Recent {
		if !ax.contains(c.At) {
			continue
		}
		b.f(`<circle class="check %s" data-result="%s" data-at="%d" data-step="%d" cx="%.1f" cy="%d" r="4"><title>step %d: %s %s</title></circle>`,
			esc(c.Result), esc(c.Result), c.At, c.Step, ax.x(c.At), plotTop+6, c.Step, esc(c.Result), esc(c.Reason))
	}
}

// renderBand draws each version's breaker state as a band: closed, half-open,
// open, or nothing where no report named the version.
func renderBand(b pageWriter, h *historyDoc, m *mwHistoryDoc, ax timeAxis, cls map[string]string) {
	height := plotTop + bandRowH*len(m.Versions) + axisH + 4
	b.f(`<svg class="chart band" data-chart="circuitState" viewBox="0 0 %d %d" role="img" aria-label="breaker state, %s">`, chartW, height, esc(m.Name))
	b.f(`<text class="title" x="%d" y="14">breaker state: <tspan class="closed">closed</tspan> · <tspan class="half_open">half-open</tspan> · <tspan class="open">open</tspan></text>`, plotLeft)
	for row, v := range m.Versions {
		top := plotTop + row*bandRowH
		b.f(`<text class="ylabel %s" x="%d" y="%d">%s</text>`, cls[v.Name], plotLeft-6, top+bandRowH-3, esc(v.Name))
		states := make([]string, len(v.CircuitState))
		for i, s := range v.CircuitState {
			if s != nil {
				states[i] = *s
			}
		}
		b.f(`<g data-version="%s" data-metric="circuitState" data-v="%s">`, esc(v.Name), strings.Join(states, ","))
		// One rectangle per run of equal states; a sample covers the step before it.
		for i := 0; i < len(states); {
			j := i
			for j+1 < len(states) && states[j+1] == states[i] {
				j++
			}
			if states[i] != "" {
				from := h.Times[i] - int64(h.StepSeconds*1000)
				x0, x1 := math.Max(plotLeft, ax.x(from)), ax.x(h.Times[j])
				b.f(`<rect class="state %s" x="%.1f" y="%d" width="%.1f" height="%d"/>`, esc(states[i]), x0, top+1, math.Max(x1-x0, 1), bandRowH-2)
			}
			i = j + 1
		}
		b.str("</g>")
	}
	renderTimeTicks(b, ax, plotTop, float64(plotTop+bandRowH*len(m.Versions)))
	b.str("</svg>\n")
}

// renderEdge is the table of what the edge did for users over the window.
func renderEdge(b pageWriter, m *mwHistoryDoc, cls map[string]string) {
	b.str(`<table class="edge"><caption>What the edge did, over the window</caption>
<thead><tr><th>version</th><th>requests</th><th>5xx</th><th>served by another version (fallbacks)</th><th>refused by the breaker</th></tr></thead><tbody>`)
	for _, v := range m.Versions {
		b.f(`<tr data-version="%s"><td><span class="key %s">%s</span></td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>`,
			esc(v.Name), cls[v.Name], esc(v.Name), v.Totals.Requests, v.Totals.Errors, v.Totals.Fallbacks, v.Totals.Refused)
	}
	b.f(`</tbody></table>
<p class="meta edge-limits">Rate limit, before a version is chosen: <strong data-metric="rateLimited">%d</strong> requests refused with 429, <strong data-metric="dryRunRateLimited">%d</strong> that dry-run mode would have refused.</p>
`, m.Totals.RateLimited, m.Totals.DryRunRateLimited)
}

// renderRollout describes a rollout: its schedule, where it stands, its checks.
func renderRollout(b pageWriter, ro *rolloutDoc) {
	b.f(`<div class="rollout" data-state="%s" data-step="%d"><p><strong>Rollout</strong> of <strong>%s</strong>: <span class="rollout-state %s">%s</span>, step %d of %d`,
		esc(ro.State), ro.Step, esc(ro.Version), esc(ro.State), esc(strings.ReplaceAll(ro.State, "_", " ")), ro.Step, ro.Steps)
	if ro.IntervalMs > 0 {
		b.f(`, every %s from %s UTC`, esc(time.Duration(ro.IntervalMs*int64(time.Millisecond)).String()), time.UnixMilli(ro.Start).UTC().Format("2006-01-02 15:04:05"))
	}
	if ro.Shared {
		b.str(", rollback shared through Redis")
	}
	b.f(`. Checks (every replica): %d passed, %d failed, %d inconclusive; %d failed in a row now.</p>
<ol class="steps">`, ro.Checks["pass"], ro.Checks["fail"], ro.Checks["inconclusive"], ro.Failed)
	for _, s := range ro.Schedule {
		cur := ""
		if s.Step == ro.Step {
			cur = ` class="current"`
		}
		b.f(`<li%s>%s %%</li>`, cur, strconv.FormatFloat(s.Weight, 'g', 4, 64))
	}
	b.str("</ol>\n")
	if n := len(ro.Recent); n > 0 {
		last := ro.Recent[n-1]
		b.f(`<p class="meta">Last check: step %d, <span class="check-%s">%s</span> %s at %s UTC (every check is a dot on the weight chart).</p>`,
			last.Step, esc(last.Result), esc(last.Result), esc(last.Reason), time.UnixMilli(last.At).UTC().Format("15:04:05"))
	}
	b.str("</div>\n")
}

const pageHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgecanary status</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body>
<h1>edgecanary</h1>
<p id="error"></p>
`

const statusCSS = `body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1b1f24; max-width: 72rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .25rem; }
h3 { font-size: 1.05rem; margin: 1rem 0 .25rem; }
p.meta { color: #57606a; margin: 0 0 1rem; }
table { border-collapse: collapse; min-width: 60rem; margin-bottom: .5rem; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child, table.now th:nth-child(2), table.now td:nth-child(2) { text-align: left; }
th { background: #f6f8fa; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
.state-closed { color: #1a7f37; } .state-half_open { color: #9a6700; } .state-open { color: #cf222e; font-weight: bold; }
.primary { font-size: .75rem; color: #57606a; }
#error { color: #cf222e; }
svg.chart { display: block; width: 100%; height: auto; font-size: 11px; }
svg .title { font-weight: 600; fill: #1b1f24; }
svg .grid { stroke: #d0d7de; stroke-width: 1; }
svg .tick { stroke: #eaeef2; stroke-width: 1; }
svg .ylabel { fill: #57606a; text-anchor: end; }
svg .xlabel { fill: #57606a; text-anchor: middle; }
path.line { fill: none; stroke-width: 2; stroke-linejoin: round; }
path.q95 { stroke-dasharray: 6 3; stroke-width: 1.5; }
path.q50 { stroke-dasharray: 2 3; stroke-width: 1.5; }
path.schedule { fill: none; stroke: #8c959f; stroke-width: 1.5; stroke-dasharray: 4 4; }
rect.current-step { fill: #ddf4ff; opacity: .6; } rect.current-step.rolled_back { fill: #ffebe9; }
path.primary { stroke: #0969da; } path.c0 { stroke: #e16f24; } path.c1 { stroke: #8250df; }
path.c2 { stroke: #0e8a8a; } path.c3 { stroke: #bf3989; } path.c4 { stroke: #953800; } path.c5 { stroke: #6a7a00; }
circle.dot.primary { fill: #0969da; } circle.dot.c0 { fill: #e16f24; } circle.dot.c1 { fill: #8250df; }
circle.dot.c2 { fill: #0e8a8a; } circle.dot.c3 { fill: #bf3989; } circle.dot.c4 { fill: #953800; } circle.dot.c5 { fill: #6a7a00; }
text.primary { fill: #0969da; } text.c0 { fill: #e16f24; } text.c1 { fill: #8250df; } text.c2 { fill: #0e8a8a; } text.c3 { fill: #bf3989; } text.c4 { fill: #953800; } text.c5 { fill: #6a7a00; }
.key { font-weight: 600; } span.key.primary { color: #0969da; font-size: inherit; } span.key.c0 { color: #e16f24; } span.key.c1 { color: #8250df; }
span.key.c2 { color: #0e8a8a; } span.key.c3 { color: #bf3989; } span.key.c4 { color: #953800; } span.key.c5 { color: #6a7a00; }
rect.state.closed { fill: #2da44e; } rect.state.half_open { fill: #d4a72c; } rect.state.open { fill: #cf222e; }
tspan.closed { fill: #1a7f37; } tspan.half_open { fill: #9a6700; } tspan.open { fill: #cf222e; }
circle.check { stroke: #fff; stroke-width: 1; } circle.pass { fill: #1a7f37; } circle.fail { fill: #cf222e; }
circle.inconclusive, circle.unknown { fill: #8c959f; }
.check-pass { color: #1a7f37; } .check-fail { color: #cf222e; }
div.rollout { border-left: 3px solid #0969da; padding: .25rem .75rem; margin: .5rem 0; background: #f6f8fa; }
ol.steps { display: flex; gap: 1.5rem; margin: .25rem 0; padding-left: 1.5rem; }
ol.steps li.current { font-weight: bold; color: #0969da; }
`

// statusJS refreshes the live part of the page from /status/live, rendered
// by the same code as the page.
const statusJS = `"use strict";
(function () {
  const live = document.getElementById("live");
  const error = document.getElementById("error");
  async function refresh() {
    try {
      const res = await fetch("/status/live", {cache: "no-store"});
      if (!res.ok) throw new Error("status " + res.status);
      const tpl = document.createElement("template");
      tpl.innerHTML = await res.text();
      live.replaceChildren(tpl.content);
      error.textContent = "";
    } catch (e) {
      error.textContent = "Cannot reach the sidecar: " + e.message;
    }
  }
  setInterval(refresh, 2000);
})();
`
