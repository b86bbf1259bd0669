package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostileBackend is a version that misbehaves on demand: it streams without
// announcing it, cuts bodies mid-response, and serves large bodies for slow
// readers.
type hostileBackend struct {
	version string
	url     string
	cut     atomic.Bool // /cut and / write part of the body, then close the connection
	flushed chan time.Time
}

func newHostileBackend(t *testing.T, version string) *hostileBackend {
	t.Helper()
	b := &hostileBackend{version: version, flushed: make(chan time.Time, 64)}
	mux := http.NewServeMux()
	// /stream writes a line, flushes, holds the response open for 1.5 s and
	// writes a second line. Its content type is ?ct=, and it sends no
	// Content-Length, as NDJSON APIs, token streams and SSE do.
	mux.HandleFunc("/stream", func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("Content-Type", req.URL.Query().Get("ct"))
		rw.Header().Set("X-Version", version)
		_, _ = io.WriteString(rw, `{"line":1}`+"\n")
		_ = http.NewResponseController(rw).Flush()
		select {
		case b.flushed <- time.Now():
		default:
		}
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-req.Context().Done():
			return
		}
		_, _ = io.WriteString(rw, `{"line":2}`+"\n")
	})
	// /big is 16 MiB, more than the socket buffers hold.
	mux.HandleFunc("/big", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Length", fmt.Sprint(16<<20))
		rw.Header().Set("X-Version", version)
		chunk := make([]byte, 64<<10)
		for i := 0; i < 256; i++ {
			if _, err := rw.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Version", version)
		if !b.cut.Load() {
			_, _ = io.WriteString(rw, version)
			return
		}
		rw.Header().Set("Content-Length", "1000")
		rw.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rw, "partial")
		_ = http.NewResponseController(rw).Flush()
		conn, _, err := http.NewResponseController(rw).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	b.url = "http://" + l.Addr().String()
	return b
}

// attempt is one request's outcome as the client saw it.
type attempt struct {
	status  int
	version string
	body    string
	err     error // the connection or the body broke
}

