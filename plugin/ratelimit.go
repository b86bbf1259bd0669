package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RateLimitConfig is a token bucket per client, with the meaning of Traefik's
// RateLimit middleware for the keys they share.
type RateLimitConfig struct {
	// Average is the number of tokens per Period. 0 disables the limiter.
	Average int64 `json:"average,omitempty"`
	// Period is a duration ("1s", "1m") or a number of seconds. Default 1s.
	Period string `json:"period,omitempty"`
	// Burst is the bucket size. 0 or less is treated as 1, as in Traefik.
	Burst int64 `json:"burst,omitempty"`
	// SourceCriterion says what identifies a client: exactly one of
	// ipStrategy, requestHeaderName or requestHost. Default: the peer's IP.
	SourceCriterion SourceCriterion `json:"sourceCriterion,omitempty"`
	// MaxSources bounds the number of clients tracked. Default 65536.
	MaxSources int `json:"maxSources,omitempty"`
	// Headers sends RateLimit-Policy and RateLimit on every response, and
	// Retry-After on a 429. Default true.
	Headers bool `json:"headers,omitempty"`
	// DryRun counts what would be rejected but lets it through. Default false.
	DryRun bool `json:"dryRun,omitempty"`
	// Redis shares one limit among every replica (see RedisConfig).
	Redis RedisConfig `json:"redis,omitempty"`
}

// SourceCriterion identifies a client, as in Traefik.
type SourceCriterion struct {
	IPStrategy        *IPStrategy `json:"ipStrategy,omitempty"`
	RequestHeaderName string      `json:"requestHeaderName,omitempty"`
	RequestHost       bool        `json:"requestHost,omitempty"`
}

// IPStrategy picks the client address, as Traefik's ipStrategy does.
type IPStrategy struct {
	// Depth takes the Nth address from the right of X-Forwarded-For.
	// 0: the peer's address.
	Depth int `json:"depth,omitempty"`
	// ExcludedIPs are skipped when walking X-Forwarded-For from the right.
	ExcludedIPs []string `json:"excludedIPs,omitempty"`
	// IPv6Subnet groups IPv6 clients by this prefix length (e.g. 64).
	IPv6Subnet int `json:"ipv6Subnet,omitempty"`
}

func defaultRateLimitConfig() RateLimitConfig {
	return RateLimitConfig{
		Period:     "1s",
		Burst:      1,
		MaxSources: 65536,
		Headers:    true,
		Redis:      defaultRedisConfig(),
	}
}

// Key sources.
const (
	sourcePeer = iota
	sourceDepth
	sourceExcluded
	sourceHeader
	sourceHost
)

// maxKeyLen bounds a key kept in memory; longer header values are hashed.
const maxKeyLen = 128

// limiter is a token bucket per client, in the form of the generic cell rate
// algorithm: each bucket is one int64, its theoretical arrival time (tat),
// the instant at which it is full again. It admits exactly what
// golang.org/x/time/rate admits with Reserve (and Cancel past maxDelay), the
// reference that the tests compare it with, at a fraction of the interpreted
// cost. A bucket whose tat is in the past is full, the same as no bucket, so
// idle entries carry no state and can be dropped at any time.
//
// Concurrency: one mutex guards the map and the buckets; every decision is
// made under it, so N concurrent requests on one key admit exactly burst.
type limiter struct {
	sem      chan struct{} // the lock: a channel send and receive cost less than sync.Mutex in Yaegi
	buckets  map[string]*bucket
	peers    map[string]*bucket // RemoteAddr ("ip:port") -> its address's bucket, so a keep-alive peer costs one lookup
	max      int
	interval int64 // nanoseconds per token
	window   int64 // burst * interval: how far tat may run ahead of now
	maxDelay int64 // waits up to this are absorbed by delaying the request
	span     int64 // window + interval + maxDelay: reserve's span (see gcraStep)

	dryRun   bool
	headers  bool
	policy   []string   // RateLimit-Policy value
	rlPrefix string     // `"<policy>";r=`
	byR      [][]string // RateLimit values of admitted requests by remaining count (see newLimiter)
	nR       int64      // len(byR)

	source     int
	header     string // canonical header name, for sourceHeader
	depth      int
	excluded   []*net.IPNet
	ipv6Subnet int

	shared *shared // rateLimit.redis; nil: this replica limits alone

	// counters survive a limiter's replacement: they are cumulative per
	// middleware name, for telemetry.
	counters *rlCounters
}

