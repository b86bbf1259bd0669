package plugin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// versionServer is a backend that answers with its version name and echoes
// the override header it received, if any.
func versionServer(t *testing.T, version string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Seen-Canary", req.Header.Get("X-Canary"))
		rw.Header().Set("X-Seen-Host", req.Host)
		rw.Header().Set("X-Seen-Xff", req.Header.Get("X-Forwarded-For"))
		_, _ = io.WriteString(rw, version)
	}))
	t.Cleanup(srv.Close)
	return srv
}

var stableNext = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
	rw.Header().Set("X-Seen-Canary", req.Header.Get("X-Canary"))
	_, _ = io.WriteString(rw, "stable")
})

func baseConfig(canaryURL string, canaryWeight int) *Config {
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{
		"stable": {Weight: 100 - canaryWeight},
		"canary": {Weight: canaryWeight, URL: canaryURL},
	}
	cfg.Sticky.Cookie.Secret = "test-secret"
	return cfg
}

func testCanary(t *testing.T, cfg *Config) *canary {
	t.Helper()
	c, err := newCanary(context.Background(), stableNext, cfg, "shop@file")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// serve sends one request and returns the body and the response.
func serve(h http.Handler, req *http.Request) (string, *http.Response) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return string(body), res
}

func stickyCookie(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestCreateConfigDefaults(t *testing.T) {
	cfg := CreateConfig()
	ck := cfg.Sticky.Cookie
	if ck.Name != "edgecanary" || ck.MaxAge != 86400 || ck.Path != "/" || ck.SameSite != "lax" || ck.Secure || ck.Secret != "" || ck.Domain != "" {
		t.Errorf("cookie defaults: %+v", ck)
	}
	if cfg.Override.Header != "X-Canary" || cfg.Override.Cookie != "" || len(cfg.Override.TrustedIPs) != 0 {
		t.Errorf("override defaults: %+v", cfg.Override)
	}
	if cfg.Sticky.Header != "" {
		t.Errorf("sticky.header default: %q", cfg.Sticky.Header)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	testCases := []struct {
		desc    string
		mutate  func(cfg *Config)
		wantErr string
	}{
		{desc: "no versions", mutate: func(cfg *Config) { cfg.Versions = nil }, wantErr: "versions"},
		{desc: "two primaries", mutate: func(cfg *Config) {
			cfg.Versions = map[string]VersionConfig{"a": {Weight: 1}, "b": {Weight: 1}}
		}, wantErr: "more than one primary"},
		{desc: "no primary", mutate: func(cfg *Config) {
			cfg.Versions = map[string]VersionConfig{"a": {Weight: 1, URL: "http://127.0.0.1:1"}}
		}, wantErr: "no primary"},
		{desc: "negative weight", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: -1, URL: "http://127.0.0.1:1"}
		}, wantErr: "versions.canary.weight"},
		{desc: "all zero", mutate: func(cfg *Config) {
			cfg.Versions = map[string]VersionConfig{"stable": {}, "canary": {URL: "http://127.0.0.1:1"}}
		}, wantErr: "all weights are zero"},
		{desc: "bad url", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "ftp://x"}
		}, wantErr: "versions.canary.url"},
		{desc: "url without host", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "http://"}
		}, wantErr: "versions.canary.url"},
		{desc: "unparsable url", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "http://[::1"}
		}, wantErr: "versions.canary.url"},
		{desc: "url and urls", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "http://a", URLs: []string{"http://b"}}
		}, wantErr: "either url or urls"},
		{desc: "bad urls entry", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URLs: []string{"http://a", "nope"}}
		}, wantErr: "versions.canary.urls[1]"},
		{desc: "bad timeout", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "http://a", Timeout: "soon"}
		}, wantErr: "versions.canary.timeout"},
		{desc: "timeout on primary", mutate: func(cfg *Config) {
			cfg.Versions["stable"] = VersionConfig{Weight: 1, Timeout: "1s"}
		}, wantErr: "versions.stable.timeout"},
		{desc: "bad version name", mutate: func(cfg *Config) {
			cfg.Versions["Canary_2"] = VersionConfig{Weight: 1, URL: "http://a"}
		}, wantErr: "invalid version name"},
		{desc: "reserved name", mutate: func(cfg *Config) {
			cfg.Versions["always"] = VersionConfig{Weight: 1, URL: "http://a"}
		}, wantErr: "reserved"},
		{desc: "sameSite sideways", mutate: func(cfg *Config) { cfg.Sticky.Cookie.SameSite = "sideways" }, wantErr: "sticky.cookie.sameSite"},
		{desc: "sameSite none without secure", mutate: func(cfg *Config) { cfg.Sticky.Cookie.SameSite = "none" }, wantErr: "requires sticky.cookie.secure"},
		{desc: "empty cookie name", mutate: func(cfg *Config) { cfg.Sticky.Cookie.Name = "" }, wantErr: "sticky.cookie.name"},
		{desc: "bad cookie name", mutate: func(cfg *Config) { cfg.Sticky.Cookie.Name = "a b" }, wantErr: "sticky.cookie.name"},
		{desc: "negative maxAge", mutate: func(cfg *Config) { cfg.Sticky.Cookie.MaxAge = -1 }, wantErr: "sticky.cookie.maxAge"},
		{desc: "bad sticky header", mutate: func(cfg *Config) { cfg.Sticky.Header = "X User" }, wantErr: "sticky.header"},
		{desc: "bad trusted IP", mutate: func(cfg *Config) { cfg.Override.TrustedIPs = []string{"10.0.0.0/33"} }, wantErr: "override.trustedIPs[0]"},
		{desc: "bad override header", mutate: func(cfg *Config) { cfg.Override.Header = "X:Canary" }, wantErr: "override.header"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := baseConfig("http://127.0.0.1:1", 20)
			test.mutate(cfg)
			_, err := New(context.Background(), stableNext, cfg, "shop@file")
			if err == nil {
				t.Fatalf("New accepted the config, want an error containing %q", test.wantErr)
			}
			if !strings.Contains(err.Error(), test.wantErr) {
				t.Errorf("error %q does not contain %q", err, test.wantErr)
			}
		})
	}
}

