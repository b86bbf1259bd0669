package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// TestReview18SlowReadersHoldTheHistory: the page, /status/live and
// /api/status build the whole document (every series of every middleware)
// before writing a byte, and hold it until the last byte is written. The
// metrics listener is unauthenticated (":9190", a Service in
// demo/kubernetes/), and the sidecar's memory limit there is 128 MiB: at the
// caps, a few dozen clients that request the page and read slowly keep the
// sidecar's heap far above it (no limit on concurrent renders, WriteTimeout
// 30 s).
func TestReview18SlowReadersHoldTheHistory(t *testing.T) {
	h, _ := fullHistory()
	sp := &statusPages{store: newStore(defaultMaxSeries), history: h, now: func() time.Time { return t0 }}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/status", sp.json)
	mux.HandleFunc("/", sp.page)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	const clients = 40
	var conns []net.Conn
	for i := 0; i < clients; i++ {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		defer func() { _ = c.Close() }()
		path := "/"
		if i%2 == 1 {
			path = "/api/status"
		}
		if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Each client reads its headers, then stops reading.
	for _, c := range conns {
		_, _ = bufio.NewReader(c).ReadString('\n')
	}
	time.Sleep(3 * time.Second)
	runtime.GC()
	var held runtime.MemStats
	runtime.ReadMemStats(&held)
	grown := (int64(held.HeapInuse) - int64(base.HeapInuse)) >> 20
	t.Logf("heap in use: %d MiB before, %d MiB with %d slow readers", base.HeapInuse>>20, held.HeapInuse>>20, clients)
	if grown > 64 {
		t.Errorf("%d slow readers hold %d MiB of heap (the demo's sidecar has a 128 MiB limit)", clients, grown)
	}
}

// TestReview18RolloutCopyPinsTheReport: README ("Bounded memory"): a
// middleware's rollout in the history is "a cleaned copy of it (at most 100
// step weights and 32 checks with 200-byte reasons: under 10 KB)", and the
// history takes "2.2 MB with a rollout on each, at the very most".
// cleanRollout (and boundRollout before it) cuts a reason with
// Reason[:200], a substring that keeps the decoded report's whole string
// alive: a report whose check reason is 900 KB (within ingest.maxBodyBytes)
// pins 900 KB per middleware for as long as the history shows it, after the
// store has dropped it.
func TestReview18RolloutCopyPinsTheReport(t *testing.T) {
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	h := newHistory(5 * time.Second)
	func() {
		s := newStore(defaultMaxSeries)
		for i := 0; i < maxHistoryMiddlewares; i++ {
			r := r18Report(fmt.Sprintf("i%02d", i), 1, []float64{0.1}, "canary", false, 0, [3]uint64{}, 10)
			r.Middlewares[0].Name = fmt.Sprintf("shop-%02d@file", i)
			r.Middlewares[0].Rollout = &wire.Rollout{Version: "canary", Start: t0.UnixMilli(), IntervalMs: 60000, StepWeights: []float64{10, 50, 100}, Step: 1, State: wire.RolloutProgressing,
				Recent: []wire.Check{{At: t0.UnixMilli(), Step: 1, Result: "fail", Reason: strings.Repeat("x", 900<<10)}}}
			body, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := parseReport(body)
			if err != nil {
				t.Fatal(err)
			}
			if !s.merge(parsed, t0) {
				t.Fatal("not merged")
			}
		}
		h.record(s.snapshot(t0), t0)
	}()
	if n := len(h.mws); n != maxHistoryMiddlewares {
		t.Fatalf("%d middlewares tracked", n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(base.HeapInuse)
	t.Logf("the history alone holds %.1f MB", float64(grown)/1e6)
	if grown > 2_200_000+1<<20 {
		t.Errorf("the history alone holds %.1f MB with a rollout on each middleware; README says 2.2 MB at the very most", float64(grown)/1e6)
	}
	runtime.KeepAlive(h)
}
