//go:build !yaegi

// Fuzz targets, left out of the Yaegi run (make yaegi_test passes -tags yaegi).
// Seeds live in testdata/fuzz; a crash that fuzzing finds is saved there and
// becomes a regression test.
package plugin

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzCookieAndOverride: sticky cookies, override values and peers never
// cause a panic or a 5xx.
func FuzzCookieAndOverride(f *testing.F) {
	canarySrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) }))
	f.Cleanup(canarySrv.Close)
	cfg := baseConfig(canarySrv.URL, 50)
	cfg.Override.TrustedIPs = []string{"10.0.0.0/8", "::1"}
	cfg.Override.Cookie = "force"
	cfg.Sticky.Cookie.PreviousSecrets = []string{"old"}
	c, err := newCanary(context.Background(), stableNext, cfg, "fuzz@file")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.signed.values[7], "canary", "10.0.0.1:1", "always")
	f.Add("42.AAAAAAAAAAAAAAAAAAAAAA", "never", "192.0.2.1:80", "")
	f.Add("", "", "[::1]:5", "CANARY")
	f.Add("%zz;;==", "\x00\xff", "not-an-address", "stable")
	f.Add("99999999999999999999999.x", "always", "[fe80::1%eth0]:1", "nope")
	f.Fuzz(func(t *testing.T, cookie, override, remote, forceCookie string) {
		if !serverAccepts(cookie) || !serverAccepts(override) || !serverAccepts(forceCookie) || !serverAccepts(remote) {
			return // Go's HTTP server answers 400 (or the kernel never gives such a peer) before any middleware runs
		}
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.RemoteAddr = remote
		req.Header.Set("Cookie", "edgecanary="+cookie+"; force="+forceCookie)
		req.Header["X-Canary"] = []string{override}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for cookie %q override %q peer %q", rec.Code, cookie, override, remote)
		}
		if _, ok := req.Header["X-Canary"]; ok {
			t.Fatal("the override header was not removed")
		}
	})
}

// serverAccepts reports whether net/http's server accepts s as a header
// value: no control characters but tab (RFC 9110 field-value).
func serverAccepts(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzForwardedKey: X-Forwarded-For and the other key sources never panic
// and always give the same, non-empty, bounded key for the same request.
func FuzzForwardedKey(f *testing.F) {
	f.Add("203.0.113.1, 198.51.100.2", "10.0.0.1:1", 1, "", "h")
	f.Add("junk,,, ,", "[2001:db8::1]:5", 3, "k", "H")
	f.Add("[::ffff:1.2.3.4]:80", "1.2.3.4", 0, strings.Repeat("x", 300), "")
	f.Add("fe80::1%eth0", "@", 2, "", "")
	f.Fuzz(func(t *testing.T, xff, remote string, depth int, header, host string) {
		if depth < 0 || depth > 64 {
			return
		}
		for _, sc := range []SourceCriterion{
			{},
			{IPStrategy: &IPStrategy{Depth: depth}},
			{IPStrategy: &IPStrategy{ExcludedIPs: []string{"198.51.100.0/24", "::1"}, IPv6Subnet: 64}},
			{RequestHeaderName: "X-Key"},
			{RequestHost: true},
		} {
			cfg := rlConfig(1, "1s", 1)
			cfg.SourceCriterion = sc
			l, err := newLimiter(context.Background(), "fuzz-key@file", cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
			req.RemoteAddr = remote
			req.Host = host
			req.Header.Set("X-Forwarded-For", xff)
			req.Header.Set("X-Key", header)
			var k1, k2 string
			if l.source == sourcePeer {
				k1, k2 = peerKeyOf(l, remote), peerKeyOf(l, remote)
			} else {
				k1, k2 = sourceKey(l, req), sourceKey(l, req)
			}
			if k1 != k2 {
				t.Fatalf("non-deterministic key: %q then %q", k1, k2)
			}
			if k1 == "" && remote != "" {
				t.Fatalf("empty key for peer %q, xff %q", remote, xff)
			}
			if len(k1) > maxKeyLen+len("sha256:")+64+8 && len(k1) > len(remote)+8 {
				t.Fatalf("unbounded key of %d bytes", len(k1))
			}
		}
	})
}

// peerKeyOf is the key the peer path uses for a RemoteAddr.
func peerKeyOf(l *limiter, remote string) string {
	l.sem <- struct{}{}
	b := peerBucket(l, remote, 0)
	<-l.sem
	for k, v := range l.buckets {
		if v == b {
			return k
		}
	}
	return ""
}

// FuzzRedisReply: whatever a Redis server (or something pretending to be
// one) answers, the RESP reader returns a value or an error: never a panic,
// never an allocation far beyond what it read.
func FuzzRedisReply(f *testing.F) {
	for _, seed := range []string{"+OK\r\n", "-ERR x\r\n", ":42\r\n", "$3\r\nfoo\r\n", "$-1\r\n", "*2\r\n:1\r\n$1\r\na\r\n", "*-1\r\n",
		"*1\r\n*1\r\n*1\r\n:1\r\n", "$999999999999\r\n", "*99999999\r\n", ":9223372036854775808\r\n", "$2\r\nab", "+OK"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), redisReadBuf)
		for i := 0; i < 4; i++ {
			if _, err := readRedisReply(br, 0); err != nil {
				return
			}
		}
	})
}

// FuzzGCRAReply: takeGCRA's reader of the script's reply never panics, and
// reads what the generic reader reads: when it accepts a reply, parsing the
// generic reader's value gives the same six integers, and an error reply is
// the same error.
func FuzzGCRAReply(f *testing.F) {
	for _, seed := range []string{"*6\r\n:1\r\n:0\r\n:749\r\n:1764460800123456\r\n:1764460800123466\r\n:0\r\n", "*6\r\n:-1\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n",
		"-NOSCRIPT No matching script\r\n", "*6\r\n:1\r\n:2\r\n", "*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", "*6\r\n$1\r\n1\r\n:2\r\n:3\r\n:4\r\n:5\r\n:6\r\n",
		"*6\r\n:1\r\n:2\r\n:3\r\n:99999999999999999999\r\n:5\r\n:6\r\n", ":1\r\n", "*6\r\n:\r\n:-\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
		"*6\r\n:1\r\n:2\r\n:3\r\n:9999999999999999999\r\n:5\r\n:6\r\n", "*6\r\n:1\r\n:2\r\n:3\r\n:-999999999999999999\r\n:5\r\n:6\r\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, serverErr, err := readGCRAReply(bufio.NewReaderSize(bytes.NewReader(data), redisReadBuf))
		generic, gerr := readRedisReply(bufio.NewReaderSize(bytes.NewReader(data), redisReadBuf), 0)
		switch {
		case err != nil:
			return
		case serverErr != nil:
			if gerr != nil || replyError(generic) == nil || replyError(generic).Error() != serverErr.Error() {
				t.Fatalf("error reply %v, the generic reader: %#v %v", serverErr, generic, gerr)
			}
		default:
			parsed, perr := parseGCRAReply(generic)
			if gerr != nil || perr != nil || parsed != r {
				t.Fatalf("read %+v, the generic reader: %#v %v, parsed %+v %v", r, generic, gerr, parsed, perr)
			}
		}
	})
}