func TestNewDoesNotModifyConfig(t *testing.T) {
	cfg := baseConfig("http://127.0.0.1:1", 20)
	cfg.Sticky.Cookie.Secret = ""
	cfg.Sticky.Cookie.Path = ""
	testCanary(t, cfg)
	if cfg.Sticky.Cookie.Secret != "" || cfg.Sticky.Cookie.Path != "" || len(cfg.Versions) != 2 {
		t.Errorf("New changed the shared config: %+v", cfg)
	}
}

func TestBucketsFollowWeights(t *testing.T) {
	testCases := []struct {
		desc       string
		versions   map[string]VersionConfig
		wantCounts map[string]int
	}{
		{
			desc:       "80/20",
			versions:   map[string]VersionConfig{"stable": {Weight: 80}, "canary": {Weight: 20, URL: "http://c"}},
			wantCounts: map[string]int{"stable": 8000, "canary": 2000},
		},
		{
			desc:       "relative weights",
			versions:   map[string]VersionConfig{"stable": {Weight: 3}, "canary": {Weight: 1, URL: "http://c"}},
			wantCounts: map[string]int{"stable": 7500, "canary": 2500},
		},
		{
			desc:       "canary at 0",
			versions:   map[string]VersionConfig{"stable": {Weight: 100}, "canary": {Weight: 0, URL: "http://c"}},
			wantCounts: map[string]int{"stable": 10000},
		},
		{
			desc:       "primary at 0",
			versions:   map[string]VersionConfig{"stable": {Weight: 0}, "canary": {Weight: 5, URL: "http://c"}},
			wantCounts: map[string]int{"canary": 10000},
		},
		{
			desc: "three versions",
			versions: map[string]VersionConfig{
				"stable": {Weight: 70}, "b": {Weight: 10, URL: "http://b"}, "a": {Weight: 20, URL: "http://a"},
			},
			wantCounts: map[string]int{"a": 2000, "b": 1000, "stable": 7000},
		},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := baseConfig("", 0)
			cfg.Versions = test.versions
			c := testCanary(t, cfg)
			counts := map[string]int{}
			for _, r := range c.bucketOf {
				counts[r.name]++
			}
			for name, want := range test.wantCounts {
				if counts[name] != want {
					t.Errorf("%s: %d buckets, want %d (all: %v)", name, counts[name], want, counts)
				}
			}
			if len(counts) != len(test.wantCounts) {
				t.Errorf("versions with buckets: %v, want %v", counts, test.wantCounts)
			}
		})
	}
}

