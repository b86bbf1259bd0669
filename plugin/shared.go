package plugin

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RedisConfig shares the rate limit of every replica through Redis, with the
// names and meanings of Traefik's rateLimit.redis for the keys they share.
// Empty Endpoints: Redis is off, and each replica limits on its own.
type RedisConfig struct {
	Endpoints []string `json:"endpoints,omitempty"` // host:port
	Username  string   `json:"username,omitempty"`
	Password  string   `json:"password,omitempty"`
	DB        int      `json:"db,omitempty"`
	// DialTimeout, ReadTimeout and WriteTimeout are durations. A store call
	// slower than ReadTimeout counts as a store error. Defaults 5s, 3s, 3s.
	DialTimeout  string `json:"dialTimeout,omitempty"`
	ReadTimeout  string `json:"readTimeout,omitempty"`
	WriteTimeout string `json:"writeTimeout,omitempty"`
	// PoolSize bounds the connections per replica. 0: 10 per CPU, as
	// go-redis (and so Traefik) defaults.
	PoolSize int             `json:"poolSize,omitempty"`
	TLS      *RedisTLSConfig `json:"tls,omitempty"`
	// OnError is what a replica does while Redis fails: "local" (limit with
	// its own buckets, the limit of one replica), "allow" or "deny" (429 with
	// Retry-After). Default local. Never a 5xx.
	OnError string `json:"onError,omitempty"`
}

// RedisTLSConfig is Traefik's ClientTLS: ca, cert and key are file paths or
// PEM contents. Setting the block turns TLS on.
type RedisTLSConfig struct {
	CA                 string `json:"ca,omitempty"`
	Cert               string `json:"cert,omitempty"`
	Key                string `json:"key,omitempty"`
	InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
}

func defaultRedisConfig() RedisConfig {
	return RedisConfig{DialTimeout: "5s", ReadTimeout: "3s", WriteTimeout: "3s", OnError: "local"}
}

// What a replica does while the store fails.
const (
	onErrorLocal = iota
	onErrorAllow
	onErrorDeny
)

// maxLease bounds the tokens a replica takes from Redis in one call.
const maxLease = 1024

// minLeaseLife is the life a lease gets where the burst allows (see shared).
// A background refresh must come back before the lease it replaces ends, and
// in a saturated Traefik a store call's reply waits behind every request
// ready to run: 2.4 to 2.8 ms on average in make bench's line 6b (measured).
// With a 2.5 ms life a request made a store call every 3 to 5 requests, and
// 40% of requests waited for one; with 7.5 ms, one call every 30.
const minLeaseLife = 20 * time.Millisecond

// shared is a limiter's Redis side. Every replica with the same endpoints,
// middleware name and limit settings shares one bucket per client key in
// Redis: a GCRA on Redis's clock (gcraScript), namespaced by the middleware
// and its settings (redisBucketKey), each key expiring when its bucket is
// full again.
//
// A round trip costs a Yaegi plugin far more than a request (about 680
// allocations, measured), so a replica leases tokens: a call takes
// n of them, and the replica admits the next n - 1 requests of that key by
// itself (leaseStep), within the lease's life. n is what the key would use
// in a whole life at the rate it used the last lease, and half again, plus
// the requests waiting for the call, within 1 and lease (nextLease). So a
// client below its rate takes about one token per call and is never
// rejected, and a busy client costs one round trip per lease. The next
// lease is taken in the background when a quarter of the tokens or of the
// life is left, and the rest of the old one is spent meanwhile.
//
// The bound holds across replicas: in any window W, Redis hands out at most
// burst' + W/interval tokens, burst' = burst - reserve (its tolerance), and
// a token is spent at most life = reserve intervals after it was taken, so
// the requests admitted in any window T are at most burst' + (T +
// life)/interval = burst + T/interval. The price: a burst arriving at one
// instant gets burst - reserve tokens, not burst. reserve is lease (burst/4,
// at most 1024), or, where that lasts less than minLeaseLife, minLeaseLife's
// worth of tokens up to three quarters of the burst: for such limits the
// tokens held back come back within 20 ms. Below a burst of 32 there is no
// lease: one call per request, the whole burst.
type shared struct {
	client      *redisClient
	clientKey   string // its key in sharedClients
	prefix      string // the key namespace: middleware and settings
	gcra        *gcraCall
	intervalUs  int64
	toleranceUs int64 // (burst' - 1) * interval
	lease       int64 // the largest n (see shared)
	burst       int64
	life        int64 // how long a lease may be spent: reserve intervals, in ns
	onError     int

	mu       sync.Mutex
	down     bool  // the last call failed: requests do not wait for the store
	retryAt  int64 // while down, when the next call may try again (ns since epoch)
	backoff  int64
	logged   bool
	loggedAt int64 // when an outage was last logged: at most once per 10 s
	// outageLogged: this outage (since down was set) has been logged. An
	// outage that begins within 10 s of the last line is logged once those
	// 10 s have passed, at its next failed call.
	outageLogged bool

	counters *rlCounters // the middleware's: storeErrors counts the calls that failed
	up       int32       // 1 while the last call succeeded (atomic)
}

