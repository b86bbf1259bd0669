package plugin

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// route is one version as the request path sees it.
type route struct {
	name    string
	primary bool
	handler http.Handler
	br      *breaker  // nil when the breaker is off
	vs      *verStats // nil when reporting is off
}

// canary is the handler that New returns.
type canary struct {
	next http.Handler
	name string

	routes    []*route          // non-primary versions sorted by name, then the primary
	byName    map[string]*route // version names plus "always" and "never"
	bucketOf  []*route          // bucket -> the version that owns it
	bucketOf1 []*route          // bucket+1 -> the same; entry 0 is nil (see signedBuckets.current). Shares bucketOf's array

	signed     *signedBuckets
	cookieName string
	cookieTmpl http.Cookie
	key        []byte // HMAC key for sticky.header

	stickyHeader   string // canonical header name, or ""
	overrideHeader string // canonical header name, or ""
	overrideCookie string
	trusted        []*net.IPNet
	slowPath       bool // sticky.header or override.cookie set: every request takes serveSlow
	single         bool // one version: no bucket, no cookie
	primary        *route

	rl      *limiter         // nil when rate limiting is off
	bs      *breakerSettings // nil when the breaker is off
	st      *mwStats         // nil when reporting is off
	observe bool             // breaker or reporting on: time and status are observed
	fast    bool             // more than one version and no sticky header or override cookie: a valid cookie decides
	pickAll bool             // the reference path picks every request's version (several versions, or a sticky header or override cookie), not only overridden ones
	timed   bool             // the breaker has a slowThreshold: the status wrapper records when the headers were written
	okCode  int              // 200 when the breaker is on and a 200 is a success whatever its duration, else -1 (no status): see leave

	serve http.HandlerFunc // the request path for this configuration (see serveFunc)

	ramp *route // the version of a rollout, or nil
	cut  *int32 // its rollout's cut (see owner), or nil
}

var _ http.Handler = (*canary)(nil)

// New builds the middleware. Traefik calls it for every router that uses the
// middleware and again on every reload, with the same cfg each time: New must
// not modify cfg. The handler it returns is the request path chosen for the
// configuration (see serveFunc).
//
// New never panics: Traefik builds middlewares in the goroutine that applies
// the dynamic configuration, and a panic there stops every router until
// Traefik restarts. Bad values are errors that name the field; a panic from a
// bug in New is recovered and returned as an error, so only the routers that
// use this middleware are disabled.
func New(ctx context.Context, next http.Handler, cfg *Config, name string) (h http.Handler, err error) {
	defer func() {
		if p := recover(); p != nil {
			h, err = nil, fmt.Errorf("edgecanary %s: internal error while building the middleware (please report it): %v", name, p)
		}
	}()
	c, err := build(ctx, next, cfg, name)
	if err != nil {
		return nil, err
	}
	return c.serve, nil
}

// build is the constructor New guards; a variable only so that a test can
// make it panic.
var build = newCanary

func newCanary(ctx context.Context, next http.Handler, cfg *Config, name string) (*canary, error) {
	if cfg == nil {
		return nil, errors.New("edgecanary: no configuration")
	}
	if next == nil {
		return nil, errors.New("edgecanary: no next handler")
	}
	c := &canary{next: next, name: name}
	if err := c.setupVersions(cfg.Versions); err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	if err := c.setupSticky(cfg.Sticky); err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	if err := c.setupOverride(cfg.Override); err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	rl, err := newLimiter(ctx, name, cfg.RateLimit)
	if err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	c.rl = rl
	bs, err := newBreakerSettings(cfg.CircuitBreaker)
	if err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	target, interval, bounds, err := parseSidecar(cfg.Sidecar)
	if err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	if bs.enabled() {
		c.bs = bs
		for _, r := range c.routes {
			r.br = getBreaker(bs, name, r.name, breakerNow())
		}
	}
	ro, err := parseRollout(cfg.Rollout, c)
	if err != nil {
		return nil, fmt.Errorf("edgecanary %s: %w", name, err)
	}
	if target.url != "" || ro != nil { // a rollout's checks read the reporting counters
		c.setupStats(ctx, target, interval, bounds, cfg.Versions)
	}
	if ro != nil {
		if err := c.setupRollout(ctx, ro, cfg.Rollout.Redis, cfg.Versions); err != nil {
			return nil, fmt.Errorf("edgecanary %s: %w", name, err)
		}
	}
	shareCookieTable(ctx, c.cookieName, name, c.signed, time.Now())
	c.observe = c.bs != nil || c.st != nil
	c.fast = !c.single && !c.slowPath
	c.pickAll = !c.single || c.slowPath
	c.timed = c.bs != nil && c.bs.slow > 0
	c.okCode = -1
	if c.bs != nil && c.bs.slow == 0 && !c.bs.failCodes[http.StatusOK] {
		c.okCode = http.StatusOK
	}
	c.serve = serveFunc(c)
	return c, nil
}

