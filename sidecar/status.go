package main

import (
	"math"
	"sort"
	"time"
)

// The status page shows, per version, the figures a person needs to judge a
// canary: request rate, error ratio and latency percentiles over the last
// window, breaker state and weight. The sidecar samples its totals every
// second to compute them.

const statusWindow = 30 * time.Second

type snapshotSample struct {
	at       time.Time
	versions map[string]verSample // "middleware\x00version"
}

type verSample struct {
	total, errors uint64
	hist          histTotals
}

// sample records the current totals for the status page.
func (s *store) sample(now time.Time) {
	v := s.sums(now)
	smp := snapshotSample{at: now, versions: map[string]verSample{}}
	for mw, t := range v.mws {
		for k, n := range t.requests {
			key := mw + "\x00" + k.version
			vs := smp.versions[key]
			vs.total += n
			if k.code >= 500 && k.code <= 599 {
				vs.errors += n
			}
			smp.versions[key] = vs
		}
		for version, h := range t.hist {
			key := mw + "\x00" + version
			vs := smp.versions[key]
			vs.hist = histTotals{bounds: h.bounds, counts: append([]uint64(nil), h.counts...), sum: h.sum}
			smp.versions[key] = vs
		}
	}
	s.mu.Lock()
	s.history = append(s.history, smp)
	if len(s.history) > historySamples {
		s.history = append(s.history[:0], s.history[len(s.history)-historySamples:]...)
	}
	s.mu.Unlock()
}

type statusVersion struct {
	Middleware string   `json:"middleware"`
	Version    string   `json:"version"`
	Primary    bool     `json:"primary"`
	Weight     *float64 `json:"weight"`
	State      string   `json:"circuitState"`
	Rate       float64  `json:"requestsPerSecond"`
	ErrorRatio *float64 `json:"errorRatio"`
	P50        *float64 `json:"p50Seconds"`
	P95        *float64 `json:"p95Seconds"`
	P99        *float64 `json:"p99Seconds"`
	Total      uint64   `json:"requestsTotal"`
}

type statusDoc struct {
	Now         time.Time          `json:"now"`
	Window      float64            `json:"windowSeconds"`
	Versions    []statusVersion    `json:"versions"`
	Reports     uint64             `json:"reports"`
	Rejected    map[string]uint64  `json:"rejected"`
	LastReports map[string]float64 `json:"lastReportAgeSeconds"`
	History     *historyDoc        `json:"history,omitempty"` // see history.go
}

// status computes the status document from the sampled history.
func (s *store) status(now time.Time) statusDoc {
	s.mu.Lock()
	hist := append([]snapshotSample(nil), s.history...)
	s.mu.Unlock()
	v := s.sums(now)
	doc := statusDoc{Now: now, Versions: []statusVersion{}, Reports: v.reports, Rejected: v.rejected, LastReports: map[string]float64{}}
	for src, t := range v.lastReport {
		doc.LastReports[src] = math.Round(now.Sub(t).Seconds()*10) / 10
	}
	if len(hist) == 0 {
		return doc
	}
	last := hist[len(hist)-1]
	first := last
	for i := len(hist) - 1; i >= 0; i-- {
		if last.at.Sub(hist[i].at) > statusWindow {
			break
		}
		first = hist[i]
	}
	dt := last.at.Sub(first.at).Seconds()
	doc.Window = dt
	for key, cur := range last.versions {
		var mw, version string
		for i := 0; i < len(key); i++ {
			if key[i] == 0 {
				mw, version = key[:i], key[i+1:]
			}
		}
		prev := first.versions[key]
		sv := statusVersion{Middleware: mw, Version: version, State: "closed", Total: cur.total}
		if g, ok := v.gauges[mw][version]; ok {
			sv.Primary = g.primary
			sv.State = transitionNames[g.state]
			if g.configured {
				w := g.weight
				sv.Weight = &w
			}
		}
		if dt > 0 && cur.total >= prev.total {
			d := cur.total - prev.total
			sv.Rate = float64(d) / dt
			if d > 0 {
				r := float64(cur.errors-prev.errors) / float64(d)
				sv.ErrorRatio = &r
			}
		}
		if delta := histDelta(cur.hist, prev.hist); delta != nil {
			sv.P50, sv.P95, sv.P99 = quantile(0.5, delta), quantile(0.95, delta), quantile(0.99, delta)
		}
		doc.Versions = append(doc.Versions, sv)
	}
	sort.Slice(doc.Versions, func(i, j int) bool {
		a, b := doc.Versions[i], doc.Versions[j]
		return a.Middleware < b.Middleware || a.Middleware == b.Middleware && a.Version < b.Version
	})
	return doc
}

func histDelta(cur, prev histTotals) *histTotals {
	if len(cur.counts) == 0 {
		return nil
	}
	d := &histTotals{bounds: cur.bounds, counts: make([]uint64, len(cur.counts))}
	same := sameBounds(cur.bounds, prev.bounds)
	var n uint64
	for i, c := range cur.counts {
		if same && c >= prev.counts[i] {
			c -= prev.counts[i]
		}
		d.counts[i] = c
		n += c
	}
	if n == 0 {
		return nil
	}
	return d
}

// quantile interpolates linearly within buckets, as histogram_quantile does.
func quantile(q float64, h *histTotals) *float64 {
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	rank := q * float64(total)
	var cum uint64
	lower := 0.0
	for i, c := range h.counts {
		if float64(cum+c) >= rank {
			if i == len(h.bounds) { // +Inf bucket: the highest finite bound
				v := h.bounds[len(h.bounds)-1]
				return &v
			}
			upper := h.bounds[i]
			v := lower
			if c > 0 {
				v = lower + (upper-lower)*(rank-float64(cum))/float64(c)
			}
			return &v
		}
		cum += c
		if i < len(h.bounds) {
			lower = h.bounds[i]
		}
	}
	return nil
}
