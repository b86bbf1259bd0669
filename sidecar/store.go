package main

import (
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

const (
	retireAfter       = 10 * time.Minute
	gaugeStaleAfter   = 2 * time.Minute
	maxInstances      = 1024
	maxRetiredIDs     = 10000
	maxMiddlewares    = 1000
	maxVersionsPerMW  = 64
	maxRequestSeries  = 20000
	historySamples    = 120
	historyResolution = time.Second
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
}

type instKey struct{ source, id string }

type store struct {
	mu         sync.Mutex
	instances  map[instKey]*instance
	retired    map[string]*mwTotals
	retiredIDs map[instKey]time.Time
	lastReport map[string]time.Time // by source
	series     int                  // request series held, for the cardinality bound

	reports  uint64
	rejected map[string]uint64

	history []snapshotSample // for the status page
}

func newStore() *store {
	return &store{
		instances:  map[instKey]*instance{},
		retired:    map[string]*mwTotals{},
		retiredIDs: map[instKey]time.Time{},
		lastReport: map[string]time.Time{},
		rejected:   map[string]uint64{reasonMalformed: 0, reasonTooLarge: 0, reasonUnauthorized: 0, reasonUnsupported: 0},
	}
}

// Rejection reasons, the label values of edgecanary_sidecar_reports_rejected_total.
const (
	reasonMalformed    = "malformed"
	reasonTooLarge     = "too_large"
	reasonUnauthorized = "unauthorized"
	reasonUnsupported  = "unsupported"
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

// merge folds a validated report into the store at now. It returns false
// (and counts a malformed rejection) when accepting it would exceed the
// cardinality bounds.
func (s *store) merge(r *report, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := instKey{r.Source, r.Instance}
	if _, gone := s.retiredIDs[key]; gone {
		s.reports++ // well-formed, but its totals are already folded in
		s.lastReport[r.Source] = now
		return true
	}
	inst := s.instances[key]
	if inst == nil {
		if len(s.instances) >= maxInstances {
			s.retireOldest()
		}
		inst = &instance{source: r.Source, id: r.Instance, mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}}
		s.instances[key] = inst
	}
	if s.newMiddlewares(inst, r) > maxMiddlewares || s.series+s.newSeries(inst, r) > maxRequestSeries {
		s.rejected[reasonMalformed]++
		return false
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
				if _, ok := t.requests[k]; !ok {
					s.series++
				}
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
	s.lastReport[r.Source] = now
	s.reports++
	return true
}

func (s *store) newMiddlewares(inst *instance, r *report) int {
	names := map[string]bool{}
	for _, i := range s.instances {
		for n := range i.mws {
			names[n] = true
		}
	}
	for n := range s.retired {
		names[n] = true
	}
	for _, m := range r.Middlewares {
		names[m.Name] = true
	}
	return len(names)
}

func (s *store) newSeries(inst *instance, r *report) int {
	n := 0
	for _, m := range r.Middlewares {
		t := inst.mws[m.Name]
		for _, v := range m.Versions {
			for _, q := range v.Requests {
				if t == nil {
					n++
					continue
				}
				if _, ok := t.requests[reqKey{v.Name, q.Code, q.Method}]; !ok {
					n++
				}
			}
		}
	}
	return n
}

// retire folds instances silent for retireAfter into the retired totals.
func (s *store) retire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, inst := range s.instances {
		if now.Sub(inst.received) > retireAfter {
			s.fold(k, inst, now)
		}
	}
}

func (s *store) retireOldest() {
	var oldest *instance
	var oldestKey instKey
	for k, inst := range s.instances {
		if oldest == nil || inst.received.Before(oldest.received) {
			oldest, oldestKey = inst, k
		}
	}
	if oldest != nil {
		s.fold(oldestKey, oldest, time.Now())
	}
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