func (c *canary) setupVersions(versions map[string]VersionConfig) error {
	if len(versions) == 0 {
		return errors.New("versions: at least one version is required")
	}
	names := make([]string, 0, len(versions))
	for n := range versions {
		names = append(names, n)
	}
	sort.Strings(names)

	var primary *route
	var total int64
	weights := map[string]int{}
	c.byName = map[string]*route{}
	for _, n := range names {
		v := versions[n]
		field := "versions." + n
		if !wire.ValidVersionName(n) {
			return fmt.Errorf("%s: invalid version name %q: use lowercase letters, digits and dashes", field, n)
		}
		if n == "always" || n == "never" {
			return fmt.Errorf("%s: %q is reserved for overrides", field, n)
		}
		if v.Weight < 0 {
			return fmt.Errorf("%s.weight: must not be negative, got %d", field, v.Weight)
		}
		if v.Weight > 1000000 {
			return fmt.Errorf("%s.weight: must be at most 1000000, got %d", field, v.Weight)
		}
		total += int64(v.Weight)
		weights[n] = v.Weight
		r := &route{name: n}
		h, err := c.versionHandler(field, v)
		if err != nil {
			return err
		}
		if h == nil {
			if primary != nil {
				return fmt.Errorf("%s: more than one primary version (%q and %q have no url); exactly one version must have no url", field, primary.name, n)
			}
			r.primary = true
			r.handler = c.next
			primary = r
		} else {
			r.handler = h
			c.routes = append(c.routes, r)
		}
		c.byName[n] = r
	}
	if primary == nil {
		return errors.New("versions: no primary version: exactly one version must have no url (it is served by the router's service)")
	}
	if total == 0 {
		return errors.New("versions: all weights are zero: at least one weight must be above 0")
	}
	c.routes = append(c.routes, primary)
	c.primary = primary
	c.single = len(c.routes) == 1
	c.byName["never"] = primary
	if len(c.routes) > 1 {
		c.byName["always"] = c.routes[0]
	} else {
		c.byName["always"] = primary
	}

	c.layout(weights, "", 0)
	return nil
}

// layout maps every bucket to a version (c.bucketOf). Non-primary versions
// take the low buckets in name order, the primary the rest. Cut points come
// from cumulative weights, so raising one weight only moves buckets into
// that version.
//
// With a rollout, ramp (the version that ramps) is left out: it takes
// buckets [0, cut) at run time (see owner). The primary comes first, with
// at least reserve buckets (the ramp's last step), and the other versions
// share the rest by weight: the ramp only ever takes the primary's users,
// and a rollback gives every one of them back to the primary.
func (c *canary) layout(weights map[string]int, ramp string, reserve int) {
	c.bucketOf1 = make([]*route, 1+numBuckets)
	c.bucketOf = c.bucketOf1[1:]
	if ramp == "" {
		var total, cum int64
		for _, r := range c.routes {
			total += int64(weights[r.name])
		}
		b := 0
		for _, r := range c.routes {
			end := numBuckets
			if !r.primary {
				cum += int64(weights[r.name])
				end = int(cum * numBuckets / total)
			}
			for ; b < end; b++ {
				c.bucketOf[b] = r
			}
		}
		return
	}
	var others []*route
	var total, othersTotal int64
	for _, r := range c.routes {
		if r.name != ramp {
			total += int64(weights[r.name])
			if !r.primary {
				others = append(others, r)
				othersTotal += int64(weights[r.name])
			}
		}
	}
	primaryEnd := numBuckets
	if othersTotal > 0 {
		primaryEnd = int(int64(weights[c.primary.name]) * numBuckets / total)
		if primaryEnd < reserve {
			primaryEnd = reserve
		}
	}
	b := 0
	for ; b < primaryEnd; b++ {
		c.bucketOf[b] = c.primary
	}
	var cum int64
	for i, r := range others {
		cum += int64(weights[r.name])
		end := primaryEnd + int(cum*int64(numBuckets-primaryEnd)/othersTotal)
		if i == len(others)-1 {
			end = numBuckets
		}
		for ; b < end; b++ {
			c.bucketOf[b] = r
		}
	}
}