// sharedClients are the Redis clients by their options: limiters (and
// reloads) with the same endpoints and credentials share one pool. A client
// is closed when the last limiter using it gives it back, reloadGrace after
// the configuration that replaced or removed it started (see releaseShared
// and watchLimiter), so the map holds about one client per live limiter.
var sharedClients = struct {
	sync.Mutex
	m map[string]*sharedClient
}{m: map[string]*sharedClient{}}

type sharedClient struct {
	c     *redisClient
	ident string // the server and who connects: endpoints, credentials, db, TLS
	users int
}

// releaseShared gives back s's client: the last user closes it. nil is a no-op.
func releaseShared(s *shared) {
	if s == nil {
		return
	}
	releaseRedis(s.clientKey, s.client)
}

// releaseRedis gives back a client that acquireRedis returned: the last
// user closes it.
func releaseRedis(clientKey string, client *redisClient) {
	sharedClients.Lock()
	defer sharedClients.Unlock()
	e := sharedClients.m[clientKey]
	if e == nil || e.c != client {
		return
	}
	e.users--
	if e.users <= 0 {
		delete(sharedClients.m, clientKey)
		e.c.close()
	}
}

// acquireRedis validates the connection settings of cfg (every key but
// onError; errors name field+"."+key) and returns the client for them,
// shared with every other user of the same settings, and its key in
// sharedClients. With anyTuning, a client to the same server with the same
// credentials (endpoints, username, password, db, TLS) serves whatever its
// timeouts and pool size: the rollout's few calls share the rate limit's
// pool. It never dials. Each call is one use: give it back with
// releaseRedis.
func acquireRedis(field string, cfg RedisConfig, anyTuning bool) (*redisClient, string, error) {
	opts := redisOptions{Username: cfg.Username, Password: cfg.Password, DB: cfg.DB, PoolSize: cfg.PoolSize}
	for i, e := range cfg.Endpoints {
		host, port, err := net.SplitHostPort(e)
		if err != nil || host == "" {
			return nil, "", fmt.Errorf("%s.endpoints[%d]: %q is not host:port", field, i, e)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, "", fmt.Errorf("%s.endpoints[%d]: %q has no valid port", field, i, e)
		}
		opts.Endpoints = append(opts.Endpoints, e)
	}
	if cfg.DB < 0 || cfg.DB > 1<<20 {
		return nil, "", fmt.Errorf("%s.db: must be between 0 and %d, got %d", field, 1<<20, cfg.DB)
	}
	if err := checkCount(field+".poolSize", cfg.PoolSize, 1<<12); err != nil {
		return nil, "", err
	}
	for _, d := range []struct {
		field, value string
		def          time.Duration
		to           *time.Duration
	}{
		{field + ".dialTimeout", cfg.DialTimeout, 5 * time.Second, &opts.DialTimeout},
		{field + ".readTimeout", cfg.ReadTimeout, 3 * time.Second, &opts.ReadTimeout},
		{field + ".writeTimeout", cfg.WriteTimeout, 3 * time.Second, &opts.WriteTimeout},
	} {
		*d.to = d.def
		if d.value != "" {
			v, err := parseDuration(d.field, d.value)
			if err != nil {
				return nil, "", err
			}
			if v <= 0 || v > time.Minute {
				return nil, "", fmt.Errorf("%s: must be above 0 and at most 1m, got %v", d.field, v)
			}
			*d.to = v
		}
	}
	tlsKey := ""
	if t := cfg.TLS; t != nil {
		tc, err := redisTLSConfig(field, t.CA, t.Cert, t.Key, t.InsecureSkipVerify)
		if err != nil {
			return nil, "", err
		}
		opts.TLS = tc
		tlsKey = fmt.Sprintf("%s|%s|%s|%v", t.CA, t.Cert, t.Key, t.InsecureSkipVerify)
	}
	ident := fmt.Sprintf("%q|%q|%q|%d|%s", opts.Endpoints, opts.Username, opts.Password, opts.DB, tlsKey)
	clientKey := fmt.Sprintf("%s|%v|%v|%v|%d", ident, opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolSize)
	sharedClients.Lock()
	defer sharedClients.Unlock()
	e := sharedClients.m[clientKey]
	if e == nil && anyTuning {
		for k, other := range sharedClients.m {
			if other.ident == ident {
				e, clientKey = other, k
				break
			}
		}
	}
	if e == nil {
		e = &sharedClient{c: newRedisClient(opts), ident: ident}
		sharedClients.m[clientKey] = e
	}
	e.users++
	return e.c, clientKey, nil
}

