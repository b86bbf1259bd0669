package plugin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// numBuckets is the number of sticky buckets. A client holds one bucket for
// the life of its cookie; the weights decide which version each bucket maps to.
const numBuckets = 10000

// sigLen is the number of base64url characters of the HMAC kept in a cookie
// (22 characters: 132 bits).
const sigLen = 22

// signedBuckets holds, for one set of keys, the cookie value of every bucket
// and the reverse lookups. There are only numBuckets valid cookie values per
// key, so they are all computed once (compiled HMAC calls) and a request's
// cookie is verified by one map lookup instead of an interpreted HMAC.
type signedBuckets struct {
	values []string // bucket -> cookie value under the current key

	// current maps a value signed with the current key to its bucket plus
	// one, so that a miss (0) indexes a nil entry of a 1-based table
	// (canary.bucketOf1): the request paths then need no "ok" and no range
	// test, each of which costs an allocation per request under Yaegi.
	current map[string]int
	// previous maps a value signed with a previous key to its bucket: valid,
	// but to be re-signed.
	previous map[string]int
}

// signCache shares signedBuckets across New calls (every router, every
// reload) so that a reload costs no re-signing. It is bounded.
var signCache = struct {
	sync.Mutex
	m map[string]*signedBuckets
}{m: map[string]*signedBuckets{}}

const maxSignCache = 16

// cookieValue is the value of bucket b's cookie under key: "<bucket>.<sig>".
func cookieValue(key []byte, b int) string {
	mac := hmac.New(sha256.New, key)
	n := strconv.Itoa(b)
	mac.Write([]byte("edgecanary/v1:" + n))
	return n + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))[:sigLen]
}

// cookieLookup is the common case of choosing a version: a returning client
// without an override header whose first cookie of the name is signed with
// the current secret. hit gets its bucket plus one, from current, or 0 when
// that cookie is not signed with the current secret; a 1-based table then
// answers both with one index (see signedBuckets.current). Every other case
// (no cookie, a stale one first, a previous secret, another middleware's
// cookie) is choose's. The generated request paths inline it (see serve.go).
func cookieLookup(req *http.Request, oh, cookieName string, current map[string]int, hit func(b1 int)) {
	if req.Header[oh] == nil {
		if ck, _ := req.Cookie(cookieName); ck != nil { // Cookie returns a cookie exactly when its error is nil; err would be one more variable under Yaegi
			hit(current[ck.Value])
		}
	}
}

// getSignedBuckets returns the table for secret and previous, computing it once.
func getSignedBuckets(secret string, previous []string) *signedBuckets {
	// Each part length-prefixed: no two lists of secrets share a key.
	var kb strings.Builder
	for _, k := range append([]string{secret}, previous...) {
		kb.WriteString(strconv.Itoa(len(k)))
		kb.WriteByte(':')
		kb.WriteString(k)
	}
	cacheKey := kb.String()
	signCache.Lock()
	defer signCache.Unlock()
	if t, ok := signCache.m[cacheKey]; ok {
		return t
	}
	t := &signedBuckets{
		values:   make([]string, numBuckets),
		current:  make(map[string]int, numBuckets),
		previous: make(map[string]int, numBuckets*len(previous)),
	}
	for i := len(previous) - 1; i >= 0; i-- {
		key := []byte(previous[i])
		for b := 0; b < numBuckets; b++ {
			t.previous[cookieValue(key, b)] = b
		}
	}
	key := []byte(secret)
	for b := 0; b < numBuckets; b++ {
		v := cookieValue(key, b)
		t.values[b] = v
		t.current[v] = b + 1
		delete(t.previous, v) // a secret listed as previous too: current wins
	}
	if len(signCache.m) >= maxSignCache {
		for k := range signCache.m {
			delete(signCache.m, k)
		}
	}
	signCache.m[cacheKey] = t
	return t
}

// processSecret is the random key used when no secret is configured. It lives
// as long as the Traefik process (the interpreter keeps package state across
// reloads), so stickiness survives reloads but not restarts.
var processSecret struct {
	once sync.Once
	key  string
	warn sync.Once
}

func randomProcessSecret() string {
	processSecret.once.Do(func() {
		var b [32]byte
		_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program rather than return an error
		processSecret.key = base64.RawURLEncoding.EncodeToString(b[:])
	})
	return processSecret.key
}

// headerBucket maps a sticky header value to a bucket with HMAC-SHA256 under
// key, so replicas sharing the secret agree without any cookie.
func headerBucket(key []byte, value string) int {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(value))
	return int(binary.BigEndian.Uint64(mac.Sum(nil)) % numBuckets)
}

