package main

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// The history keeps, for each middleware, the last historyPoints samples of
// every version's figures, taken every step (--status.step, default 5 s:
// 15 minutes). A sample reads each Traefik process's totals and keeps, per
// process, the increase since the previous sample as rate() computes it for
// that process's series: a counter that went down restarted from zero, and its
// increase is its new value; a process seen for the first time is a baseline
// (a replica that joins late is no spike). The increases are then summed. A
// series' first sample has no increase (rate() needs two samples).
//
// Memory is fixed: each series is an array of historyPoints points, every
// series shares one ring of sample instants, and at most
// maxHistoryMiddlewares middlewares with maxHistoryVersions versions each are
// tracked. A middleware (a version) is tracked from its first sample in a
// fresh report; at the cap, it takes the place of the one idle longest, if
// one was idle at this sample, else it is left out and counted as untracked.
// One idle (no fresh report and no counter moved) for a whole window is
// dropped. TestHistoryMemory measures the bytes per series.

const (
	historyPoints         = 180
	defaultHistoryStep    = 5 * time.Second
	minHistoryStep        = time.Second
	maxHistoryStep        = time.Minute
	maxHistoryMiddlewares = 32
	maxHistoryVersions    = 8
)

// Circuit states of a point; stateNone: no report named the version.
const stateNone = -1

// histPoint is one version's figures over one step.
type histPoint struct {
	// Increases over the step (when rated): requests, 5xx among them,
	// requests the breaker refused (counted in the requests but not in the
	// latency histogram), and requests that fell back from this version.
	requests, errors, refused, fallbacks uint32
	p50, p95, p99                        float32 // seconds; NaN: no request observed
	weight                               float32 // 0 to 1; NaN: not configured
	state                                int8    // the worst breaker state during the step, or stateNone
	rated                                bool    // the counts are an increase since the previous sample
}

// versionTotals are a version's cumulative totals at one sample.
type versionTotals struct {
	requests, errors, fallbacks uint64
	transitions                 [3]uint64
	bounds                      []float64 // shared with the snapshot, never written
	cum                         []uint64  // cumulative bucket counts, +Inf last
}

// versionSeries is one version's history.
type versionSeries struct {
	points     [historyPoints]histPoint
	primary    bool
	prev       map[string]*versionTotals // by Traefik process, at the previous sample
	lastActive uint64
}

// mwSeries is one middleware's history.
type mwSeries struct {
	versions          map[string]*versionSeries // at most maxHistoryVersions
	rejected, dryRun  [historyPoints]uint32     // 429s and dry-run 429s per step
	rated             [historyPoints]bool
	prevRateLimited   map[string][2]uint64 // by Traefik process: 429s and dry-run 429s at the previous sample
	rollout           *wire.Rollout        // the freshest report's, cleaned; never written
	lastActive        uint64
	versionsUntracked int
}

// history is the sampled history of every tracked middleware.
type history struct {
	mu        sync.Mutex
	step      time.Duration
	times     [historyPoints]int64  // Unix milliseconds of each sample
	elapsed   [historyPoints]uint32 // milliseconds since the sample before; 0 for the first
	head      int                   // where the next sample goes
	n         int                   // samples held
	seq       uint64                // samples taken
	lastAt    time.Time             // the last sample's instant, with its monotonic reading if any
	mws       map[string]*mwSeries  // at most maxHistoryMiddlewares
	untracked int                   // middlewares and versions left out at the last sample
}

func newHistory(step time.Duration) *history {
	return &history{step: step, mws: map[string]*mwSeries{}}
}

// increase is the increase of a counter from prev to cur, as rate() sees it:
// a counter that went down was reset to zero in between.
func increase(prev, cur uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	return cur
}