func TestRaisingWeightOnlyAddsUsers(t *testing.T) {
	prev := testCanary(t, baseConfig("http://c", 0))
	for w := 1; w <= 100; w++ {
		cur := testCanary(t, baseConfig("http://c", w))
		for b := 0; b < numBuckets; b++ {
			if prev.bucketOf[b].name == "canary" && cur.bucketOf[b].name != "canary" {
				t.Fatalf("weight %d moved bucket %d out of the canary", w, b)
			}
		}
		prev = cur
	}
	for b := 0; b < numBuckets; b++ {
		if prev.bucketOf[b].name != "canary" {
			t.Fatalf("weight 100: bucket %d not on the canary", b)
		}
	}
}

func TestStickyCookieRoundTrip(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	c := testCanary(t, baseConfig(canarySrv.URL, 50))

	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		body, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
		ck := stickyCookie(res, "edgecanary")
		if ck == nil {
			t.Fatal("a new client got no sticky cookie")
		}
		if !ck.HttpOnly || ck.Path != "/" || ck.MaxAge != 86400 || ck.SameSite != http.SameSiteLaxMode {
			t.Fatalf("cookie attributes: %+v", ck)
		}
		if strings.Contains(ck.Value, "canary") || strings.Contains(ck.Value, "stable") || strings.Contains(ck.Value, "127.0.0.1") {
			t.Fatalf("cookie names a version or an address: %q", ck.Value)
		}
		seen[body]++
		for j := 0; j < 3; j++ {
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.AddCookie(ck)
			again, res2 := serve(c, req)
			if again != body {
				t.Fatalf("returning client moved from %q to %q", body, again)
			}
			if stickyCookie(res2, "edgecanary") != nil {
				t.Fatal("a valid cookie was replaced")
			}
		}
	}
	if seen["canary"] == 0 || seen["stable"] == 0 {
		t.Errorf("50/50 split over 200 clients reached only %v", seen)
	}
}

func TestInvalidCookiesAreReplaced(t *testing.T) {
	c := testCanary(t, baseConfig("http://127.0.0.1:1", 0))
	valid := c.signed.values[42]
	other := getSignedBuckets("another-secret", nil).values[42]
	testCases := []struct {
		desc  string
		value string
	}{
		{desc: "tampered bucket", value: "43" + valid[2:]},
		{desc: "tampered signature", value: valid[:len(valid)-1] + "A"},
		{desc: "truncated", value: valid[:len(valid)-4]},
		{desc: "other key", value: other},
		{desc: "garbage", value: "%%%not-a-cookie"},
		{desc: "empty", value: ""},
		{desc: "huge bucket", value: "99999999999999999999." + valid[3:]},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.Header.Set("Cookie", "edgecanary="+test.value)
			body, res := serve(c, req)
			if res.StatusCode != http.StatusOK || body != "stable" {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			ck := stickyCookie(res, "edgecanary")
			if ck == nil || ck.Value == test.value {
				t.Fatalf("invalid cookie %q was not replaced: %+v", test.value, ck)
			}
			if c.signed.current[ck.Value] == 0 {
				t.Fatalf("replacement cookie %q does not verify", ck.Value)
			}
		})
	}
}