type rlCounters struct {
	rejected    uint64
	dryRejected uint64
	evictions   uint64
	storeErrors uint64 // rateLimit.redis calls that failed
	leased      uint64 // tokens taken from the store (rateLimit.redis)
	returned    uint64 // tokens of leases given back to the store unspent
}

var rlCounterRegistry = struct {
	sync.Mutex
	m map[string]*rlCounters
}{m: map[string]*rlCounters{}}

// rlCountersFor returns the middleware's rate-limit counters, creating them
// when create is set.
func rlCountersFor(name string, create bool) *rlCounters {
	rlCounterRegistry.Lock()
	defer rlCounterRegistry.Unlock()
	c := rlCounterRegistry.m[name]
	if c == nil && create {
		if len(rlCounterRegistry.m) >= maxLimiters {
			for k := range rlCounterRegistry.m {
				delete(rlCounterRegistry.m, k)
				break
			}
		}
		c = &rlCounters{}
		rlCounterRegistry.m[name] = c
	}
	return c
}

type bucket struct {
	tat  int64
	dead bool // evicted from buckets: peers entries pointing here are stale

	// With rateLimit.redis, this replica's lease of the key's tokens (see shared).
	leaseLeft, leaseN, leaseEnd int64
	// While leaseLeft > quietLeft and before quietUntil, a request takes a
	// token of the lease and nothing else: no refresh is due (see storeLease).
	quietLeft, quietUntil int64
	storeLeft             int64         // the tokens the store had left after the lease
	fetching              chan struct{} // a store call for the key is in flight: closed when it ends
	waiters               int64         // requests waiting for it
	emptyUntil            int64         // the store has no token for the key before then
	unspent               int64         // the rest of replaced leases, to give back with the next call
	leaseTat, unspentTat  int64         // the store's tat after the lease's call, and after the earliest of the unspent's (µs, Redis's clock)
}

// deadTat is the tat of an evicted bucket, and of noBucket: so far in the
// future that allow's inline step always hands such a bucket to allowSlow,
// which checks dead. The inline step thus tests neither nil nor dead.
const deadTat = math.MaxInt64 / 4

// maxWindow bounds burst × period / average (10 years), so that a bucket
// with deadTat always waits (see allow).
const maxWindow = int64(10 * 365 * 24 * time.Hour)

var noBucket = &bucket{tat: deadTat, dead: true}

func kill(b *bucket) {
	b.dead = true
	b.tat = deadTat
}

// limiters keeps one limiter per middleware name across reloads, replaced
// when its settings change, and dropped, with its buckets, when its
// middleware is removed. A replaced or dropped limiter gives back its hold
// on a Redis client reloadGrace after its configuration ends (watchLimiter).
var limiters = struct {
	sync.Mutex
	m   map[string]*limiterEntry
	seq uint64 // counts the limiters made, to find the oldest
}{m: map[string]*limiterEntry{}}

type limiterEntry struct {
	settings string
	l        *limiter
	seq      uint64          // when it was made, in limiters.seq
	live     context.Context // the context of the latest New that returned l
	uses     int             // how many News returned l
	released bool            // l's Redis client was given back
}

// release gives back e's hold on its Redis client, once. Called with
// limiters held.
func (e *limiterEntry) release() {
	if !e.released {
		e.released = true
		releaseShared(e.l.shared)
	}
}

// watchLimiter drops the limiter of a removed middleware: grace after the
// context of the latest New that returned it is done, if no New returned it
// since, it leaves limiters and gives back its Redis client. Traefik ends a
// New's context when the next configuration starts; a middleware still
// configured then gets the same limiter from its next New, and the grace
// covers the old handlers that serve meanwhile (as reloadGrace does for the
// cookie tables).
func watchLimiter(name string, e *limiterEntry, grace time.Duration) {
	for {
		limiters.Lock()
		live, uses, released := e.live, e.uses, e.released
		limiters.Unlock()
		if released {
			return
		}
		<-live.Done()
		time.Sleep(grace)
		limiters.Lock()
		if e.uses == uses {
			if limiters.m[name] == e {
				delete(limiters.m, name)
			}
			e.release()
			limiters.Unlock()
			forgetStatsLimiter(name, e.l)
			return
		}
		limiters.Unlock()
	}
}