// newShared validates cfg and returns the Redis side of a limiter with the
// given interval (ns) and burst, or nil when Redis is off. It never dials.
func newShared(name string, cfg RedisConfig, interval, burst int64, source string) (*shared, string, error) {
	if len(cfg.Endpoints) == 0 {
		if cfg.TLS != nil || cfg.Username != "" || cfg.Password != "" {
			return nil, "", errors.New("rateLimit.redis.endpoints: required when other rateLimit.redis settings are set")
		}
		return nil, "", nil
	}
	s := &shared{}
	switch cfg.OnError {
	case "", "local":
		s.onError = onErrorLocal
	case "allow":
		s.onError = onErrorAllow
	case "deny":
		s.onError = onErrorDeny
	default:
		return nil, "", fmt.Errorf("rateLimit.redis.onError: %q: want local, allow or deny", cfg.OnError)
	}
	// Redis counts in microseconds.
	// Rounded up, so the shared rate is never above the configured one.
	s.intervalUs = (interval + int64(time.Microsecond) - 1) / int64(time.Microsecond)
	if interval < int64(time.Microsecond) || interval%int64(time.Microsecond) != 0 && interval < int64(time.Millisecond) {
		return nil, "", fmt.Errorf("rateLimit.average: with rateLimit.redis, the interval between tokens (%v) must be a whole number of microseconds", time.Duration(interval))
	}
	if burst >= 32 {
		s.lease = burst / 4
		if s.lease > maxLease {
			s.lease = maxLease
		}
	}
	s.burst = burst
	// The tokens set aside are the lease's life (see shared).
	reserve := s.lease
	if reserve > 0 && reserve*interval < int64(minLeaseLife) {
		reserve = (int64(minLeaseLife) + interval - 1) / interval
		if reserve > burst*3/4 {
			reserve = burst * 3 / 4
		}
	}
	s.toleranceUs = (burst - reserve - 1) * s.intervalUs
	s.life = reserve * interval
	if s.lease == 0 {
		s.lease = 1 // one token per call, the one the request uses
	}
	s.prefix = redisBucketKey(name, s.intervalUs, s.toleranceUs, source) + ":"
	s.gcra = newGCRACall(s.intervalUs, s.toleranceUs)
	client, clientKey, err := acquireRedis("rateLimit.redis", cfg, false)
	if err != nil {
		return nil, "", err
	}
	s.client, s.clientKey = client, clientKey
	s.up = 1
	settings := fmt.Sprintf("redis|%s|%s|%d", clientKey, cfg.OnError, s.lease)
	return s, settings, nil
}