func TestCookieFromRemovedVersionIsRemapped(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	before := testCanary(t, baseConfig(canarySrv.URL, 100))
	_, res := serve(before, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	ck := stickyCookie(res, "edgecanary")

	cfg := baseConfig("", 0)
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}}
	after := testCanary(t, cfg)
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.AddCookie(ck)
	body, res2 := serve(after, req)
	if body != "stable" || res2.StatusCode != http.StatusOK {
		t.Fatalf("got %d %q", res2.StatusCode, body)
	}
	if stickyCookie(res2, "edgecanary") != nil {
		t.Error("the bucket cookie stays valid and needs no replacement")
	}
}

func TestSecretRotation(t *testing.T) {
	old := testCanary(t, baseConfig("http://127.0.0.1:1", 0))
	oldCookie := old.signed.values[1234]

	cfg := baseConfig("http://127.0.0.1:1", 0)
	cfg.Sticky.Cookie.Secret = "new-secret"
	cfg.Sticky.Cookie.PreviousSecrets = []string{"test-secret"}
	c := testCanary(t, cfg)
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.Header.Set("Cookie", "edgecanary="+oldCookie)
	_, res := serve(c, req)
	ck := stickyCookie(res, "edgecanary")
	if ck == nil {
		t.Fatal("a cookie signed with a previous secret was not re-signed")
	}
	if ck.Value != c.signed.values[1234] {
		t.Errorf("re-signed cookie %q, want the same bucket under the new key %q", ck.Value, c.signed.values[1234])
	}
}

func TestStickyHeaderIsDeterministicAcrossInstances(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	cfg := baseConfig(canarySrv.URL, 50)
	cfg.Sticky.Header = "X-User-ID"
	a, b := testCanary(t, cfg), testCanary(t, cfg)
	seen := map[string]bool{}
	for i := 0; i < 60; i++ {
		user := "user-" + strings.Repeat("x", i)
		var bodies []string
		for _, h := range []http.Handler{a, b, a} {
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.Header.Set("X-User-Id", user)
			body, res := serve(h, req)
			if stickyCookie(res, "edgecanary") != nil {
				t.Fatal("header stickiness set a cookie")
			}
			bodies = append(bodies, body)
		}
		if bodies[0] != bodies[1] || bodies[1] != bodies[2] {
			t.Fatalf("user %q saw %v", user, bodies)
		}
		seen[bodies[0]] = true
	}
	if !seen["canary"] || !seen["stable"] {
		t.Errorf("60 users at 50%% all went to %v", seen)
	}
	// Without the header, the cookie applies.
	_, res := serve(a, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if stickyCookie(res, "edgecanary") == nil {
		t.Error("a request without the sticky header got no cookie")
	}
}

func TestOverride(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	testCases := []struct {
		desc       string
		remoteAddr string
		value      string
		want       string
	}{
		{desc: "trusted canary", remoteAddr: "10.1.2.3:5555", value: "canary", want: "canary"},
		{desc: "trusted always", remoteAddr: "10.1.2.3:5555", value: "always", want: "canary"},
		{desc: "trusted never", remoteAddr: "10.1.2.3:5555", value: "never", want: "stable"},
		{desc: "trusted upper case", remoteAddr: "10.1.2.3:5555", value: "CANARY", want: "canary"},
		{desc: "trusted unknown version", remoteAddr: "10.1.2.3:5555", value: "nope", want: "stable"},
		{desc: "untrusted", remoteAddr: "192.0.2.1:5555", value: "canary", want: "stable"},
		{desc: "trusted single IPv6", remoteAddr: "[::1]:5555", value: "canary", want: "canary"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := baseConfig(canarySrv.URL, 0)
			cfg.Override.TrustedIPs = []string{"10.0.0.0/8", "::1"}
			c := testCanary(t, cfg)
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.RemoteAddr = test.remoteAddr
			req.Header.Set("X-Canary", test.value)
			body, res := serve(c, req)
			if body != test.want {
				t.Errorf("served by %q, want %q", body, test.want)
			}
			if seen := res.Header.Get("X-Seen-Canary"); seen != "" {
				t.Errorf("the override header reached the backend: %q", seen)
			}
		})
	}
}

