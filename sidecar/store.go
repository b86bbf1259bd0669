package main

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// The store merges cumulative reports. Each Traefik process (source and
// instance) reports its totals since it started, so:
//   - a lost, late or repeated report costs nothing: every counter of an
//     instance is kept as the maximum it has reported;
//   - the published value of a counter is the sum over every instance ever
//     seen, so it never goes down while the sidecar runs: when an instance goes
//     away (Traefik restarted), its last totals stay and the new instance adds
//     to them;
//   - an instance silent for retireAfter is folded into the retired totals and
//     forgotten (its id is remembered so a very late report is not counted
//     twice).

// Bounds. Every series the sidecar publishes counts against one cap
// (ingest.maxSeries, default defaultMaxSeries): a
// report that would go past it is rejected (reason "cardinality"), whatever
// kind of series it adds. Counter series are kept while the sidecar runs
// (their totals must not go down), so a new Traefik process reporting the
// same series as the one it replaced adds nothing, after any number of
// restarts. The per-source last-report gauge is the exception: at most
// maxSources are kept, the oldest dropped first, and a source silent for
// retireAfter is forgotten. Memory is bounded too: the instances together
// hold at most heldPerSeries × the cap series entries (the oldest are folded into the
// retired totals to make room), and at most maxRetiredIDs ids are kept.
const (
	retireAfter       = 10 * time.Minute
	gaugeStaleAfter   = 2 * time.Minute
	maxInstances      = 1024
	maxRetiredIDs     = 10000
	maxMiddlewares    = 1000 // in one report
	maxVersionsPerMW  = 64
	defaultMaxSeries  = 50000
	maxSources        = 1024
	heldPerSeries     = 4
	historySamples    = 120
	historyResolution = time.Second
)

// Series per key, as the collector publishes them.
const (
	seriesPerMiddleware = 3 // the three rate-limit counters
	seriesPerVersion    = 6 // circuit state, weight, info and three transition counters
	seriesPerHistogram  = 3 // +Inf bucket, sum and count, besides one per bound
)

type reqKey struct {
	version string
	code    int
	method  string
}

type fbKey struct{ from, to string }

type histTotals struct {
	bounds []float64
	counts []uint64 // non-cumulative, one per bound plus +Inf
	sum    float64
}

// mwTotals are one middleware's counters as one instance reported them (or,
// in the retired totals, summed).
type mwTotals struct {
	requests    map[reqKey]uint64
	hist        map[string]*histTotals
	rlRejected  uint64
	rlDryRun    uint64
	rlEvictions uint64
	fallbacks   map[fbKey]uint64
	transitions map[string][3]uint64
}

func newMWTotals() *mwTotals {
	return &mwTotals{
		requests:    map[reqKey]uint64{},
		hist:        map[string]*histTotals{},
		fallbacks:   map[fbKey]uint64{},
		transitions: map[string][3]uint64{},
	}
}

// versionGauge is what the freshest report says about a version now.
type versionGauge struct {
	state      int
	weight     float64
	primary    bool
	configured bool
}

type instance struct {
	source   string
	id       string
	sentAt   int64 // of the newest report merged
	received time.Time
	mws      map[string]*mwTotals
	gauges   map[string]map[string]versionGauge // middleware -> version
	keys     map[string]bool                    // the series keys it holds (see seriesKeys)
}

type instKey struct{ source, id string }

type store struct {
	mu         sync.Mutex
	instances  map[instKey]*instance
	retired    map[string]*mwTotals
	retiredIDs map[instKey]time.Time
	lastReport map[string]time.Time // by source
	series     map[string]int       // every series key ever accepted -> its number of series
	seriesN    int                  // the sum of series, for maxSeries
	held       int                  // series entries held by the instances, for maxHeld
	maxSeries  int                  // the cap on published series
	maxHeld    int                  // the cap on entries held by the instances

	reports  uint64
	rejected map[string]uint64

	history []snapshotSample // for the status page
}

// newStore returns an empty store that publishes at most maxSeries series.
func newStore(maxSeries int) *store {
	return &store{
		maxSeries:  maxSeries,
		maxHeld:    heldPerSeries * maxSeries,
		instances:  map[instKey]*instance{},
		retired:    map[string]*mwTotals{},
		retiredIDs: map[instKey]time.Time{},
		lastReport: map[string]time.Time{},
		series:     map[string]int{},
		rejected:   map[string]uint64{reasonMalformed: 0, reasonTooLarge: 0, reasonUnauthorized: 0, reasonUnsupported: 0, reasonCardinality: 0},
	}
}

// Rejection reasons, the label values of edgecanary_sidecar_reports_rejected_total.
const (
	reasonMalformed    = "malformed"
	reasonTooLarge     = "too_large"
	reasonUnauthorized = "unauthorized"
	reasonUnsupported  = "unsupported"
	reasonCardinality  = "cardinality"
)