// forgetStatsLimiter unhooks the dropped limiter l from the figures of
// middleware name, if they still show it, so that the figures kept for the
// process do not hold its buckets. A New since has hooked its own limiter.
// The report then reads the middleware's counters by name.
func forgetStatsLimiter(name string, l *limiter) {
	statsRegistry.Lock()
	st := statsRegistry.m[name]
	statsRegistry.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	if st.limiter == l {
		st.limiter = nil
	}
	st.mu.Unlock()
}

// evictLimiter makes room in limiters at its bound, in evictsBefore's order.
// It never gives back the dropped limiter's Redis client: its watchLimiter
// does, reloadGrace after the context of the latest New that returned it
// ends. A context that ended does not say the middleware was removed:
// Traefik ends the previous configuration's context before it calls New for
// the next, so during a reload every middleware not yet rebuilt looks
// removed, and its handlers serve until Traefik switches.
// Called with limiters held.
func evictLimiter() {
	found, victim, removed, seq := false, "", false, uint64(0)
	for name, e := range limiters.m {
		gone := e.live.Err() != nil
		if !found || evictsBefore(gone, e.seq, removed, seq) {
			found, victim, removed, seq = true, name, gone, e.seq
		}
	}
	delete(limiters.m, victim)
}

const maxLimiters = 4096

// maxMaxSources bounds rateLimit.maxSources: 16,777,216 clients.
const maxMaxSources = 1 << 24