func TestOverrideIgnoredWithoutTrustedIPs(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	c := testCanary(t, baseConfig(canarySrv.URL, 0))
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.RemoteAddr = "127.0.0.1:1000"
	req.Header.Set("X-Canary", "canary")
	body, res := serve(c, req)
	if body != "stable" || res.Header.Get("X-Seen-Canary") != "" {
		t.Errorf("got %q, backend saw override %q", body, res.Header.Get("X-Seen-Canary"))
	}
}

func TestOverrideCookie(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	cfg := baseConfig(canarySrv.URL, 0)
	cfg.Override.Cookie = "canary-override"
	cfg.Override.TrustedIPs = []string{"192.0.2.0/24"}
	c := testCanary(t, cfg)
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
	req.AddCookie(&http.Cookie{Name: "canary-override", Value: "always"})
	if body, _ := serve(c, req); body != "canary" {
		t.Errorf("cookie override from a trusted peer served %q", body)
	}
}

func TestProxyKeepsHostAndForwardsFor(t *testing.T) {
	canarySrv := versionServer(t, "canary")
	c := testCanary(t, baseConfig(canarySrv.URL, 100))
	req := httptest.NewRequest(http.MethodGet, "http://shop.test/path?q=1", nil)
	req.RemoteAddr = "198.51.100.7:4000"
	body, res := serve(c, req)
	if body != "canary" {
		t.Fatalf("served by %q", body)
	}
	if h := res.Header.Get("X-Seen-Host"); h != "shop.test" {
		t.Errorf("upstream Host %q, want shop.test", h)
	}
	if xff := res.Header.Get("X-Seen-Xff"); xff != "198.51.100.7" {
		t.Errorf("upstream X-Forwarded-For %q", xff)
	}
}

func TestProxyErrors(t *testing.T) {
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		select {
		case <-hang:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); slow.Close() })

	cfg := baseConfig(slow.URL, 100)
	cfg.Versions["canary"] = VersionConfig{Weight: 100, URL: slow.URL, Timeout: "50ms"}
	c := testCanary(t, cfg)
	if _, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)); res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("timeout: status %d, want 504", res.StatusCode)
	}

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	c = testCanary(t, baseConfig(closed.URL, 100))
	if _, res := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)); res.StatusCode != http.StatusBadGateway {
		t.Errorf("refused: status %d, want 502", res.StatusCode)
	}
}

func TestRoundRobinURLs(t *testing.T) {
	a, b := versionServer(t, "a"), versionServer(t, "b")
	cfg := baseConfig("", 0)
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 0}, "canary": {Weight: 1, URLs: []string{a.URL, b.URL}}}
	c := testCanary(t, cfg)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		body, _ := serve(c, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
		seen[body]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Errorf("round robin: %v", seen)
	}
}

func TestParseDuration(t *testing.T) {
	testCases := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "10s", want: "10s"},
		{in: "250ms", want: "250ms"},
		{in: "10", want: "10s"},
		{in: "0.5", want: "500ms"},
		{in: "abc", wantErr: true},
		{in: "-1s", wantErr: true},
		{in: "-3", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, test := range testCases {
		d, err := parseDuration("f", test.in)
		if test.wantErr {
			if err == nil {
				t.Errorf("%q: want an error, got %v", test.in, d)
			}
			continue
		}
		if err != nil || d.String() != test.want {
			t.Errorf("%q: got %v, %v; want %s", test.in, d, err, test.want)
		}
	}
}