// versionHandler returns the proxy of a version, or nil for the primary.
func (c *canary) versionHandler(field string, v VersionConfig) (http.Handler, error) {
	urls := v.URLs
	if v.URL != "" {
		if len(v.URLs) > 0 {
			return nil, fmt.Errorf("%s: set either url or urls, not both", field)
		}
		urls = []string{v.URL}
	}
	if len(urls) == 0 {
		if v.Timeout != "" {
			return nil, fmt.Errorf("%s.timeout: only proxied versions (with url or urls) take a timeout", field)
		}
		return nil, nil
	}
	timeout := defaultVersionTimeout
	if v.Timeout != "" {
		d, err := parseDuration(field+".timeout", v.Timeout)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, fmt.Errorf("%s.timeout: must be above 0, got %q", field, v.Timeout)
		}
		timeout = d
	}
	rt := &headerDeadline{next: transport, timeout: timeout}
	backends := make([]http.Handler, 0, len(urls))
	for i, raw := range urls {
		f := field + ".url"
		if v.URL == "" {
			f = fmt.Sprintf("%s.urls[%d]", field, i)
		}
		u, err := parseUpstream(f, raw)
		if err != nil {
			return nil, err
		}
		backends = append(backends, newProxy(u, rt))
	}
	if len(backends) == 1 {
		return backends[0], nil
	}
	return &roundRobin{backends: backends}, nil
}

func (c *canary) setupSticky(s StickyConfig) error {
	ck := s.Cookie
	if ck.Name == "" {
		return errors.New("sticky.cookie.name: must not be empty")
	}
	if !validCookieName(ck.Name) {
		return fmt.Errorf("sticky.cookie.name: invalid cookie name %q", ck.Name)
	}
	if ck.MaxAge < 0 {
		return fmt.Errorf("sticky.cookie.maxAge: must not be negative, got %d", ck.MaxAge)
	}
	if strings.ContainsAny(ck.Path, ";\r\n") || strings.ContainsAny(ck.Domain, ";\r\n ") {
		return errors.New("sticky.cookie: path and domain must not contain ';', spaces or line breaks")
	}
	var sameSite http.SameSite
	switch strings.ToLower(ck.SameSite) {
	case "", "lax":
		sameSite = http.SameSiteLaxMode
	case "strict":
		sameSite = http.SameSiteStrictMode
	case "none":
		if !ck.Secure {
			return errors.New("sticky.cookie.sameSite: none requires sticky.cookie.secure: true (browsers reject it otherwise)")
		}
		sameSite = http.SameSiteNoneMode
	default:
		return fmt.Errorf("sticky.cookie.sameSite: invalid value %q: want lax, strict or none", ck.SameSite)
	}
	if len(ck.PreviousSecrets) > 8 {
		return fmt.Errorf("sticky.cookie.previousSecrets: at most 8 previous secrets, got %d", len(ck.PreviousSecrets))
	}
	previous := make([]string, 0, len(ck.PreviousSecrets))
	for i, p := range ck.PreviousSecrets {
		if p == "" {
			return fmt.Errorf("sticky.cookie.previousSecrets[%d]: must not be empty", i)
		}
		if p != ck.Secret {
			previous = append(previous, p)
		}
	}
	secret := ck.Secret
	if secret == "" {
		secret = randomProcessSecret()
		processSecret.warn.Do(func() {
			log.Printf("edgecanary %s: WARNING: sticky.cookie.secret is empty: using a random per-process key, so stickiness does not survive restarts and is not shared across replicas", c.name)
		})
	}
	c.signed = getSignedBuckets(secret, previous)
	c.key = []byte(secret)
	c.cookieName = ck.Name
	path := ck.Path
	if path == "" {
		path = "/"
	}
	c.cookieTmpl = http.Cookie{
		Name:     ck.Name,
		Path:     path,
		Domain:   ck.Domain,
		MaxAge:   ck.MaxAge,
		Secure:   ck.Secure,
		HttpOnly: true,
		SameSite: sameSite,
	}
	if s.Header != "" {
		if !validHeaderName(s.Header) {
			return fmt.Errorf("sticky.header: invalid header name %q", s.Header)
		}
		c.stickyHeader = textproto.CanonicalMIMEHeaderKey(s.Header)
		c.slowPath = true
	}
	return nil
}

func (c *canary) setupOverride(o OverrideConfig) error {
	if o.Header != "" {
		if !validHeaderName(o.Header) {
			return fmt.Errorf("override.header: invalid header name %q", o.Header)
		}
		c.overrideHeader = textproto.CanonicalMIMEHeaderKey(o.Header)
	}
	if o.Cookie != "" {
		if !validCookieName(o.Cookie) {
			return fmt.Errorf("override.cookie: invalid cookie name %q", o.Cookie)
		}
		c.overrideCookie = o.Cookie
		c.slowPath = true
	}
	nets, err := parseCIDRs("override.trustedIPs", o.TrustedIPs)
	if err != nil {
		return err
	}
	c.trusted = nets
	return nil
}