func try(c *http.Client, url string, headers map[string]string) attempt {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		return attempt{err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return attempt{status: res.StatusCode, version: res.Header.Get("X-Version"), body: string(body), err: err}
}

// everythingOnExtra turns every feature on, reporting to ingest.
func everythingOnExtra(ingest string) string {
	return fmt.Sprintf(`          override:
            trustedIPs: ["127.0.0.1/32"]
          rateLimit:
            average: 1000
            burst: 1000
          circuitBreaker:
            consecutiveFailures: 3
          sidecar:
            address: %q
            interval: 200ms
`, ingest)
}

// TestTraefikUnannouncedStreamsFlow: with everything on, responses that
// stream without the request saying so (NDJSON asked for with
// Accept: application/json, SSE read by fetch() with Accept: */*) reach the
// client as the backend flushes them, through the primary and through a
// proxied version, and are counted with their real status.
func TestTraefikUnannouncedStreamsFlow(t *testing.T) {
	stable, canary := newHostileBackend(t, "stable"), newHostileBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, canaryDynamic(stable.url, canary.url, 50, 50, everythingOnExtra(sc.ingest)), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	sent := map[string]float64{}
	for _, b := range []*hostileBackend{stable, canary} {
		for _, tc := range []struct{ accept, ct string }{
			{"application/json", "application/x-ndjson"},
			{"*/*", "application/json"},
			{"*/*", "text/event-stream"},
			{"text/event-stream", "text/event-stream"},
		} {
			req, _ := http.NewRequest(http.MethodGet, tr.web+"/stream?ct="+tc.ct, nil)
			req.Header.Set("Accept", tc.accept)
			req.Header.Set("X-Canary", b.version)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(res.Body)
			line, err := br.ReadString('\n')
			got := time.Now()
			if err != nil || line != `{"line":1}`+"\n" {
				t.Fatalf("%s %+v: first line %q, %v", b.version, tc, line, err)
			}
			if rest, err := io.ReadAll(br); err != nil || string(rest) != `{"line":2}`+"\n" {
				t.Fatalf("%s %+v: the rest of the stream %q, %v", b.version, tc, rest, err)
			}
			res.Body.Close()
			var flushedAt time.Time
			select {
			case flushedAt = <-b.flushed:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s %+v: the backend did not flush", b.version, tc)
			}
			lag := got.Sub(flushedAt)
			t.Logf("%s, Accept %s, %s: first line %v after the backend's flush", b.version, tc.accept, tc.ct, lag.Round(time.Millisecond))
			if lag > 100*time.Millisecond {
				t.Errorf("%s %+v: the first line came %v after the backend flushed it: the stream was held back", b.version, tc, lag)
			}
			sent[b.version+" 200"]++
		}
	}
	var got map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for got = requestCounts(sc.scrape(), "shop@file"); !sameCounts(got, sent); got = requestCounts(sc.scrape(), "shop@file") {
		if time.Now().After(deadline) {
			t.Fatalf("published %v, sent %v", got, sent)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("published: %v", got)
}

// TestTraefikAbortedProbeDoesNotBlockAVersion: a backend writes its headers
// and closes the connection mid-body while its breaker is half-open. Go's
// proxy and Traefik's panic with http.ErrAbortHandler; the probe must still
// be recorded, so that once the backend is healthy again it gets its traffic
// back within a few openDurations, for a canary and for the primary. Every
// request is counted, the cut ones as 502.
func TestTraefikAbortedProbeDoesNotBlockAVersion(t *testing.T) {
	for _, primary := range []bool{false, true} {
		name := "canary"
		if primary {
			name = "primary"
		}
		t.Run(name, func(t *testing.T) {
			stable, canary := newHostileBackend(t, "stable"), newHostileBackend(t, "canary")
			victim, weight := canary, 100
			if primary {
				victim, weight = stable, 0
			}
			sc := startSidecar(t)
			tr := startTraefik(t, canaryDynamic(stable.url, canary.url, 100-weight, weight, fmt.Sprintf(`          circuitBreaker:
            consecutiveFailures: 1
            openDuration: 1s
          sidecar:
            address: %q
            interval: 200ms
`, sc.ingest)), traefikOptions{})
			tr.waitRouter("shop")
			// A new connection per request: Go's client silently retries a GET
			// whose reused connection closed before any response, which would
			// hide the cut probes.
			c := client("")
			c.Transport.(*http.Transport).DisableKeepAlives = true
			sent := map[string]float64{}
			count := func(a attempt) {
				switch {
				case a.err != nil: // cut mid-body: the connection closes, with or without the headers
					sent[victim.version+" 502"]++
				default:
					v := a.version
					if v == "" {
						v = victim.version // refused by the breaker
					}
					sent[fmt.Sprintf("%s %d", v, a.status)]++
				}
			}
			victim.cut.Store(true)
			first := try(c, tr.web+"/", nil)
			count(first)
			if first.err == nil {
				t.Fatalf("the cut body reached the client whole: %+v", first)
			}
			// Open: the canary's users fall back, the primary's get 503.
			open := try(c, tr.web+"/", nil)
			count(open)
			if primary && open.status != http.StatusServiceUnavailable || !primary && open.version != "stable" {
				t.Fatalf("after a cut body the breaker is not open: %+v", open)
			}
			// Half-open: the probe is cut too.
			var probe attempt
			var seen []string
			deadline := time.Now().Add(10 * time.Second)
			for probe.err == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no half-open probe reached the backend in 10 s: %v", seen)
				}
				time.Sleep(25 * time.Millisecond)
				probe = try(c, tr.web+"/", nil)
				count(probe)
				seen = append(seen, fmt.Sprintf("%d %s %v", probe.status, probe.version, probe.err))
			}
			victim.cut.Store(false)
			start := time.Now()
			var back attempt
			waitFor(t, 5*time.Second, victim.version+" serving again within a few openDurations", func() bool {
				back = try(c, tr.web+"/", nil)
				count(back)
				return back.err == nil && back.status == http.StatusOK && back.version == victim.version && back.body == victim.version
			})
			t.Logf("%s healthy again: served %v after the backend recovered", victim.version, time.Since(start).Round(time.Millisecond))
			var got map[string]float64
			deadline = time.Now().Add(20 * time.Second)
			for got = requestCounts(sc.scrape(), "shop@file"); !sameCounts(got, sent); got = requestCounts(sc.scrape(), "shop@file") {
				if time.Now().After(deadline) {
					t.Fatalf("published %v, sent %v: a cut request was not counted once", got, sent)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("sent and published: %v", got)
		})
	}
}

// slowRead asks for /big (16 MiB, more than the socket buffers hold) and
// reads it only after a pause: Traefik's writes to it block meanwhile.
func slowRead(t *testing.T, addr, localIP string, pause time.Duration) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /big HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
	time.Sleep(pause)
	n, _ := io.Copy(io.Discard, conn)
	if n < 16<<20 {
		t.Errorf("slow reader got %d bytes", n)
	}
}

// TestTraefikSlowThresholdJudgesOnlyTheBackend: three clients that read a
// large response slowly, or three whose requests the limiter delays, do not
// make a fast primary "slow": nobody else gets 503.
func TestTraefikSlowThresholdJudgesOnlyTheBackend(t *testing.T) {
	for _, tc := range []struct{ desc, extra string }{
		{"slow readers, everything on", `          rateLimit:
            average: 1000
            burst: 1000
          sidecar:
            address: http://127.0.0.1:1
`},
		{"limiter delays", `          rateLimit:
            average: 1
            period: 2s
            burst: 1
`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			stable, canary := newHostileBackend(t, "stable"), newHostileBackend(t, "canary")
			tr := startTraefik(t, canaryDynamic(stable.url, canary.url, 100, 0, `          circuitBreaker:
            consecutiveFailures: 3
            slowThreshold: 100ms
            openDuration: 1m
`+tc.extra), traefikOptions{})
			tr.waitRouter("shop")
			var wg sync.WaitGroup
			for i := 2; i <= 4; i++ {
				ip := fmt.Sprintf("127.0.0.%d", i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if strings.HasPrefix(tc.desc, "slow") {
						slowRead(t, strings.TrimPrefix(tr.web, "http://"), ip, time.Second)
						return
					}
					c := client(ip)
					start := time.Now()
					if a := try(c, tr.web+"/", nil); a.status != http.StatusOK {
						t.Errorf("%s: first request %+v", ip, a)
					}
					time.Sleep(1700 * time.Millisecond) // the bucket refills at 2 s: a 300 ms delay
					a := try(c, tr.web+"/", nil)
					if a.status != http.StatusOK || time.Since(start) < 1900*time.Millisecond {
						t.Errorf("%s: the second request was not delayed: %+v after %v", ip, a, time.Since(start))
					}
				}()
			}
			wg.Wait()
			if a := try(client("127.0.0.9"), tr.web+"/", nil); a.status != http.StatusOK || a.version != "stable" {
				t.Fatalf("another client got %+v: the breaker judged time that was not the backend's", a)
			}
		})
	}
}

// TestTraefikBadValueLeavesOtherRoutersServing: values at the edges of their
// types used to panic in New, which in Traefik kills the goroutine that
// applies the configuration: no router served any more. Now the middleware's
// routers are disabled with an error naming the field, the others serve, and
// later configurations still apply.
func TestTraefikBadValueLeavesOtherRoutersServing(t *testing.T) {
	stable := newBackend(t, "stable")
	withOther := func(dynamic, router string) string {
		return strings.Replace(dynamic, "  routers:\n", "  routers:\n    "+router+":\n      rule: Host(`"+router+".test`)\n      entryPoints: [web]\n      service: shop-stable\n", 1)
	}
	bad := func(rateLimit string) string {
		return shopDynamic(stable.URL, `          versions:
            stable:
              weight: 1
`, "          rateLimit:\n"+rateLimit)
	}
	tr := startTraefik(t, withOther(bad("            average: 9223372036854775807\n"), "other"), traefikOptions{})
	c := client("")
	serves := func(host string) bool {
		req, _ := http.NewRequest(http.MethodGet, tr.web+"/", nil)
		req.Host = host
		res, err := c.Do(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
	tr.waitFor(30*time.Second, "the other router serving", func() bool { return serves("other.test") })
	tr.waitFor(10*time.Second, "the field error in Traefik's log", func() bool {
		return strings.Contains(tr.logs.String(), "rateLimit.average")
	})
	if serves("shop.test") {
		t.Error("the router with the bad middleware serves")
	}
	// A reload with the other edge value, and a new router: the
	// configuration goroutine is still alive.
	tr.writeDynamic(withOther(withOther(bad("            average: 10000000000\n            period: 1ns\n"), "other"), "third"))
	tr.waitFor(30*time.Second, "a router added after the bad values", func() bool { return serves("third.test") })
	if !serves("other.test") {
		t.Error("the other router stopped serving")
	}
	if strings.Contains(tr.logs.String(), "panic") {
		t.Errorf("Traefik logged a panic:\n%s", tr.logs.String())
	}
}

// TestTraefikRestartLoopAgainstOneSidecar: Traefik restarted again and again
// against one sidecar whose cap is low (300 series). Each process reports
// the same series as the one before it: every report is accepted, none is
// rejected for cardinality, and the totals of every process add up.
func TestTraefikRestartLoopAgainstOneSidecar(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t, "--ingest.maxSeries=300")
	sent := map[string]float64{}
	restarts := 12
	if testing.Short() {
		restarts = 4
	}
	for i := 0; i < restarts; i++ {
		tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL, sc.ingest, ""), traefikOptions{})
		tr.waitRouter("shop")
		c := client("")
		for code := 200; code < 225; code++ {
			a := try(c, fmt.Sprintf("%s/status/%d", tr.web, code), nil)
			if a.err != nil {
				t.Fatal(a.err)
			}
			sent[fmt.Sprintf("%s %d", a.version, a.status)]++
		}
		// Wait until this process's totals are in, then stop it.
		waitFor(t, 20*time.Second, fmt.Sprintf("process %d's requests published", i), func() bool {
			return sameCounts(requestCounts(sc.scrape(), "shop@file"), sent)
		})
		tr.stop()
	}
	mfs := sc.scrape()
	for _, m := range mfs["edgecanary_sidecar_reports_rejected_total"].GetMetric() {
		if m.GetCounter().GetValue() != 0 {
			t.Errorf("reports rejected: %v %v", labels(m), m.GetCounter().GetValue())
		}
	}
	t.Logf("%d Traefik processes, %d series of requests, all published", restarts, len(sent))
}