// leaseStep is the rate limit's step with rateLimit.redis, the one source of
// every copy of it: allowShared, allowSharedPeer and the generated request
// paths inline or call it (see serve.go). While b's lease is quiet (more
// than quietLeft tokens left and before quietUntil: no refresh due), it
// takes a token of it; then q - 1 is the tokens left, this replica's lease
// and what the store had left, and taken runs. Else q is 0, and
// allowSharedSlow decides. Called with the lock held. Its parameters are
// gcraStep's, so that one template line inlines either (interval, span
// and tat are gcraStep's only).
func leaseStep(b *bucket, now, interval, span int64, taken func()) (tat, q int64) {
	if b.leaseLeft > b.quietLeft && now < b.quietUntil {
		b.leaseLeft--
		q = b.leaseLeft + b.storeLeft + 1
		taken()
	}
	return
}

// allowShared is allowSlow with Redis: it decides a request of key at now
// from this replica's lease of the key, or with one store call. One call per
// key is in flight at a time: the requests that find the lease empty
// meanwhile wait for that call (bounded by readTimeout) and share what it
// brought, so a busy key costs one round trip per lease, not one per
// concurrent request. It returns as allow does: now, or -1 when it answered
// (429).
func allowShared(l *limiter, rw http.ResponseWriter, req *http.Request, key string, now int64) int64 {
	// The common case, admitted from the lease with no refresh due, is this
	// function; the rest is allowSharedSlow's (under Yaegi every variable
	// of a function costs on every call).
	l.sem <- lockTok
	q := int64(0)
	if b := l.buckets[key]; b != nil {
		_, q = leaseStep(b, now, 0, 0, noop)
	}
	<-l.sem
	if q <= 0 {
		return allowSharedSlow(l, rw, req, key, now)
	}
	if l.headers {
		sharedHeaders(l, rw, q-1)
	}
	return now
}

// allowSharedPeer is allowShared for a client keyed by its address
// (sourceCriterion's default): a keep-alive connection whose address holds
// a quiet lease costs one lookup by connection, not the key's computation
// (about 45 of the 157 allocations of a request under Yaegi, measured). The
// generated paths inline this lookup; the rest goes through
// allowSharedConn.
func allowSharedPeer(l *limiter, rw http.ResponseWriter, req *http.Request, now int64) int64 {
	l.sem <- lockTok
	q := int64(0)
	if b := l.peers[req.RemoteAddr]; b != nil {
		_, q = leaseStep(b, now, 0, 0, noop)
	}
	<-l.sem
	if q <= 0 {
		return allowSharedConn(l, rw, req, now)
	}
	if l.headers {
		sharedHeaders(l, rw, q-1)
	}
	return now
}

// allowSharedConn decides a peer's request by its address's key, and
// remembers the connection's bucket for allowSharedPeer.
func allowSharedConn(l *limiter, rw http.ResponseWriter, req *http.Request, now int64) int64 {
	key := peerKey(l, req.RemoteAddr)
	at := allowShared(l, rw, req, key, now)
	l.sem <- lockTok
	if b := l.buckets[key]; b != nil {
		rememberPeer(l, req.RemoteAddr, b)
	}
	<-l.sem
	return at
}

