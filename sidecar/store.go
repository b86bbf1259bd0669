package main

import (
	"fmt"
	"github.com/edgecanary/edgecanary/wire"
	"sort"
	"strings"
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
// (ingest.maxSeries, default defaultMaxSeries), whatever its kind. The series
// of a report that do not fit are left out, and the report is counted once
// as a rejection for reason "cardinality"; the rest of it is merged. Counter series are kept while the sidecar runs
// (their totals must not go down), so a new Traefik process reporting the
// same series as the one it replaced adds nothing, after any number of
// restarts. The per-source last-report gauge is the exception: at most
// maxSources are kept, the oldest dropped first, and a source silent for
// retireAfter is forgotten. Memory is bounded too: the instances together
// hold at most heldPerSeries × the cap series entries, and at most
// maxInstances processes. A live process is never folded to make room (its
// later reports would be ignored): past either bound, what does not fit
// waits ("cardinality") until retire folds the processes silent for
// retireAfter, and is then merged in full, since reports are cumulative. At
// most maxRetiredIDs ids are kept.
const (
	retireAfter       = 10 * time.Minute
	gaugeStaleAfter   = 2 * time.Minute
	maxInstances      = 1024
	maxRetiredIDs     = 10000
	maxMiddlewares    = 1000 // in one report
	maxVersionsPerMW  = 64
	defaultMaxSeries  = 50000
	maxSources        = 1024
	heldPerSeries     = 16
	historySamples    = 120
	historyResolution = time.Second
)

// Series per key, as the collector publishes them.
const (
	seriesPerMiddleware = 3 // the three rate-limit counters
	seriesPerStore      = 4 // a shared rate-limit store's errors, up, lease and leased tokens
	seriesPerRollout    = 5 // a rollout's step, state and checks by result
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
	requests      map[reqKey]uint64
	hist          map[string]*histTotals
	rlRejected    uint64
	rlDryRun      uint64
	rlEvictions   uint64
	storeErrors   uint64
	storeLeased   uint64 // tokens taken from the store
	storeReturned uint64 // tokens given back to the store unspent
	fallbacks     map[fbKey]uint64
	transitions   map[string][3]uint64
	// rolloutChecks are the rollout's checks by result: pass, fail, inconclusive.
	rolloutChecks [3]uint64
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
	storeUp  map[string]bool                    // middleware -> its rate-limit store answered, for those with one
	lease    map[string]int64                   // middleware -> the largest lease of one client, for those with a store
	rollout  map[string]wire.Rollout            // middleware -> its rollout, for those with one
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

// Series keys: one per thing the collector publishes series for.
func mwKey(mw string) string         { return "m\x00" + mw }
func rolloutKey(mw string) string    { return "o\x00" + mw }
func versionKey(mw, v string) string { return "v\x00" + mw + "\x00" + v }
func histKey(mw, v string) string    { return "h\x00" + mw + "\x00" + v }
func fallbackKey(mw string, f reportFallback) string {
	return "f\x00" + mw + "\x00" + f.From + "\x00" + f.To
}
func requestKey(mw, v string, q reportRequest) string {
	return fmt.Sprintf("r\x00%s\x00%s\x00%d\x00%s", mw, v, q.Code, q.Method)
}

// seriesKeys lists the series keys of a report, each with the number of
// series it publishes.
func seriesKeys(r *report) map[string]int {
	keys := map[string]int{}
	for _, m := range r.Middlewares {
		keys[mwKey(m.Name)] = middlewareSeries(m)
		if m.Rollout != nil {
			keys[rolloutKey(m.Name)] = seriesPerRollout
		}
		for _, v := range m.Versions {
			keys[versionKey(m.Name, v.Name)] = seriesPerVersion
			keys[histKey(m.Name, v.Name)] = len(m.Buckets) + seriesPerHistogram
			for _, q := range v.Requests {
				keys[requestKey(m.Name, v.Name, q)] = 1
			}
		}
		for _, f := range m.Fallbacks {
			keys[fallbackKey(m.Name, f)] = 1
		}
	}
	return keys
}

// middlewareSeries is the number of a middleware's own series.
func middlewareSeries(m reportMWStat) int {
	if m.RateLimitStore != "" {
		return seriesPerMiddleware + seriesPerStore
	}
	return seriesPerMiddleware
}

// admitSeries adds a report's new series keys to the store while they fit
// under maxSeries, and returns how many did not fit. The order follows what
// the collector needs to publish a series: a middleware's own series, then
// each version's, then its histogram and request counts, then fallbacks. A
// report is never rejected for its series: what the store already publishes
// keeps being updated, so a new series near the cap (a canary starting to
// answer 503) does not freeze the rest of that Traefik's figures.
func (s *store) admitSeries(r *report) int {
	budget := s.maxSeries - s.seriesN - len(s.lastReport)
	if _, known := s.lastReport[r.Source]; !known && len(s.lastReport) < maxSources {
		budget-- // the source's own timestamp
	}
	dropped := 0
	admit := func(key string, n int) bool {
		old := s.series[key]
		if n <= old {
			return true
		}
		if n-old > budget {
			dropped++
			return false
		}
		s.series[key] = n
		s.seriesN += n - old
		budget -= n - old
		return true
	}
	for _, m := range r.Middlewares {
		if !admit(mwKey(m.Name), middlewareSeries(m)) {
			continue
		}
		if m.Rollout != nil {
			admit(rolloutKey(m.Name), seriesPerRollout)
		}
		for _, v := range m.Versions {
			if !admit(versionKey(m.Name, v.Name), seriesPerVersion) {
				continue
			}
			admit(histKey(m.Name, v.Name), len(m.Buckets)+seriesPerHistogram)
			for _, q := range v.Requests {
				admit(requestKey(m.Name, v.Name, q), 1)
			}
		}
		for _, f := range m.Fallbacks {
			admit(fallbackKey(m.Name, f), 1)
		}
	}
	return dropped
}

// published reports whether the store publishes key with n series.
func (s *store) published(key string, n int) bool { return s.series[key] >= n }

// merge folds a validated report into the store at now. Series that do not
// fit under maxSeries are left out (the report counts once as a cardinality
// rejection). It returns false, and counts a cardinality rejection, only for
// a new Traefik process that the instances' memory bound cannot hold while
// every process it holds is live.
func (s *store) merge(r *report, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := instKey{r.Source, r.Instance}
	if _, gone := s.retiredIDs[key]; gone {
		s.reports++ // well-formed, but its totals are already folded in
		s.sawSource(r.Source, now)
		return true
	}
	inst := s.instances[key]
	if inst == nil {
		// A live process is never folded to make room (its later reports
		// would be ignored): when maxInstances are held, the new one waits
		// until retire folds the processes silent for retireAfter.
		if len(s.instances) >= maxInstances {
			s.rejected[reasonCardinality]++
			return false
		}
		inst = &instance{source: r.Source, id: r.Instance, mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}, storeUp: map[string]bool{}, lease: map[string]int64{}, rollout: map[string]wire.Rollout{}, keys: map[string]bool{}}
		s.instances[key] = inst
	}
	dropped := s.admitSeries(r)
	// The instance holds the published series it reports, while the
	// instances' entries stay within maxHeld; the others wait, and are
	// merged in full (reports are cumulative) once room frees up.
	for k, n := range seriesKeys(r) {
		if inst.keys[k] || !s.published(k, n) {
			continue
		}
		if s.held >= s.maxHeld {
			dropped++
			continue
		}
		inst.keys[k] = true
		s.held++
	}
	if dropped > 0 {
		s.rejected[reasonCardinality]++
	}
	newer := r.SentAt >= inst.sentAt
	for i := range r.Middlewares {
		m := &r.Middlewares[i]
		if !inst.keys[mwKey(m.Name)] {
			continue
		}
		t := inst.mws[m.Name]
		if t == nil {
			t = newMWTotals()
			inst.mws[m.Name] = t
		}
		t.rlRejected = maxU(t.rlRejected, m.RateLimitRejected)
		t.rlDryRun = maxU(t.rlDryRun, m.RateLimitDryRun)
		t.rlEvictions = maxU(t.rlEvictions, m.RateLimitEvicted)
		t.storeErrors = maxU(t.storeErrors, m.RateLimitStoreErrors)
		t.storeLeased = maxU(t.storeLeased, m.RateLimitLeased)
		t.storeReturned = maxU(t.storeReturned, m.RateLimitReturned)
		if newer {
			if m.RateLimitStore != "" {
				inst.storeUp[m.Name] = m.RateLimitStoreUp
				inst.lease[m.Name] = m.RateLimitLease
			} else {
				delete(inst.storeUp, m.Name)
				delete(inst.lease, m.Name)
			}
			if ro := m.Rollout; ro != nil && wire.ValidVersionName(ro.Version) && inst.keys[rolloutKey(m.Name)] {
				inst.rollout[m.Name] = boundRollout(*ro)
			} else {
				delete(inst.rollout, m.Name)
			}
		}
		if ro := m.Rollout; ro != nil {
			for i := range t.rolloutChecks {
				t.rolloutChecks[i] = maxU(t.rolloutChecks[i], ro.Checks[i])
			}
		}
		for _, f := range m.Fallbacks {
			if inst.keys[fallbackKey(m.Name, f)] {
				k := fbKey{f.From, f.To}
				t.fallbacks[k] = maxU(t.fallbacks[k], f.Count)
			}
		}
		gauges := map[string]versionGauge{}
		for _, v := range m.Versions {
			if !inst.keys[versionKey(m.Name, v.Name)] {
				continue
			}
			for _, q := range v.Requests {
				if inst.keys[requestKey(m.Name, v.Name, q)] {
					k := reqKey{v.Name, q.Code, q.Method}
					t.requests[k] = maxU(t.requests[k], q.Count)
				}
			}
			if inst.keys[histKey(m.Name, v.Name)] && s.published(histKey(m.Name, v.Name), len(m.Buckets)+seriesPerHistogram) {
				h := t.hist[v.Name]
				if h == nil || !sameBounds(h.bounds, m.Buckets) {
					// A new layout replaces the old one (a counter reset for Prometheus).
					h = &histTotals{bounds: append([]float64(nil), m.Buckets...), counts: make([]uint64, len(m.Buckets)+1)}
					t.hist[v.Name] = h
				}
				for i, c := range v.Hist {
					h.counts[i] = maxU(h.counts[i], c)
				}
				if v.SumSeconds > h.sum {
					h.sum = v.SumSeconds
				}
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
// heard from least recently when maxSources are held or the series are at
// the cap: a last-report timestamp never takes the series past it.
func (s *store) sawSource(source string, now time.Time) {
	if _, ok := s.lastReport[source]; !ok && len(s.lastReport) > 0 && (len(s.lastReport) >= maxSources || s.seriesN+len(s.lastReport) >= s.maxSeries) {
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
	dst.storeErrors += src.storeErrors
	dst.storeLeased += src.storeLeased
	dst.storeReturned += src.storeReturned
	for i, n := range src.rolloutChecks {
		dst.rolloutChecks[i] += n
	}
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
	storeUp    map[string]bool         // middleware -> every fresh instance with a store reached it
	lease      map[string]int64        // middleware -> the largest lease of the fresh instances
	rollout    map[string]wire.Rollout // middleware -> the furthest rollout of the fresh instances (see furtherRollout)
	lastReport map[string]time.Time
	reports    uint64
	rejected   map[string]uint64
	// Each held Traefik process's totals ("source\x00id" -> middleware ->
	// totals), copies: the history takes each process's increase, so a
	// process seen for the first time is a baseline, as a new series is for
	// rate(). The retired totals are in none: they no longer increase.
	instances map[string]map[string]*mwTotals
}

// snapshot sums the store at now, with each process's totals for the
// history.
func (s *store) snapshot(now time.Time) view { return s.snapshotAt(now, true) }

// sums is snapshot without each process's totals: /metrics and the table.
func (s *store) sums(now time.Time) view { return s.snapshotAt(now, false) }

func (s *store) snapshotAt(now time.Time, perInstance bool) view {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := view{mws: map[string]*mwTotals{}, gauges: map[string]map[string]versionGauge{}, storeUp: map[string]bool{}, lease: map[string]int64{}, rollout: map[string]wire.Rollout{}, lastReport: map[string]time.Time{}, rejected: map[string]uint64{}, reports: s.reports}
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
	worst := map[string]map[string]int{} // middleware -> version -> the worst breaker state of the fresh processes
	if perInstance {
		v.instances = make(map[string]map[string]*mwTotals, len(keys))
	}
	for _, k := range keys {
		inst := s.instances[k]
		var copies map[string]*mwTotals
		if perInstance {
			copies = make(map[string]*mwTotals, len(inst.mws))
			v.instances[k.source+"\x00"+k.id] = copies
		}
		for name, t := range inst.mws {
			if perInstance {
				c := newMWTotals()
				addTotals(c, t)
				copies[name] = c
			}
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
		for name, up := range inst.storeUp {
			if was, seen := v.storeUp[name]; !seen || was {
				v.storeUp[name] = up
			}
			if n := inst.lease[name]; n > v.lease[name] {
				v.lease[name] = n
			}
		}
		for name, ro := range inst.rollout {
			if was, seen := v.rollout[name]; !seen || furtherRollout(ro, was) {
				v.rollout[name] = ro
			}
		}
		for name, g := range inst.gauges {
			if inst.sentAt >= freshest[name] {
				freshest[name] = inst.sentAt
				v.gauges[name] = g
			}
			w := worst[name]
			if w == nil {
				w = map[string]int{}
				worst[name] = w
			}
			for vn, vg := range g {
				w[vn] = max(w[vn], vg.state)
			}
		}
	}
	// The breaker state is the worst of the fresh processes': one replica's
	// open breaker refuses or diverts its share of the users.
	for name, g := range v.gauges {
		c := make(map[string]versionGauge, len(g)) // the instance's map is the store's
		for vn, vg := range g {
			vg.state = max(vg.state, worst[name][vn])
			c[vn] = vg
		}
		v.gauges[name] = c
	}
	for src, t := range s.lastReport {
		v.lastReport[src] = t
	}
	for r, n := range s.rejected {
		v.rejected[r] = n
	}
	return v
}

// furtherRollout reports whether a is further than b: a higher state
// (rolled back above complete above progressing above waiting), then a
// higher step. Replicas agree on the step; one that rolled back first shows.
func furtherRollout(a, b wire.Rollout) bool {
	return a.State > b.State || a.State == b.State && a.Step > b.Step
}

// boundRollout keeps what a report says of a rollout within the plugin's
// own bounds (100 steps, 32 checks, short reasons), whatever it sent.
func boundRollout(ro wire.Rollout) wire.Rollout {
	if len(ro.StepWeights) > 100 {
		ro.StepWeights = ro.StepWeights[:100]
	}
	ro.StepWeights = append([]float64(nil), ro.StepWeights...)
	if len(ro.Recent) > 32 {
		ro.Recent = ro.Recent[len(ro.Recent)-32:]
	}
	recent := make([]wire.Check, len(ro.Recent))
	for i, c := range ro.Recent {
		if len(c.Reason) > 200 {
			c.Reason = c.Reason[:200]
		}
		// A copy: a substring would keep the report's whole string alive.
		c.Reason = strings.Clone(c.Reason)
		switch c.Result {
		case "pass", "fail", "inconclusive":
		default:
			c.Result = "inconclusive"
		}
		recent[i] = c
	}
	ro.Recent = recent
	if ro.State < wire.RolloutWaiting || ro.State > wire.RolloutRolledBack {
		ro.State = wire.RolloutWaiting
	}
	return ro
}