func (s *store) reject(reason string) {
	s.mu.Lock()
	s.rejected[reason]++
	s.mu.Unlock()
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// seriesKeys lists the series keys of a report, each with the number of
// series it publishes.
func seriesKeys(r *report) map[string]int {
	keys := map[string]int{}
	for _, m := range r.Middlewares {
		keys["m\x00"+m.Name] = seriesPerMiddleware
		for _, v := range m.Versions {
			keys["v\x00"+m.Name+"\x00"+v.Name] = seriesPerVersion
			keys["h\x00"+m.Name+"\x00"+v.Name] = len(m.Buckets) + seriesPerHistogram
			for _, q := range v.Requests {
				keys[fmt.Sprintf("r\x00%s\x00%s\x00%d\x00%s", m.Name, v.Name, q.Code, q.Method)] = 1
			}
		}
		for _, f := range m.Fallbacks {
			keys["f\x00"+m.Name+"\x00"+f.From+"\x00"+f.To] = 1
		}
	}
	return keys
}

// merge folds a validated report into the store at now. It returns false
// (and counts a cardinality rejection) when accepting it would take the
// series past s.maxSeries.
func (s *store) merge(r *report, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := instKey{r.Source, r.Instance}
	if _, gone := s.retiredIDs[key]; gone {
		s.reports++ // well-formed, but its totals are already folded in
		s.sawSource(r.Source, now)
		return true
	}
	keys := seriesKeys(r)
	add := 0
	for k, n := range keys {
		if old := s.series[k]; n > old {
			add += n - old // new, or a histogram with more bounds
		}
	}
	if _, known := s.lastReport[r.Source]; !known && len(s.lastReport) < maxSources {
		add++
	}
	if s.seriesN+len(s.lastReport)+add > s.maxSeries {
		s.rejected[reasonCardinality]++
		return false
	}
	for k, n := range keys {
		if old := s.series[k]; n > old {
			s.series[k] = n
			s.seriesN += n - old
		}
	}
	inst := s.instances[key]
	if inst == nil {
		if len(s.instances) >= maxInstances {
			s.retireOldest(now)
		}
		inst = &instance{source: r.Source, id: r.Instance, mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}, keys: map[string]bool{}}
		s.instances[key] = inst
	}
	for k := range keys {
		if !inst.keys[k] {
			inst.keys[k] = true
			s.held++
		}
	}
	for s.held > s.maxHeld && s.foldOldestExcept(key, now) {
	}
	newer := r.SentAt >= inst.sentAt
	for i := range r.Middlewares {
		m := &r.Middlewares[i]
		t := inst.mws[m.Name]
		if t == nil {
			t = newMWTotals()
			inst.mws[m.Name] = t
		}
		t.rlRejected = maxU(t.rlRejected, m.RateLimitRejected)
		t.rlDryRun = maxU(t.rlDryRun, m.RateLimitDryRun)
		t.rlEvictions = maxU(t.rlEvictions, m.RateLimitEvicted)
		for _, f := range m.Fallbacks {
			k := fbKey{f.From, f.To}
			t.fallbacks[k] = maxU(t.fallbacks[k], f.Count)
		}
		gauges := map[string]versionGauge{}
		for _, v := range m.Versions {
			for _, q := range v.Requests {
				k := reqKey{v.Name, q.Code, q.Method}
				t.requests[k] = maxU(t.requests[k], q.Count)
			}
			h := t.hist[v.Name]
			if h == nil || !sameBounds(h.bounds, m.Buckets) {
				// A new layout replaces the old one (a counter reset for Prometheus).
				h = &histTotals{bounds: append([]float64(nil), m.Buckets...), counts: make([]uint64, len(m.Buckets)+1)}
				t.hist[v.Name] = h
			}
			var total uint64
			for i, c := range v.Hist {
				h.counts[i] = maxU(h.counts[i], c)
				total += c
			}
			if v.SumSeconds > h.sum {
				h.sum = v.SumSeconds
			}
			tr := t.transitions[v.Name]
			for i := range tr {
				tr[i] = maxU(tr[i], v.Transitions[i])
			}
			t.transitions[v.Name] = tr
			gauges[v.Name] = versionGauge{state: v.State, weight: v.Weight, primary: v.Primary, configured: v.Configured}
		}
		if newer {
			inst.gauges[m.Name] = gauges
		}
	}
	if newer {
		inst.sentAt = r.SentAt
	}
	inst.received = now
	s.sawSource(r.Source, now)
	s.reports++
	return true
}