// storeLease keeps a lease of granted tokens from the store, left of them
// for the requests to come, taken at now by the call r. It replaces b's
// lease, whose rest joins the tokens to give back (with the store's tat
// after the earliest of their calls). It is quiet (no refresh due) until a
// quarter of it is left or a quarter of its life. Called with l.sem held.
func storeLease(s *shared, b *bucket, granted, left int64, r gcraTake, now int64) {
	// What a server answers is clamped to what the script can return, so
	// that leaseStep's q stays within the RateLimit table (fewer than burst
	// tokens left) whatever it says.
	remaining := r.remaining
	if remaining > s.burst-1-left {
		remaining = s.burst - 1 - left
	}
	if remaining < 0 {
		remaining = 0
	}
	if b.leaseLeft > 0 {
		if b.unspent == 0 || b.leaseTat < b.unspentTat {
			b.unspentTat = b.leaseTat
		}
		b.unspent += b.leaseLeft
	}
	b.leaseN, b.leaseLeft, b.leaseEnd, b.storeLeft, b.leaseTat = granted, left, now+s.life, remaining, r.tatUs
	b.quietLeft, b.quietUntil = granted/4, b.leaseEnd-s.life/4
	atomic.AddUint64(&s.counters.leased, uint64(granted))
}

// startRefresh takes b's next lease in the background, before this one runs
// out or ends (a quarter of its tokens or of its life left): the requests of
// a busy key do not wait for the store.
func startRefresh(l *limiter, b *bucket, key string, now int64) {
	if !l.shared.available(now) {
		return
	}
	l.sem <- lockTok
	if b.fetching != nil {
		<-l.sem
		return
	}
	ch := make(chan struct{})
	b.fetching = ch
	n, back, backUntil := nextLease(l.shared, b, now)
	// While the call is in flight, the rest of this lease is quiet to its
	// end: leaseStep spends it, and no request takes the slow path for it.
	b.quietLeft, b.quietUntil = 0, b.leaseEnd
	<-l.sem
	go refreshLease(l, b, ch, key, n, back, backUntil, now)
}

// allowSharedSlow is allowShared when the lease cannot answer: it waits for
// a store call in flight for the key, or makes one.
func allowSharedSlow(l *limiter, rw http.ResponseWriter, req *http.Request, key string, now int64) int64 {
	for waited := 0; ; waited++ {
		l.sem <- lockTok
		b := l.buckets[key]
		if b == nil {
			b = insertBucket(l, key, now)
		}
		if b.leaseLeft > 0 && now < b.leaseEnd {
			// A token of the lease; allowShared takes the quiet ones, so
			// a refresh is due here, unless this request waited for the
			// lease just stored.
			refresh := b.fetching == nil && (b.leaseLeft <= b.quietLeft || now >= b.quietUntil)
			b.leaseLeft--
			left := b.leaseLeft + b.storeLeft
			<-l.sem
			if refresh {
				startRefresh(l, b, key, now)
			}
			return sharedAdmit(l, rw, left, now)
		}
		if now < b.emptyUntil { // the store said: no token before then
			wait := b.emptyUntil - now
			<-l.sem
			return sharedRejected(l, rw, wait, now)
		}
		if b.fetching != nil && waited < 2 {
			ch := b.fetching
			b.waiters++
			<-l.sem
			<-ch // closed by the call in flight, whatever its outcome
			now = int64(clock(epoch))
			continue
		}
		n, back, backUntil := nextLease(l.shared, b, now)
		ch := make(chan struct{})
		b.fetching = ch
		<-l.sem
		return fetchLease(l, rw, req, b, ch, key, n, back, backUntil, now)
	}
}

