package plugin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
)

// numBuckets is the number of sticky buckets. A client holds one bucket for
// the life of its cookie; the weights decide which version each bucket maps to.
const numBuckets = 10000

// sigLen is the number of base64url characters of the HMAC kept in a cookie
// (22 characters: 132 bits).
const sigLen = 22

// signedBuckets holds, for one set of keys, the cookie value of every bucket
// and the reverse lookup. There are only numBuckets valid cookie values per
// key, so they are all computed once (compiled HMAC calls) and a request's
// cookie is verified by one map lookup instead of an interpreted HMAC. A value
// signed with a previous key maps to bucket+numBuckets: valid, but to be
// re-signed.
type signedBuckets struct {
	values []string       // bucket -> cookie value under the current key
	lookup map[string]int // cookie value -> bucket (+numBuckets: previous key)
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
		values: make([]string, numBuckets),
		lookup: make(map[string]int, numBuckets*(1+len(previous))),
	}
	for i := len(previous) - 1; i >= 0; i-- {
		key := []byte(previous[i])
		for b := 0; b < numBuckets; b++ {
			t.lookup[cookieValue(key, b)] = b + numBuckets
		}
	}
	key := []byte(secret)
	for b := 0; b < numBuckets; b++ {
		v := cookieValue(key, b)
		t.values[b] = v
		t.lookup[v] = b
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
		if _, err := rand.Read(b[:]); err != nil {
			// crypto/rand does not fail on supported platforms; fall back to a
			// key that is at least unique per process.
			binary.BigEndian.PutUint64(b[:], uint64(len(processSecret.key)))
		}
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
// and middleware name (the latest New of each). Two middlewares on one host
// with the same cookie name (the default) but different secrets would
// otherwise overwrite each other's cookie on every request, since a browser
// keeps one cookie per name, domain and path: each accepts the other's
// cookie as valid, takes its bucket (a client's bucket is its own random
// draw, whichever middleware drew it) and leaves the cookie as it is.
var cookieTables = struct {
	sync.Mutex
	m map[string]map[string]*signedBuckets
}{m: map[string]map[string]*signedBuckets{}}

const maxCookieTables = 64 // middlewares sharing one cookie name

// shareCookieTable publishes middleware's table for cookieName.
func shareCookieTable(cookieName, middleware string, t *signedBuckets) {
	cookieTables.Lock()
	defer cookieTables.Unlock()
	if len(cookieTables.m) >= maxCookieTables && cookieTables.m[cookieName] == nil {
		for k := range cookieTables.m {
			delete(cookieTables.m, k)
			break
		}
	}
	byMW := cookieTables.m[cookieName]
	if byMW == nil {
		byMW = map[string]*signedBuckets{}
		cookieTables.m[cookieName] = byMW
	}
	if len(byMW) >= maxCookieTables && byMW[middleware] == nil {
		for k := range byMW {
			delete(byMW, k)
			break
		}
	}
	byMW[middleware] = t
}

// foreignBucket looks value up in the tables of the other middlewares that
// use cookieName, and returns its bucket.
func foreignBucket(cookieName, middleware, value string) (int, bool) {
	cookieTables.Lock()
	defer cookieTables.Unlock()
	for mw, t := range cookieTables.m[cookieName] {
		if mw == middleware {
			continue
		}
		if b, ok := t.lookup[value]; ok {
			return b % numBuckets, true
		}
	}
	return 0, false
}
