package main

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
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
		c.(*net.TCPConn).SetReadBuffer(4096)
		defer c.Close()
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