// nextLease is the size n of b's next lease, with the lock held: the tokens
// the key would use in a whole life at the rate it used this lease, and half
// again, plus the requests waiting, within 1 and lease less what is left of
// this lease. A lease used up at once asks for the most; one that ended
// unused, or used once in a life, for 1 or 2 (a client below its rate takes
// about a token per call). back is the tokens to give back with the call:
// the rest of the leases replaced since the last call (see storeLease), and
// backUntil the store's tat after the earliest of them (see gcraScript).
//
// So a replica never holds more than lease tokens of a key, counting those
// it has yet to give back: the next lease, and the rest of this one, which
// the new one replaces. A client that moves to another replica finds the
// store's burst less at most one lease, and a client below its rate takes
// from the store what it spends, give or take a lease.
func nextLease(s *shared, b *bucket, now int64) (n, back, backUntil int64) {
	n = 1
	if used, elapsed := b.leaseN-b.leaseLeft, now-(b.leaseEnd-s.life); used > 0 {
		n = s.lease
		if elapsed > 0 {
			n = int64(float64(used)*float64(s.life)/float64(elapsed)*1.5) + 1
		}
	}
	n += b.waiters
	b.waiters = 0
	if n > s.lease-b.leaseLeft {
		n = s.lease - b.leaseLeft
	}
	if n < 1 {
		n = 1
	}
	back, backUntil, b.unspent = b.unspent, b.unspentTat, 0
	return n, back, backUntil
}

// refreshLease takes b's next lease in the background, giving back back
// tokens. The new lease replaces what is left of the old one, which requests
// spent meanwhile (the rest is given back with the next call), and lives
// from before the call.
func refreshLease(l *limiter, b *bucket, ch chan struct{}, key string, n, back, backUntil, now int64) {
	s := l.shared
	r, err := s.client.takeGCRA(s.gcra, s.prefix, key, n, back, backUntil)
	l.sem <- lockTok
	b.fetching = nil
	if err == nil && r.granted > 0 {
		storeLease(s, b, r.granted, r.granted, r, now)
	} else if err == nil {
		b.emptyUntil = now + r.waitUs*int64(time.Microsecond)
	}
	<-l.sem
	// The outcome is recorded before the waiters wake: else a waiter could
	// find the store not yet down and make a second call.
	if err != nil {
		s.failed(int64(clock(epoch)), err)
	} else {
		s.succeeded()
		atomic.AddUint64(&s.counters.returned, uint64(r.returned)) // a failed call may have run: those are lost, the safe side
	}
	close(ch)
}

// fetchLease takes up to n tokens of key from the store for b, giving back
// back tokens, keeps all but the request's own as b's lease, and wakes the
// requests waiting on ch.
func fetchLease(l *limiter, rw http.ResponseWriter, req *http.Request, b *bucket, ch chan struct{}, key string, n, back, backUntil, now int64) int64 {
	s := l.shared
	if !s.available(now) {
		l.sem <- lockTok
		b.fetching = nil
		<-l.sem
		close(ch)
		return storeFailed(l, rw, req, key, now)
	}
	r, err := s.client.takeGCRA(s.gcra, s.prefix, key, n, back, backUntil)
	l.sem <- lockTok
	b.fetching = nil
	if err == nil && r.granted > 0 {
		storeLease(s, b, r.granted, r.granted-1, r, now)
	} else if err == nil {
		b.emptyUntil = now + r.waitUs*int64(time.Microsecond) // tokens come back with time only: exact
	}
	<-l.sem
	// The outcome is recorded before the waiters wake: else a waiter could
	// find the store not yet down, make a second call and wait a second
	// readTimeout. The backoff runs from the call's end: a call that timed
	// out took longer than the first backoff.
	if err != nil {
		s.failed(int64(clock(epoch)), err)
	} else {
		s.succeeded()
		atomic.AddUint64(&s.counters.returned, uint64(r.returned)) // a failed call may have run: those are lost, the safe side
	}
	close(ch)
	if err != nil {
		return storeFailed(l, rw, req, key, now)
	}
	if r.granted == 0 {
		return sharedRejected(l, rw, r.waitUs*int64(time.Microsecond), now)
	}
	return sharedAdmit(l, rw, r.granted-1+r.remaining, now)
}