// cookieTables are the sticky tables in use in this process, by cookie name
// and middleware name (the latest New of each, while its context is live: a
// middleware removed from the configuration drops out reloadGrace after the
// next reload).
//
// Two middlewares on one host with the same cookie name (the default) but
// different secrets would otherwise overwrite each other's cookie on every
// request, since a browser keeps one cookie per name, domain and path. A
// middleware that finds another's valid cookie leaves it as it is and takes
// a bucket derived from it under its own key (foreignBucket): sticky, since
// the cookie stays, and not chosen by whoever knows the other secret.
var cookieTables = struct {
	sync.Mutex
	m   map[string]map[string]cookieTable
	seq uint64 // counts the publications, to find the oldest
}{m: map[string]map[string]cookieTable{}}

type cookieTable struct {
	t         *signedBuckets
	live      context.Context // the New call's: done once the next reload starts
	deadSince time.Time       // when a New or a lookup first found live done; zero before
	seq       uint64          // when it was published, in cookieTables.seq
}

// reloadGrace is how long a table still vouches for its cookies once its
// New's context is done. Traefik cancels the previous configuration's
// context before it builds the new handlers, while the old ones still
// serve: without this grace, every reload would re-draw, and overwrite the
// cookie of, the users of the other middlewares sharing a cookie name.
const reloadGrace = 10 * time.Second

const maxCookieTables = 64 // cookie names, and middlewares sharing one

// shareCookieTable publishes middleware's table for cookieName at now.
// Tables found removed (their context done) by a New or a lookup more than
// reloadGrace before now are dropped; at a bound, the first in
// evictsBefore's order.
func shareCookieTable(live context.Context, cookieName, middleware string, t *signedBuckets, now time.Time) {
	cookieTables.Lock()
	defer cookieTables.Unlock()
	cookieTables.seq++
	byMW := cookieTables.m[cookieName]
	if byMW == nil {
		if len(cookieTables.m) >= maxCookieTables {
			delete(cookieTables.m, oldestCookieName())
		}
		byMW = map[string]cookieTable{}
		cookieTables.m[cookieName] = byMW
	}
	for mw, e := range byMW {
		if e.live.Err() == nil {
			continue
		}
		if e.deadSince.IsZero() {
			// The first New or lookup that finds it removed starts its
			// grace: a later lookup must not start it again.
			e.deadSince = now
			byMW[mw] = e
		} else if now.Sub(e.deadSince) > reloadGrace {
			delete(byMW, mw)
		}
	}
	if _, ok := byMW[middleware]; !ok && len(byMW) >= maxCookieTables {
		found, victim, removed, seq := false, "", false, uint64(0)
		for mw, e := range byMW {
			gone := e.live.Err() != nil
			if !found || evictsBefore(gone, e.seq, removed, seq) {
				found, victim, removed, seq = true, mw, gone, e.seq
			}
		}
		delete(byMW, victim)
	}
	byMW[middleware] = cookieTable{t: t, live: live, seq: cookieTables.seq}
}

// evictsBefore is the order in which the registries kept across reloads
// (cookieTables, limiters) make room at their bound: an entry whose
// middleware was removed (gone) before a live one, then the one published
// first (the lower seq). Never at random: that could drop the entry of a
// live middleware published a moment before.
func evictsBefore(gone bool, seq uint64, thanGone bool, thanSeq uint64) bool {
	return gone && !thanGone || gone == thanGone && seq < thanSeq
}

// oldestCookieName is the cookie name whose latest table was published
// longest ago. Called with cookieTables held.
func oldestCookieName() string {
	found, oldest, oldestSeq := false, "", uint64(0)
	for name, byMW := range cookieTables.m {
		latest := uint64(0)
		for _, e := range byMW {
			if e.seq > latest {
				latest = e.seq
			}
		}
		if !found || latest < oldestSeq {
			found, oldest, oldestSeq = true, name, latest
		}
	}
	return oldest
}

// signedElsewhere reports whether value is, at now, a valid cookie of
// another middleware that uses cookieName: one still configured, or replaced
// less than reloadGrace ago.
func signedElsewhere(cookieName, middleware, value string, now time.Time) bool {
	cookieTables.Lock()
	defer cookieTables.Unlock()
	byMW := cookieTables.m[cookieName]
	for mw, e := range byMW {
		if mw == middleware {
			continue
		}
		if e.live.Err() != nil {
			if e.deadSince.IsZero() {
				e.deadSince = now
				byMW[mw] = e
			}
			if now.Sub(e.deadSince) > reloadGrace {
				continue
			}
		}
		if e.t.current[value] > 0 {
			return true
		}
		if _, ok := e.t.previous[value]; ok {
			return true
		}
	}
	return false
}

// foreignBucket is the bucket of a client whose cookie another middleware
// signed: an HMAC of the cookie under this middleware's key.
func foreignBucket(key []byte, value string) int {
	return headerBucket(key, "cookie:"+value)
}