func clampU32(n uint64) uint32 {
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// record takes a sample of v at now. The time between samples is read on the
// monotonic clock when now has it (time.Now), so a wall clock stepped back
// changes no rate. A wall clock stepped back moves the held samples back with
// it, so the instants stay in order and nothing freezes; without a monotonic
// reading, the sample after such a step has counts but no rate (its length is
// unknown). So has a sample whose wall time ran ahead of the monotonic clock by
// more than a step (a wall clock stepped forth, or the host suspended, which
// the monotonic clock does not count): the increase may span either. A sample
// at the same instant as the last is ignored.
func (h *history) record(v view, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := now.UnixMilli()
	var elapsed uint32
	if h.n > 0 {
		last := h.times[(h.head+historyPoints-1)%historyPoints]
		d := now.Sub(h.lastAt).Milliseconds() // monotonic when both readings have it
		if d == 0 {
			return
		}
		if d > 0 && ms-last-d <= h.step.Milliseconds() {
			elapsed = clampU32(uint64(d))
		}
		if ms <= last {
			// The wall clock went back: the held instants were ahead of it.
			shift := ms - last - max(d, h.step.Milliseconds())
			for i := 0; i < h.n; i++ {
				h.times[(h.head-1-i+historyPoints)%historyPoints] += shift
			}
		}
	}
	h.lastAt = now
	idx := h.head
	h.times[idx], h.elapsed[idx] = ms, elapsed
	h.head = (h.head + 1) % historyPoints
	if h.n < historyPoints {
		h.n++
	}
	h.seq++
	for _, m := range h.mws {
		m.clear(idx)
	}
	names := make([]string, 0, len(v.mws)+len(v.gauges))
	for name := range v.mws {
		names = append(names, name)
	}
	for name := range v.gauges {
		if v.mws[name] == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	h.untracked = 0
	// The tracked middlewares are sampled first, the newcomers after them:
	// a newcomer at the cap judges idleness from a completed sample, and
	// never takes the place of one active at it.
	var newcomers []string
	for _, name := range names {
		m := h.mws[name]
		if m == nil {
			if _, live := v.gauges[name]; live { // only a fresh report starts a history
				newcomers = append(newcomers, name)
			}
			continue
		}
		m.record(idx, h.seq, v, name)
		h.untracked += m.versionsUntracked
	}
	for _, name := range newcomers {
		m := h.track(name)
		if m == nil {
			h.untracked++
			continue
		}
		m.record(idx, h.seq, v, name)
		h.untracked += m.versionsUntracked
	}
	for name, m := range h.mws {
		if h.seq-m.lastActive >= historyPoints {
			delete(h.mws, name)
		}
	}
}

// track starts the history of a middleware, in place of the one idle longest
// when maxHistoryMiddlewares are tracked. It returns nil when none is idle.
func (h *history) track(name string) *mwSeries {
	if len(h.mws) >= maxHistoryMiddlewares {
		victim, ok := idlest(h.mws, h.seq, func(m *mwSeries) uint64 { return m.lastActive })
		if !ok {
			return nil
		}
		delete(h.mws, victim)
	}
	m := &mwSeries{versions: map[string]*versionSeries{}, lastActive: h.seq}
	h.mws[name] = m
	return m
}

// idlest returns the key whose last activity is oldest, among those not
// active at seq (ties: the first name).
func idlest[T any](m map[string]T, seq uint64, last func(T) uint64) (string, bool) {
	var best string
	var bestAt uint64
	found := false
	for k, v := range m {
		at := last(v)
		if at >= seq {
			continue
		}
		if !found || at < bestAt || at == bestAt && k < best {
			best, bestAt, found = k, at, true
		}
	}
	return best, found
}

// clear marks the slot idx empty in every series of m.
func (m *mwSeries) clear(idx int) {
	m.rejected[idx], m.dryRun[idx], m.rated[idx] = 0, 0, false
	for _, vs := range m.versions {
		vs.points[idx] = histPoint{state: stateNone, p50: nan32, p95: nan32, p99: nan32, weight: nan32}
	}
}

// nan32 marks a figure with no value.
var nan32 = float32(math.NaN())

// record fills slot idx of m from the view.
func (m *mwSeries) record(idx int, seq uint64, v view, name string) {
	t := v.mws[name]
	if t == nil {
		t = newMWTotals()
	}
	gauges := v.gauges[name]
	m.rollout = nil
	if ro, ok := v.rollout[name]; ok {
		m.rollout = cleanRollout(&ro)
		m.rollout.Checks = t.rolloutChecks // summed over every process, as edgecanary_rollout_checks_total
	}
	active := len(gauges) > 0
	// Each process's increase: one seen for the first time is a baseline.
	insts := v.instancesOf(name)
	var rej, dry uint64
	rated := false
	prevRL := make(map[string][2]uint64, len(insts))
	for id, it := range insts {
		if p, ok := m.prevRateLimited[id]; ok {
			rej += increase(p[0], it.rlRejected)
			dry += increase(p[1], it.rlDryRun)
			rated = true
		}
		prevRL[id] = [2]uint64{it.rlRejected, it.rlDryRun}
	}
	m.prevRateLimited = prevRL
	if rated {
		m.rejected[idx], m.dryRun[idx], m.rated[idx] = clampU32(rej), clampU32(dry), true
		active = active || rej > 0 || dry > 0
	}

	totals := map[string]map[string]*versionTotals{} // version -> process -> totals
	for id, it := range insts {
		for vn, vt := range versionTotalsOf(it) {
			if totals[vn] == nil {
				totals[vn] = map[string]*versionTotals{}
			}
			totals[vn][id] = vt
		}
	}
	names := make([]string, 0, len(totals)+len(gauges))
	for vn := range totals {
		names = append(names, vn)
	}
	for vn := range gauges {
		if _, ok := totals[vn]; !ok {
			names = append(names, vn)
		}
	}
	sort.Strings(names)
	m.versionsUntracked = 0
	// As for middlewares: the tracked versions first, then the newcomers,
	// which only take the place of one idle at this completed sample.
	sampleVersion := func(vn string, vs *versionSeries) {
		var gp *versionGauge
		if g, live := gauges[vn]; live {
			gp = &g
		}
		if vs.record(idx, totals[vn], gp) {
			vs.lastActive = seq
			active = true
		}
	}
	var newcomers []string
	for _, vn := range names {
		vs := m.versions[vn]
		if vs == nil {
			if _, live := gauges[vn]; live {
				newcomers = append(newcomers, vn)
			}
			continue
		}
		sampleVersion(vn, vs)
	}
	for _, vn := range newcomers {
		if len(m.versions) >= maxHistoryVersions {
			victim, ok := idlest(m.versions, seq, func(s *versionSeries) uint64 { return s.lastActive })
			if !ok {
				m.versionsUntracked++
				continue
			}
			delete(m.versions, victim)
		}
		vs := &versionSeries{lastActive: seq}
		for i := range vs.points {
			vs.points[i] = histPoint{state: stateNone, p50: nan32, p95: nan32, p99: nan32, weight: nan32}
		}
		m.versions[vn] = vs
		sampleVersion(vn, vs)
	}
	for vn, vs := range m.versions {
		if seq-vs.lastActive >= historyPoints {
			delete(m.versions, vn)
		}
	}
	if active {
		m.lastActive = seq
	}
}

// versionTotalsOf sums a middleware's totals by version.
func versionTotalsOf(t *mwTotals) map[string]*versionTotals {
	out := map[string]*versionTotals{}
	get := func(name string) *versionTotals {
		vt := out[name]
		if vt == nil {
			vt = &versionTotals{}
			out[name] = vt
		}
		return vt
	}
	for k, n := range t.requests {
		vt := get(k.version)
		vt.requests += n
		if k.code >= 500 && k.code <= 599 {
			vt.errors += n
		}
	}
	for k, n := range t.fallbacks {
		get(k.from).fallbacks += n
	}
	for name, tr := range t.transitions {
		get(name).transitions = tr
	}
	for name, ht := range t.hist {
		vt := get(name)
		vt.bounds = ht.bounds
		vt.cum = make([]uint64, len(ht.counts))
		var c uint64
		for i, n := range ht.counts {
			c += n
			vt.cum[i] = c
		}
	}
	return out
}

// instancesOf returns each Traefik process's totals of the middleware. A view
// without them (built by hand) is one process: its sums.
func (v *view) instancesOf(name string) map[string]*mwTotals {
	out := map[string]*mwTotals{}
	if v.instances == nil {
		t := v.mws[name]
		if t == nil {
			t = newMWTotals()
		}
		out[""] = t
		return out
	}
	for id, mws := range v.instances {
		if t := mws[name]; t != nil {
			out[id] = t
		}
	}
	return out
}

// layoutDelta is the increase of the histograms of one bucket layout.
type layoutDelta struct {
	bounds []float64
	delta  []float64
}

// record fills slot idx from the version's totals now, by Traefik process,
// and its gauge (nil: no fresh report names it). Each process's increase is
// taken on its own (one seen for the first time is a baseline, as a new series
// is for rate()), then they are summed; the quantiles are those of the layout
// with the most observations in the step. It reports whether the version was
// active: named by a fresh report, or any request counted since the previous
// sample.
func (vs *versionSeries) record(idx int, curs map[string]*versionTotals, g *versionGauge) bool {
	p := histPoint{state: stateNone, p50: nan32, p95: nan32, p99: nan32, weight: nan32}
	active := g != nil
	if g != nil {
		vs.primary = g.primary
		p.state = int8(g.state)
		if g.configured {
			p.weight = float32(g.weight)
		}
	}
	var reqs, errs, fbs, refused uint64
	var trips [3]uint64
	var layouts []layoutDelta
	rated := false
	for id, cur := range curs {
		prev := vs.prev[id]
		if prev == nil {
			continue
		}
		rated = true
		r := increase(prev.requests, cur.requests)
		reqs += r
		errs += min(increase(prev.errors, cur.errors), r)
		fbs += increase(prev.fallbacks, cur.fallbacks)
		for i := range trips {
			trips[i] += increase(prev.transitions[i], cur.transitions[i])
		}
		delta := histIncrease(prev.bounds, prev.cum, cur.bounds, cur.cum)
		if len(delta) == 0 {
			continue // without a histogram (left out at ingest.maxSeries) refusals are unknown: 0
		}
		obs := uint64(delta[len(delta)-1])
		if r > obs {
			refused += r - obs
		}
		merged := false
		for i := range layouts {
			if sameBounds(layouts[i].bounds, cur.bounds) {
				for j := range delta {
					layouts[i].delta[j] += delta[j]
				}
				merged = true
				break
			}
		}
		if !merged {
			layouts = append(layouts, layoutDelta{cur.bounds, delta})
		}
	}
	if rated {
		p.requests, p.errors, p.fallbacks, p.refused = clampU32(reqs), clampU32(errs), clampU32(fbs), clampU32(refused)
		var best *layoutDelta
		for i := range layouts {
			l := &layouts[i]
			if best == nil || l.delta[len(l.delta)-1] > best.delta[len(best.delta)-1] {
				best = l
			}
		}
		if best != nil {
			p.p50 = float32(bucketQuantile(0.5, best.bounds, best.delta))
			p.p95 = float32(bucketQuantile(0.95, best.bounds, best.delta))
			p.p99 = float32(bucketQuantile(0.99, best.bounds, best.delta))
		}
		// A trip shorter than the step still shows: the worst state entered.
		if trips[2] > 0 {
			p.state = 2
		} else if trips[1] > 0 && p.state < 1 {
			p.state = 1
		}
		p.rated = true
		active = active || reqs > 0
	}
	vs.points[idx] = p
	vs.prev = curs
	return active
}

// histIncrease is the increase of each cumulative bucket, as rate() computes
// it per bucket series (a bucket that went down restarted from zero), made
// monotonic as histogram_quantile does. A changed layout is a reset: the
// increase is the new histogram. Nil when the layout is empty.
func histIncrease(prevBounds []float64, prevCum []uint64, bounds []float64, cum []uint64) []float64 {
	if len(cum) == 0 || len(cum) != len(bounds)+1 {
		return nil
	}
	same := sameBounds(prevBounds, bounds) && len(prevCum) == len(cum)
	out := make([]float64, len(cum))
	for i, c := range cum {
		if same {
			c = increase(prevCum[i], c)
		}
		out[i] = float64(c)
		if i > 0 && out[i] < out[i-1] {
			out[i] = out[i-1]
		}
	}
	return out
}

// bucketQuantile is Prometheus' histogram_quantile over classic buckets
// (promql.BucketQuantile): cum holds the cumulative counts for bounds, then
// +Inf, already monotonic. The quantile falls in the first bucket whose
// count reaches q × total and is interpolated linearly within it (from 0 for
// the first bucket); in the +Inf bucket it is the highest finite bound. NaN
// without observations.
func bucketQuantile(q float64, bounds []float64, cum []float64) float64 {
	if len(bounds) == 0 || len(cum) != len(bounds)+1 {
		return math.NaN()
	}
	total := cum[len(cum)-1]
	if total == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	rank := q * total
	b := sort.Search(len(cum)-1, func(i int) bool { return cum[i] >= rank })
	if b == len(cum)-1 {
		return bounds[len(bounds)-1]
	}
	if b == 0 && bounds[0] <= 0 {
		return bounds[0]
	}
	start, end, count := 0.0, bounds[b], cum[b]
	if b > 0 {
		start = bounds[b-1]
		count -= cum[b-1]
		rank -= cum[b-1]
	}
	return start + (end-start)*(rank/count)
}

// historyDoc is the history in /api/status: every array has one entry per
// sample of Times, oldest first; null where there is no value.
type historyDoc struct {
	StepSeconds   float64        `json:"stepSeconds"`
	Points        int            `json:"points"` // the most samples held
	WindowSeconds float64        `json:"windowSeconds"`
	Times         []int64        `json:"times"` // Unix milliseconds
	Untracked     int            `json:"untracked"`
	Middlewares   []mwHistoryDoc `json:"middlewares"`
}

type mwHistoryDoc struct {
	Name string `json:"name"`
	// 429s and dry-run 429s in each step: the rate limit runs before a
	// version is chosen, so these are the middleware's.
	RateLimited       []*uint32           `json:"rateLimited"`
	DryRunRateLimited []*uint32           `json:"dryRunRateLimited"`
	Totals            mwWindowTotals      `json:"totals"`
	Versions          []versionHistoryDoc `json:"versions"`
	Rollout           *rolloutDoc         `json:"rollout"`
}

type mwWindowTotals struct {
	RateLimited       uint64 `json:"rateLimited"`
	DryRunRateLimited uint64 `json:"dryRunRateLimited"`
}

type versionHistoryDoc struct {
	Name         string              `json:"name"`
	Primary      bool                `json:"primary"`
	RequestsPS   []*float64          `json:"requestsPerSecond"`
	ErrorRatio   []*float64          `json:"errorRatio"`
	P50          []*float64          `json:"p50Seconds"`
	P95          []*float64          `json:"p95Seconds"`
	P99          []*float64          `json:"p99Seconds"`
	Weight       []*float64          `json:"weight"`
	CircuitState []*string           `json:"circuitState"`
	Requests     []*uint32           `json:"requests"`
	Errors       []*uint32           `json:"errors"`
	Fallbacks    []*uint32           `json:"fallbacks"`
	Refused      []*uint32           `json:"refused"`
	Totals       versionWindowTotals `json:"totals"`
}

// versionWindowTotals are a version's sums over the window.
type versionWindowTotals struct {
	Requests  uint64 `json:"requests"`
	Errors    uint64 `json:"errors"`
	Fallbacks uint64 `json:"fallbacks"`
	Refused   uint64 `json:"refused"`
}

// round rounds v to digits decimals: the page and the API need no more.
func round(v float64, digits float64) float64 {
	p := math.Pow(10, digits)
	return math.Round(v*p) / p
}

// samples returns how many samples were taken: the history changes only
// when it does.
func (h *history) samples() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

// doc returns the history, oldest sample first.
func (h *history) doc() historyDoc {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := historyDoc{
		StepSeconds: h.step.Seconds(), Points: historyPoints, WindowSeconds: h.step.Seconds() * historyPoints,
		Times: make([]int64, h.n), Untracked: h.untracked, Middlewares: []mwHistoryDoc{},
	}
	order := make([]int, h.n)
	for i := range order {
		order[i] = (h.head - h.n + i + historyPoints) % historyPoints
		d.Times[i] = h.times[order[i]]
	}
	names := make([]string, 0, len(h.mws))
	for name := range h.mws {
		names = append(names, name)
	}
	sort.Strings(names)
	// The totals are over the window: after a gap (the sidecar starved or
	// suspended), older samples may still be held.
	inWindow := make([]bool, h.n)
	if h.n > 0 {
		from := d.Times[h.n-1] - int64(d.WindowSeconds*1000)
		for i, ts := range d.Times {
			inWindow[i] = ts >= from
		}
	}
	for _, name := range names {
		d.Middlewares = append(d.Middlewares, h.mws[name].doc(name, order, inWindow, h.elapsed[:]))
	}
	return d
}

func (m *mwSeries) doc(name string, order []int, inWindow []bool, elapsed []uint32) mwHistoryDoc {
	n := len(order)
	d := mwHistoryDoc{
		Name: name, RateLimited: make([]*uint32, n), DryRunRateLimited: make([]*uint32, n),
		Versions: []versionHistoryDoc{}, Rollout: newRolloutDoc(m.rollout),
	}
	counts := make([]uint32, 2*n) // one allocation for every value: the document outlives the lock
	for i, idx := range order {
		if m.rated[idx] {
			counts[i], counts[n+i] = m.rejected[idx], m.dryRun[idx]
			d.RateLimited[i], d.DryRunRateLimited[i] = &counts[i], &counts[n+i]
			if inWindow[i] {
				d.Totals.RateLimited += uint64(m.rejected[idx])
				d.Totals.DryRunRateLimited += uint64(m.dryRun[idx])
			}
		}
	}
	names := make([]string, 0, len(m.versions))
	for vn := range m.versions {
		names = append(names, vn)
	}
	sort.Strings(names)
	for _, vn := range names {
		d.Versions = append(d.Versions, m.versions[vn].doc(vn, order, inWindow, elapsed))
	}
	return d
}

func (vs *versionSeries) doc(name string, order []int, inWindow []bool, elapsed []uint32) versionHistoryDoc {
	n := len(order)
	d := versionHistoryDoc{
		Name: name, Primary: vs.primary,
		RequestsPS: make([]*float64, n), ErrorRatio: make([]*float64, n),
		P50: make([]*float64, n), P95: make([]*float64, n), P99: make([]*float64, n),
		Weight: make([]*float64, n), CircuitState: make([]*string, n),
		Requests: make([]*uint32, n), Errors: make([]*uint32, n), Fallbacks: make([]*uint32, n), Refused: make([]*uint32, n),
	}
	// The values live in two arrays, one allocation each: the document
	// outlives the lock, and a pointer per value would cost an allocation each.
	floats, counts := make([]float64, 6*n), make([]uint32, 4*n)
	states := [3]string{transitionNames[0], transitionNames[1], transitionNames[2]}
	opt := func(dst []*float64, k, i int, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			floats[k*n+i] = v
			dst[i] = &floats[k*n+i]
		}
	}
	count := func(dst []*uint32, k, i int, v uint32) {
		counts[k*n+i] = v
		dst[i] = &counts[k*n+i]
	}
	for i, idx := range order {
		p := &vs.points[idx]
		if p.state >= 0 && int(p.state) < len(states) {
			d.CircuitState[i] = &states[p.state]
		}
		opt(d.Weight, 0, i, round(float64(p.weight), 6))
		if !p.rated {
			continue
		}
		count(d.Requests, 0, i, p.requests)
		count(d.Errors, 1, i, p.errors)
		count(d.Fallbacks, 2, i, p.fallbacks)
		count(d.Refused, 3, i, p.refused)
		if inWindow[i] {
			d.Totals.Requests += uint64(p.requests)
			d.Totals.Errors += uint64(p.errors)
			d.Totals.Fallbacks += uint64(p.fallbacks)
			d.Totals.Refused += uint64(p.refused)
		}
		if elapsed[idx] > 0 {
			opt(d.RequestsPS, 1, i, round(float64(p.requests)*1000/float64(elapsed[idx]), 3))
		}
		if p.requests > 0 {
			opt(d.ErrorRatio, 2, i, round(float64(p.errors)/float64(p.requests), 4))
		}
		// float32 holds about 7 digits: latencies are kept to the microsecond.
		opt(d.P50, 3, i, round(float64(p.p50), 6))
		opt(d.P95, 4, i, round(float64(p.p95), 6))
		opt(d.P99, 5, i, round(float64(p.p99), 6))
	}
	return d
}