// trickle is an upload that sends one byte per delay.
type trickle struct {
	n     int
	delay time.Duration
}

func (s *trickle) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.delay)
	s.n--
	p[0] = 'x'
	return 1, nil
}

// TestTraefikSlowUploadsAreNotBackendTimeouts: clients that upload their
// bodies slower than the canary's timeout are served by a healthy canary,
// and do not open its breaker for everyone. (Found by review.)
func TestTraefikSlowUploadsAreNotBackendTimeouts(t *testing.T) {
	stable := newBackend(t, "stable")
	upload := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		n, _ := io.Copy(io.Discard, req.Body)
		rw.Header().Set("X-Version", "canary")
		fmt.Fprintf(rw, "stored %d bytes", n)
	}))
	defer upload.Close()
	tr := startTraefik(t, shopDynamic(stable.URL, fmt.Sprintf(`          versions:
            stable:
              weight: 0
            canary:
              weight: 100
              url: %q
              timeout: 1s
`, upload.URL), `          circuitBreaker:
            consecutiveFailures: 3
            openDuration: 1m
`), traefikOptions{})
	tr.waitRouter("shop")
	c := client("127.0.0.2")
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodPost, tr.web+"/upload", &trickle{n: 10, delay: 150 * time.Millisecond})
		req.ContentLength = 10
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("upload %d (1.5 s, healthy canary): %d %q, want 200", i, res.StatusCode, body)
		}
	}
	res, err := c.Get(tr.web + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if v := res.Header.Get("X-Version"); v != "canary" {
		t.Fatalf("after three slow uploads a canary user is served by %q (fallback %q): the canary's breaker opened", v, res.Header.Get("Edgecanary-Fallback"))
	}
}