// sawSource records a report from source at now, forgetting the source
// heard from least recently when maxSources are held.
func (s *store) sawSource(source string, now time.Time) {
	if _, ok := s.lastReport[source]; !ok && len(s.lastReport) >= maxSources {
		var oldest string
		var oldestT time.Time
		for src, t := range s.lastReport {
			if oldest == "" || t.Before(oldestT) {
				oldest, oldestT = src, t
			}
		}
		delete(s.lastReport, oldest)
	}
	s.lastReport[source] = now
}

// retire folds instances silent for retireAfter into the retired totals, and
// forgets the sources silent that long.
func (s *store) retire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, inst := range s.instances {
		if now.Sub(inst.received) > retireAfter {
			s.fold(k, inst, now)
		}
	}
	for src, t := range s.lastReport {
		if now.Sub(t) > retireAfter {
			delete(s.lastReport, src)
		}
	}
}

func (s *store) retireOldest(now time.Time) {
	s.foldOldestExcept(instKey{}, now)
}

// foldOldestExcept folds the instance heard from least recently, other than
// keep, into the retired totals. It reports whether there was one.
func (s *store) foldOldestExcept(keep instKey, now time.Time) bool {
	var oldest *instance
	var oldestKey instKey
	for k, inst := range s.instances {
		if k != keep && (oldest == nil || inst.received.Before(oldest.received)) {
			oldest, oldestKey = inst, k
		}
	}
	if oldest == nil {
		return false
	}
	s.fold(oldestKey, oldest, now)
	return true
}

func (s *store) fold(k instKey, inst *instance, now time.Time) {
	for name, t := range inst.mws {
		r := s.retired[name]
		if r == nil {
			r = newMWTotals()
			s.retired[name] = r
		}
		addTotals(r, t)
	}
	delete(s.instances, k)
	s.held -= len(inst.keys)
	if len(s.retiredIDs) >= maxRetiredIDs {
		var oldK instKey
		var oldT time.Time
		for rk, rt := range s.retiredIDs {
			if oldT.IsZero() || rt.Before(oldT) {
				oldK, oldT = rk, rt
			}
		}
		delete(s.retiredIDs, oldK)
	}
	s.retiredIDs[k] = now
}

// addTotals adds src into dst.
func addTotals(dst, src *mwTotals) {
	for k, v := range src.requests {
		dst.requests[k] += v
	}
	for n, h := range src.hist {
		d := dst.hist[n]
		if d == nil || !sameBounds(d.bounds, h.bounds) {
			if d != nil && d.total() > h.total() {
				continue // keep the larger of two incompatible layouts
			}
			d = &histTotals{bounds: h.bounds, counts: make([]uint64, len(h.counts))}
			dst.hist[n] = d
		}
		for i, c := range h.counts {
			d.counts[i] += c
		}
		d.sum += h.sum
	}
	dst.rlRejected += src.rlRejected
	dst.rlDryRun += src.rlDryRun
	dst.rlEvictions += src.rlEvictions
	for k, v := range src.fallbacks {
		dst.fallbacks[k] += v
	}
	for n, tr := range src.transitions {
		d := dst.transitions[n]
		for i := range d {
			d[i] += tr[i]
		}
		dst.transitions[n] = d
	}
}

func (h *histTotals) total() uint64 {
	var n uint64
	for _, c := range h.counts {
		n += c
	}
	return n
}

func sameBounds(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// view is everything published, summed over instances.
type view struct {
	mws        map[string]*mwTotals
	gauges     map[string]map[string]versionGauge
	lastReport map[string]time.Time
	reports    uint64
	rejected   map[string]uint64
}

// snapshot sums the store at now.
func (s *store) snapshot(now time.Time) view {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := view{mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}, lastReport: map[string]time.Time{}, rejected: map[string]uint64{}, reports: s.reports}
	for name, t := range s.retired {
		d := newMWTotals()
		addTotals(d, t)
		v.mws[name] = d
	}
	// Instances in a stable order, so incompatible histogram layouts resolve
	// the same way at every scrape.
	keys := make([]instKey, 0, len(s.instances))
	for k := range s.instances {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].source < keys[j].source || keys[i].source == keys[j].source && keys[i].id < keys[j].id
	})
	freshest := map[string]int64{}
	for _, k := range keys {
		inst := s.instances[k]
		for name, t := range inst.mws {
			d := v.mws[name]
			if d == nil {
				d = newMWTotals()
				v.mws[name] = d
			}
			addTotals(d, t)
		}
		if now.Sub(inst.received) > gaugeStaleAfter {
			continue
		}
		for name, g := range inst.gauges {
			if inst.sentAt >= freshest[name] {
				freshest[name] = inst.sentAt
				v.gauges[name] = g
			}
		}
	}
	for src, t := range s.lastReport {
		v.lastReport[src] = t
	}
	for r, n := range s.rejected {
		v.rejected[r] = n
	}
	return v
}
