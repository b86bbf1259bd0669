package plugin

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCookieVariantsMatchReference: every generated path (but the Redis
// ones) answers as the reference path for the cookies the random sequences
// of TestGeneratedPathsMatchReference never send: misses of the 1-based
// tables (garbage, a previous secret's value, another middleware's, a stale
// cookie before a valid one), with and without the override header, and the
// buckets at the rollout's cut. (From the review of the 1-based tables.)
func TestCookieVariantsMatchReference(t *testing.T) {
	_, canarySrv, stable := pathBackends(t)
	keys := pathKeys(false)
	prevIntn := randIntn
	defer func() { randIntn = prevIntn }()
	randIntn = func(int) int { return 4321 }
	old := getSignedBuckets("review18-old", nil)
	other := getSignedBuckets("review18-other", nil)
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			cfg := pathConfig(t, key, canarySrv.URL, false)
			if strings.Contains(key, "L") {
				cfg.RateLimit = rlConfig(1, "1h", 1000)
				cfg.RateLimit.Headers = false
			}
			if cfg.Sticky.Cookie.Secret != "" {
				cfg.Sticky.Cookie.PreviousSecrets = []string{"review18-old", cfg.Sticky.Cookie.Secret}
			}
			if cfg.Sticky.Cookie.Secret != "" {
				ocfg := baseConfig(canarySrv.URL, 50)
				ocfg.Sticky.Cookie.Secret = "review18-other"
				pathCanary(t, stable, ocfg, "other18-"+key+"@file", false) // shares the cookie name: its cookies are foreign
			}
			gen := pathCanary(t, stable, cfg, "gen18-"+key+"@file", true)
			ref := pathCanary(t, stable, cfg, "ref18-"+key+"@file", false)
			if got := pathKey(gen); got != key {
				t.Fatalf("served by %q, want %q", got, key)
			}
			cut := -1
			if gen.cut != nil {
				cut = int(atomic.LoadInt32(gen.cut))
			}
			buckets := []int{0, 1, 2, 4999, 5000, 5001, numBuckets - 2, numBuckets - 1}
			if cut >= 0 {
				buckets = append(buckets, cut-1, cut, cut+1)
			}
			var cookies []string
			name := gen.cookieName
			if gen.signed != nil {
				for _, b := range buckets {
					if b < 0 || b >= numBuckets {
						continue
					}
					v := gen.signed.values[b]
					cookies = append(cookies,
						name+"="+v,
						name+"="+old.values[b],
						name+"=stale; "+name+"="+v,
						name+"="+v+"; "+name+"=stale",
						name+"="+old.values[b]+"; "+name+"="+v,
						name+"=stale; "+name+"="+old.values[b],
						name+"="+other.values[b],
					)
				}
			}
			cookies = append(cookies, "", name+"=", name+"=garbage", name+"=0.AAAA", "other=1")
			for i, ck := range cookies {
				for _, override := range []string{"", "always"} {
					a := cookieVariantAnswer(gen, ck, override, i)
					b := cookieVariantAnswer(ref, ck, override, i)
					if a != b {
						t.Errorf("cookie %q override %q:\ngenerated %s\nreference %s", ck, override, a, b)
					}
				}
			}
		})
	}
}

func cookieVariantAnswer(c *canary, cookie, override string, i int) string {
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.RemoteAddr = fmt.Sprintf("192.0.2.%d:1000", i%200)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if override != "" {
		req.Header.Set("X-Canary", override)
	}
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	return fmt.Sprintf("%d %q set-cookie=%q", rec.Code, strings.ReplaceAll(rec.Body.String(), c.name, "NAME"), rec.Header()["Set-Cookie"])
}