// parseCIDRs accepts CIDRs and single addresses.
func parseCIDRs(field string, list []string) ([]*net.IPNet, error) {
	nets := make([]*net.IPNet, 0, len(list))
	for i, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			ip := net.ParseIP(s)
			if ip == nil {
				return nil, fmt.Errorf("%s[%d]: invalid IP or CIDR %q", field, i, s)
			}
			bits := 128
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			nets = append(nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: invalid IP or CIDR %q", field, i, s)
		}
		nets = append(nets, n)
	}
	return nets, nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func validCookieName(s string) bool { return validHeaderName(s) }

// ServeHTTP serves a request as the handler New returns does.
func (c *canary) ServeHTTP(rw http.ResponseWriter, req *http.Request) { c.serve(rw, req) }

// pick returns the version of a request: a returning client's valid cookie
// is one lookup; everything else goes through choose.
func pick(c *canary, rw http.ResponseWriter, req *http.Request) *route {
	if !c.fast {
		return choose(c, rw, req)
	}
	var r *route
	cookieLookup(req, c.overrideHeader, c.cookieName, c.signed.current, func(b1 int) {
		if b1 > 0 {
			r = owner(c, b1-1)
		}
	})
	if r == nil {
		r = choose(c, rw, req)
	}
	return r
}

// choose picks the version for a request: a trusted override first, then the
// sticky header, then the cookie, and a fresh random bucket (with a new
// cookie) when none of them is valid.
func choose(c *canary, rw http.ResponseWriter, req *http.Request) *route {
	if r := overridden(c, req); r != nil {
		return r
	}
	if c.single {
		return c.primary
	}
	if c.stickyHeader != "" {
		if v := req.Header.Get(c.stickyHeader); v != "" {
			return owner(c, headerBucket(c.key, v))
		}
	}
	if req.Header["Cookie"] != nil { // a new client has none: no parsing
		if b, ok := cookieBucket(c, rw, req); ok {
			return owner(c, b)
		}
	}
	b := randIntn(numBuckets)
	c.setCookie(rw, b)
	return owner(c, b)
}

// randIntn draws a new client's bucket. A variable so that the tests can
// send the same new clients to two request paths.
var randIntn = rand.Intn

// cookieBucket finds the bucket of a request's sticky cookie. Every cookie
// of the name counts, not only the first (a stale one may come first): one
// signed with the current secret, else one signed with a previous secret
// (re-signed), else one of another middleware with the same cookie name (left
// as it is, with a bucket derived from it: see cookieTables).
func cookieBucket(c *canary, rw http.ResponseWriter, req *http.Request) (int, bool) {
	var values []string
	for _, ck := range req.Cookies() {
		if ck.Name != c.cookieName {
			continue
		}
		if b1 := c.signed.current[ck.Value]; b1 > 0 {
			return b1 - 1, true
		}
		values = append(values, ck.Value)
	}
	for _, v := range values {
		if b, ok := c.signed.previous[v]; ok { // signed with a previous secret: re-sign
			c.setCookie(rw, b)
			return b, true
		}
	}
	for _, v := range values {
		if signedElsewhere(c.cookieName, c.name, v, time.Now()) {
			return foreignBucket(c.key, v), true
		}
	}
	return 0, false
}

func (c *canary) setCookie(rw http.ResponseWriter, b int) {
	ck := c.cookieTmpl
	ck.Value = c.signed.values[b]
	http.SetCookie(rw, &ck)
}

// overridden returns the version forced by a trusted peer, or nil. The
// override header is removed whoever sent it, so it never reaches upstream.
func overridden(c *canary, req *http.Request) *route {
	var want string
	if c.overrideHeader != "" {
		if vs, ok := req.Header[c.overrideHeader]; ok {
			if len(vs) > 0 {
				want = vs[0]
			}
			req.Header.Del(c.overrideHeader)
		}
	}
	if want == "" && c.overrideCookie != "" {
		if ck, err := req.Cookie(c.overrideCookie); err == nil {
			want = ck.Value
		}
	}
	if want == "" || len(c.trusted) == 0 || !trustedPeer(c.trusted, req.RemoteAddr) {
		return nil
	}
	return c.byName[strings.ToLower(strings.TrimSpace(want))]
}

func trustedPeer(trusted []*net.IPNet, remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