// sharedRejected answers a request the store has no token for before wait.
// The store admits nothing later: a wait within maxDelay is a rejection too.
func sharedRejected(l *limiter, rw http.ResponseWriter, wait, now int64) int64 {
	if wait <= l.maxDelay {
		wait = l.maxDelay + 1
	}
	if rejected(l, rw, wait) {
		return -1
	}
	return now // dry run
}

// sharedAdmit writes the RateLimit fields of an admitted request with left
// tokens (this replica's lease and what the store had left), and returns now.
func sharedAdmit(l *limiter, rw http.ResponseWriter, left, now int64) int64 {
	if l.headers {
		sharedHeaders(l, rw, left)
	}
	return now
}

// sharedHeaders writes the RateLimit fields of a request admitted with left
// tokens known to this replica (its lease and what the store had left): from
// the table when it covers left.
func sharedHeaders(l *limiter, rw http.ResponseWriter, left int64) {
	h := rw.Header()
	h["Ratelimit-Policy"] = l.policy
	if left < l.nR {
		h["Ratelimit"] = l.byR[left]
	} else {
		h["Ratelimit"] = rateLimitField(l, -left*l.interval)
	}
}

// storeFailed decides a request while the store fails, by onError: this
// replica's own limiter, or allow, or deny (429, Retry-After until the next
// try). Never a 5xx.
func storeFailed(l *limiter, rw http.ResponseWriter, req *http.Request, key string, now int64) int64 {
	s := l.shared
	switch s.onError {
	case onErrorAllow:
		return now
	case onErrorDeny:
		s.mu.Lock()
		wait := s.retryAt - now
		s.mu.Unlock()
		if wait < int64(time.Second) {
			wait = int64(time.Second)
		}
		if wait <= l.maxDelay {
			wait = l.maxDelay + 1
		}
		if rejected(l, rw, wait) {
			return -1
		}
		return now
	}
	return allowLocal(l, rw, req, key, now)
}

// available reports whether a store call may be made at now: the store is
// up, or it is down and its backoff has passed (one caller then tries).
func (s *shared) available(now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return true
	}
	if now < s.retryAt {
		return false
	}
	s.retryAt = now + s.backoff // the others keep deciding without the store meanwhile
	return true
}

// failed records a failed store call: requests stop waiting for the store
// for a backoff that doubles from 250ms to 5s.
func (s *shared) failed(now int64, err error) {
	atomic.AddUint64(&s.counters.storeErrors, 1)
	s.mu.Lock()
	// up changes with down, under the lock: else a success racing this
	// failure could leave down set with up 1, and succeeded (which returns
	// early on up) would never clear it.
	atomic.StoreInt32(&s.up, 0)
	first := !s.down
	if first {
		s.backoff = int64(250 * time.Millisecond)
	} else {
		s.backoff *= 2 // 500ms, 1s, 2s, 4s, then 5s: never above 5s
		if s.backoff > int64(5*time.Second) {
			s.backoff = int64(5 * time.Second)
		}
	}
	s.down = true
	s.retryAt = now + s.backoff
	if first {
		s.outageLogged = false
	}
	log := !s.outageLogged && (!s.logged || now-s.loggedAt >= int64(10*time.Second))
	if log {
		s.logged, s.loggedAt, s.outageLogged = true, now, true
	}
	s.mu.Unlock()
	if log {
		logStoreError(err)
	}
}

func (s *shared) succeeded() {
	if atomic.LoadInt32(&s.up) == 1 {
		return
	}
	s.mu.Lock()
	atomic.StoreInt32(&s.up, 1)
	s.down = false
	s.mu.Unlock()
}

// logStoreError logs a store failure: once per outage, and at most once per
// 10 s when the store flaps (the metrics count every failure).
func logStoreError(err error) {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	log.Printf("edgecanary: rate-limit store (Redis) failed: %s; deciding without it until it answers", msg)
}