// newLimiter validates cfg and returns the limiter of middleware name: the
// one an earlier New made with the same settings, whose buckets it keeps,
// or a new one. ctx is New's: see watchLimiter.
func newLimiter(ctx context.Context, name string, cfg RateLimitConfig) (*limiter, error) {
	if cfg.Average < 0 {
		return nil, fmt.Errorf("rateLimit.average: must not be negative, got %d", cfg.Average)
	}
	period := time.Second
	if cfg.Period != "" {
		d, err := parseDuration("rateLimit.period", cfg.Period)
		if err != nil {
			return nil, err
		}
		if d > 0 {
			period = d
		}
	}
	if err := checkCount("rateLimit.maxSources", cfg.MaxSources, maxMaxSources); err != nil {
		return nil, err
	}
	sc := cfg.SourceCriterion
	set := 0
	if sc.IPStrategy != nil {
		set++
	}
	if sc.RequestHeaderName != "" {
		set++
	}
	if sc.RequestHost {
		set++
	}
	if set > 1 {
		return nil, errors.New("rateLimit.sourceCriterion: set only one of ipStrategy, requestHeaderName and requestHost")
	}
	if cfg.Average == 0 {
		return nil, nil
	}
	l := &limiter{max: cfg.MaxSources, dryRun: cfg.DryRun, headers: cfg.Headers}
	if l.max == 0 {
		l.max = 65536
	}
	if sc.RequestHeaderName != "" {
		if !validHeaderName(sc.RequestHeaderName) {
			return nil, fmt.Errorf("rateLimit.sourceCriterion.requestHeaderName: invalid header name %q", sc.RequestHeaderName)
		}
		l.source = sourceHeader
		l.header = http.CanonicalHeaderKey(sc.RequestHeaderName)
	} else if sc.RequestHost {
		l.source = sourceHost
	} else if s := sc.IPStrategy; s != nil {
		if s.Depth < 0 {
			return nil, fmt.Errorf("rateLimit.sourceCriterion.ipStrategy.depth: must not be negative, got %d", s.Depth)
		}
		if s.IPv6Subnet < 0 || s.IPv6Subnet > 128 {
			return nil, fmt.Errorf("rateLimit.sourceCriterion.ipStrategy.ipv6Subnet: must be between 0 and 128, got %d", s.IPv6Subnet)
		}
		nets, err := parseCIDRs("rateLimit.sourceCriterion.ipStrategy.excludedIPs", s.ExcludedIPs)
		if err != nil {
			return nil, err
		}
		l.depth, l.excluded, l.ipv6Subnet = s.Depth, nets, s.IPv6Subnet
		switch {
		case s.Depth > 0:
			l.source = sourceDepth
		case len(nets) > 0:
			l.source = sourceExcluded
		}
	}

	burst := cfg.Burst
	if burst < 1 {
		burst = 1
	}
	// The interval is computed in floating point, so that no average (up to
	// the int64 maximum) overflows or divides by zero.
	interval := math.Round(float64(period) / float64(cfg.Average))
	if interval < 1 {
		return nil, fmt.Errorf("rateLimit.average: %d per %v is more than one request per nanosecond", cfg.Average, period)
	}
	if interval > float64(maxWindow) || burst > maxWindow/int64(interval) {
		return nil, fmt.Errorf("rateLimit.burst: %d is too large for average %d per %v: a full bucket must refill within 10 years", burst, cfg.Average, period)
	}
	l.interval = int64(interval)
	l.window = burst * l.interval
	rate := float64(cfg.Average) * float64(time.Second) / float64(period) // tokens per second, at most 2e9 here
	// Traefik's maxDelay: half a token's interval, or 500ms below 1/s.
	if rate < 1 {
		l.maxDelay = int64(500 * time.Millisecond)
	} else {
		l.maxDelay = int64(time.Second) / (int64(rate) * 2)
	}
	l.span = l.window + l.interval + l.maxDelay

	// The policy as quota q per window w whole seconds: q/w is the sustained
	// rate; the window is the period rounded up to whole seconds.
	w := int64(math.Ceil(period.Seconds()))
	if w < 1 {
		w = 1
	}
	q := int64(math.Round(rate * float64(w)))
	pname := strings.NewReplacer(`"`, "", `\`, "").Replace(name)
	l.policy = []string{fmt.Sprintf(`"%s";q=%d;w=%d`, pname, q, w)}
	l.rlPrefix = `"` + pname + `";r=`

	excluded := ""
	if sc.IPStrategy != nil {
		excluded = strings.Join(sc.IPStrategy.ExcludedIPs, ",")
	}
	settings := fmt.Sprintf("%d|%d|%d|%d|%d|%s|%d|%s|%d|%v|%v", l.interval, l.window, l.maxDelay, l.max, l.source, l.header, l.depth, excluded, l.ipv6Subnet, l.dryRun, l.headers)
	sh, shSettings, err := newShared(name, cfg.Redis, l.interval, burst, fmt.Sprintf("%d:%s:%d:%s:%d", l.source, l.header, l.depth, excluded, l.ipv6Subnet))
	if err != nil {
		return nil, err
	}
	l.shared = sh
	settings += "|" + shSettings
	if sh != nil {
		sh.counters = rlCountersFor(name, true)
	}
	limiters.Lock()
	defer limiters.Unlock()
	old, replaced := limiters.m[name]
	if replaced && old.settings == settings {
		releaseShared(sh) // the kept limiter has its own hold on the client
		old.live = ctx
		old.uses++
		return old.l, nil
	}
	// A replaced limiter keeps its hold on its Redis client: the previous
	// configuration serves with it until Traefik switches, and its
	// watchLimiter gives it back reloadGrace after that configuration's
	// context ends (the client closes with its last user).
	l.sem = make(chan struct{}, 1)
	l.buckets = make(map[string]*bucket)
	l.peers = make(map[string]*bucket)
	l.counters = rlCountersFor(name, true)
	// The RateLimit field of a request admitted without delay, by remaining
	// count, when the window fits in one second (t is then always 1) and
	// the table is small: the common response then costs no string building.
	if l.window <= int64(time.Second) && burst <= 4096 {
		l.byR = make([][]string, burst)
		for r := int64(0); r < burst; r++ {
			l.byR[r] = []string{l.rlPrefix + strconv.FormatInt(r, 10) + ";t=1"}[:1:1]
		}
		l.nR = burst
	}
	if !replaced && len(limiters.m) >= maxLimiters {
		evictLimiter()
	}
	limiters.seq++
	e := &limiterEntry{settings: settings, l: l, seq: limiters.seq, live: ctx, uses: 1}
	limiters.m[name] = e
	go watchLimiter(name, e, reloadGrace)
	return l, nil
}

// gcraStep is the GCRA step on one bucket, the one source of every copy of
// it: reserve and the generated request paths inline it (see serve.go).
// Called with the lock held.
//
// tat is the bucket's theoretical arrival time with this request. The
// request waits tat - now - window, and is charged when that wait is at most
// some limit: span = window + interval + limit. q = (now + span - tat) /
// interval is then positive exactly when it is charged (charged runs then),
// and with limit 0, q - 1 is the whole tokens left (the RateLimit field's r).
func gcraStep(b *bucket, now, interval, span int64, charged func()) (tat, q int64) {
	tat = b.tat
	if tat < now {
		tat = now
	}
	tat += interval
	q = now + span // in three statements: under Yaegi each parenthesis and
	q -= tat       // each intermediate value of an expression costs an
	q /= interval  // allocation per request, an assignment's operator none
	if q > 0 {
		b.tat = tat
		charged()
	}
	return
}

// peerBucket finds the bucket of a RemoteAddr's address and remembers it for
// that RemoteAddr. Called with the lock held.
func peerBucket(l *limiter, remoteAddr string, now int64) *bucket {
	key := peerKey(l, remoteAddr)
	b := l.buckets[key]
	if b == nil {
		b = insertBucket(l, key, now)
	}
	rememberPeer(l, remoteAddr, b)
	return b
}

// rememberPeer records that the connection remoteAddr ("ip:port") is b's
// client, keeping l.peers within 2·maxSources. Called with l.sem held.
func rememberPeer(l *limiter, remoteAddr string, b *bucket) {
	if len(l.peers) >= 2*l.max { // forget two connections, any: they are looked up again on their next request
		n := 0
		for k := range l.peers {
			delete(l.peers, k)
			n++
			if n == 2 {
				break
			}
		}
	}
	l.peers[remoteAddr] = b
}

// clientKey is the key of a request's client.
func clientKey(l *limiter, req *http.Request) string {
	if l.source == sourcePeer {
		return peerKey(l, req.RemoteAddr)
	}
	return sourceKey(l, req)
}

// peerKey is the key of a RemoteAddr: its address.
func peerKey(l *limiter, remoteAddr string) string {
	// net/http writes "ip:port", with brackets around IPv6.
	if i := strings.LastIndexByte(remoteAddr, ':'); i > 0 && remoteAddr[0] != '[' {
		return remoteAddr[:i]
	}
	return normalizeAddr(l, remoteAddr, remoteAddr)
}

// idle reports whether b carries no state at now: its tat has passed and,
// with rateLimit.redis (whose buckets keep tat 0), it holds no live lease, no
// known-empty store and no store call in flight.
func idle(b *bucket, now int64) bool {
	return b.tat <= now && b.leaseEnd <= now && b.emptyUntil <= now && b.fetching == nil
}

// insertBucket adds key, keeping the map within max entries. Called with the lock held.
// A bucket whose tat has passed is full and carries no state: a few are
// dropped on every insert, so idle clients expire. When the map is full, a
// sample of entries is examined and the one closest to full (the earliest
// tat) is evicted: dropping a bucket hands its client (tat - now) / interval
// tokens, so this gives away the least. A client that uses its budget keeps
// its tat ahead of every one-shot key's (arrival + interval) and is not
// pushed out by a flood of them.
func insertBucket(l *limiter, key string, now int64) *bucket {
	checked := 0
	for k, b := range l.buckets {
		if idle(b, now) {
			kill(b)
			delete(l.buckets, k)
		}
		checked++
		if checked >= 4 {
			break
		}
	}
	if len(l.buckets) >= l.max {
		var victim *bucket
		var victimKey string
		checked = 0
		for k, b := range l.buckets {
			if idle(b, now) { // gives nothing away
				victim, victimKey = b, k
				break
			}
			if victim == nil || b.tat < victim.tat {
				victim, victimKey = b, k
			}
			checked++
			if checked >= 8 {
				break
			}
		}
		if !idle(victim, now) {
			atomic.AddUint64(&l.counters.evictions, 1)
		}
		kill(victim)
		delete(l.buckets, victimKey)
	}
	b := &bucket{}
	l.buckets[key] = b
	return b
}

// allow runs the limiter for a request at now. It returns the instant the
// request may go on (now, or later when the limiter delayed it), or -1 when
// it answered the request itself (429). A keep-alive peer admitted without
// delay, the common case, is decided here: its bucket is one lookup by
// RemoteAddr (a missing or evicted one has deadTat, so it falls through).
// Everything else goes through allowSlow.
func allow(l *limiter, rw http.ResponseWriter, req *http.Request, now int64) int64 {
	if l.source != sourcePeer || l.shared != nil {
		return allowSlow(l, rw, req, now)
	}
	l.sem <- lockTok
	b := l.peers[req.RemoteAddr]
	if b == nil {
		b = noBucket
	}
	tat, q := gcraStep(b, now, l.interval, l.window+l.interval, noop)
	<-l.sem
	if q <= 0 {
		return allowSlow(l, rw, req, now)
	}
	if l.headers {
		h := rw.Header()
		h["Ratelimit-Policy"] = l.policy
		if q <= l.nR {
			h["Ratelimit"] = l.byR[q-1]
		} else {
			h["Ratelimit"] = rateLimitField(l, tat-now-l.window)
		}
	}
	return now
}

// allowSlow is allow for every other case: other sources, a new peer, a
// delayed or rejected request.
func allowSlow(l *limiter, rw http.ResponseWriter, req *http.Request, now int64) int64 {
	if l.shared != nil {
		if l.source == sourcePeer {
			return allowSharedPeer(l, rw, req, now)
		}
		return allowShared(l, rw, req, sourceKey(l, req), now)
	}
	var wait int64
	if l.source == sourcePeer {
		l.sem <- lockTok
		b := l.peers[req.RemoteAddr]
		if b == nil || b.dead {
			b = peerBucket(l, req.RemoteAddr, now)
		}
		wait = reserve(l, b, now)
		<-l.sem
	} else {
		wait = take(l, sourceKey(l, req), now)
	}
	return decide(l, rw, wait, now)
}

// allowLocal decides a request of key with this replica's own buckets: with
// rateLimit.redis, while the store fails (onError: local).
func allowLocal(l *limiter, rw http.ResponseWriter, req *http.Request, key string, now int64) int64 {
	return decide(l, rw, take(l, key, now), now)
}

// decide answers a request that waits wait: a rejection past maxDelay, a
// delay up to it, with the RateLimit fields. It returns as allow does.
func decide(l *limiter, rw http.ResponseWriter, wait, now int64) int64 {
	if wait > l.maxDelay {
		if rejected(l, rw, wait) {
			return -1
		}
		return now // dry run
	}
	if l.headers {
		h := rw.Header()
		h["Ratelimit-Policy"] = l.policy
		h["Ratelimit"] = rateLimitField(l, wait)
	}
	if wait > 0 {
		// At most maxDelay (500ms). A plain sleep: Yaegi's select with an
		// empty case body does not proceed (traefik/yaegi#887), and under
		// concurrency we saw it take the wrong case.
		time.Sleep(time.Duration(wait))
		return now + wait
	}
	return now
}

// rateLimitField is the RateLimit value of an admitted request that waits
// wait (<= 0: none): r is the whole tokens left, (window - ahead) / interval,
// and t how long until the bucket is full again, ahead = wait + window, in
// seconds rounded up.
func rateLimitField(l *limiter, wait int64) []string {
	ahead := wait + l.window
	r := (l.window - ahead) / l.interval
	if r < 0 { // a delayed request: the bucket is in debt
		r = 0
	}
	return []string{l.rlPrefix + strconv.FormatInt(r, 10) + ";t=" + strconv.FormatInt((ahead+999999999)/1e9, 10)}
}

// rejected counts a rejection and, unless in dry-run mode, answers 429. It
// reports whether it answered.
func rejected(l *limiter, rw http.ResponseWriter, wait int64) bool {
	if l.dryRun {
		atomic.AddUint64(&l.counters.dryRejected, 1)
		return false
	}
	atomic.AddUint64(&l.counters.rejected, 1)
	reject(l, rw, wait)
	return true
}

// reject answers 429 with Retry-After (whole seconds, rounded up) and
// X-Retry-In, as Traefik does, plus the RateLimit fields.
func reject(l *limiter, rw http.ResponseWriter, wait int64) {
	h := rw.Header()
	if l.headers {
		ahead := wait + l.window - l.interval // the bucket was not charged
		h["Ratelimit-Policy"] = l.policy
		h["Ratelimit"] = []string{l.rlPrefix + "0;t=" + strconv.FormatInt((ahead+999999999)/1e9, 10)}
	}
	h.Set("Retry-After", strconv.FormatInt(retryAfterSeconds(wait), 10))
	h.Set("X-Retry-In", time.Duration(wait).String())
	h.Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(http.StatusTooManyRequests)
	_, _ = rw.Write([]byte("Too Many Requests\n"))
}

// retryAfterSeconds rounds a wait up to whole seconds, never below 0.
func retryAfterSeconds(wait int64) int64 {
	if wait <= 0 {
		return 0
	}
	return (wait + int64(time.Second) - 1) / int64(time.Second)
}

// sourceKey extracts the client key for every source but the plain peer.
// Keys from a header are prefixed so they can never equal an address key, and
// hashed past maxKeyLen so memory stays bounded.
func sourceKey(l *limiter, req *http.Request) string {
	peer := req.RemoteAddr
	switch l.source {
	case sourceHeader:
		v := req.Header.Get(l.header)
		if v == "" {
			return normalizeAddr(l, peer, peer)
		}
		if len(v) > maxKeyLen {
			sum := sha256.Sum256([]byte(v))
			v = "sha256:" + hex.EncodeToString(sum[:])
		}
		return "h:" + v
	case sourceHost:
		if req.Host == "" {
			return normalizeAddr(l, peer, peer)
		}
		h := strings.ToLower(req.Host)
		if len(h) > maxKeyLen {
			sum := sha256.Sum256([]byte(h))
			h = "sha256:" + hex.EncodeToString(sum[:])
		}
		return "host:" + h
	}
	return forwardedKey(l, req.Header.Values("X-Forwarded-For"), peer)
}

// forwardedKey applies depth or excludedIPs to X-Forwarded-For, as Traefik's
// ipStrategy does, with two deliberate differences that keep the key honest:
// with fewer than depth entries it takes the leftmost entry (the farthest
// address a trusted proxy recorded) instead of an empty key shared by all such
// clients, and an entry that is not an IP address, or no entry at all, falls
// back to the peer's address.
func forwardedKey(l *limiter, values []string, peer string) string {
	var xff []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				xff = append(xff, p)
			}
		}
	}
	if len(xff) == 0 {
		return normalizeAddr(l, peer, peer)
	}
	if l.source == sourceDepth {
		i := len(xff) - l.depth
		if i < 0 {
			i = 0
		}
		return normalizeAddr(l, xff[i], peer)
	}
	for i := len(xff) - 1; i >= 0; i-- {
		addr, err := netip.ParseAddr(stripPort(xff[i]))
		if err != nil {
			return normalizeAddr(l, peer, peer)
		}
		ip := net.IP(addr.Unmap().WithZone("").AsSlice())
		excluded := false
		for _, n := range l.excluded {
			if n.Contains(ip) {
				excluded = true
				break
			}
		}
		if !excluded {
			return normalizeAddr(l, xff[i], peer)
		}
	}
	return normalizeAddr(l, peer, peer)
}

// normalizeAddr turns an address (with or without port, brackets or zone) into
// its canonical key: IPv4-mapped IPv6 becomes IPv4, the zone and port go, and
// IPv6 is masked to ipv6Subnet. Anything that is not an address yields the
// normalised fallback (the peer), which is always an address.
func normalizeAddr(l *limiter, s, fallback string) string {
	addr, err := netip.ParseAddr(stripPort(s))
	if err != nil {
		if s == fallback {
			return s // the peer itself is not an address (a unix socket): use it as is
		}
		return normalizeAddr(l, fallback, fallback)
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() && l.ipv6Subnet > 0 {
		if p, err := addr.Prefix(l.ipv6Subnet); err == nil {
			return p.String()
		}
	}
	return addr.String()
}

// stripPort removes a port and IPv6 brackets: "1.2.3.4:5", "[::1]:5", "[::1]".
func stripPort(s string) string {
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			return s[1:i]
		}
		return s
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 && strings.IndexByte(s[:i], ':') < 0 {
		return s[:i]
	}
	return s
}

// inlineLimiter returns what the generated paths' inline GCRA step reads:
// the peer cache, and byQ, the RateLimit field by q (byQ[q] is byR[q-1];
// byQ[0] is never read). When the step cannot answer (clients keyed
// otherwise than by peer, or the RateLimit field on without the byR table),
// the peer cache is nil: every lookup misses, and allowSlow decides. With
// rateLimit.redis, the step is leaseStep, whose q is below burst (see
// storeLease): the table covers it whenever there is one.
func inlineLimiter(l *limiter) (map[string]*bucket, [][]string) {
	byQ := make([][]string, l.nR+1)
	copy(byQ[1:], l.byR)
	if l.source != sourcePeer || l.headers && l.nR == 0 {
		return nil, byQ
	}
	return l.peers, byQ
}
