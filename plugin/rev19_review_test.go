package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// countedRuns numbers countedStatuses' middlewares.
var countedRuns int

// countedStatuses serves one GET through a single-version canary with
// reporting, next answering it, and returns the status the client got and
// what the plugin counted ("code method" -> count).
func countedStatuses(t *testing.T, name string, next http.HandlerFunc) (int, map[string]uint64) {
	t.Helper()
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 1}}
	cfg.Sidecar.Address = "http://127.0.0.1:1"
	cfg.Sidecar.Interval = "1h"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	countedRuns++ // the figures are kept by middleware name for the process: a new name for each run (-count)
	c, err := newCanary(ctx, next, cfg, fmt.Sprintf("%s-%d@file", name, countedRuns))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// The client can have the whole response before the handler returns
	// and the plugin counts it: wait for the count.
	got := map[string]uint64{}
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, r := range snapshot(c.st).Versions[0].Requests {
			got[fmt.Sprintf("%d %s", r.Code, r.Method)] = r.Count
		}
	}
	return res.StatusCode, got
}

// TestRev19SuperfluousWriteHeaderIsNotTheStatus: a handler that writes a
// final status and then calls WriteHeader again (a superfluous call, which
// net/http ignores: the client gets the first status) must be counted with
// the status the client got. statusWriter.WriteHeader overwrote w.code with
// every call, 1xx or not, so the second, ignored status was what the stats
// (and the breaker) saw.
func TestRev19SuperfluousWriteHeaderIsNotTheStatus(t *testing.T) {
	code, got := countedStatuses(t, "rev19-superfluous", func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("Content-Length", "2")
		rw.WriteHeader(http.StatusOK)
		rw.WriteHeader(http.StatusServiceUnavailable) // superfluous: ignored by net/http
		_, _ = rw.Write([]byte("ok"))
	})
	if code != http.StatusOK {
		t.Fatalf("client got %d", code)
	}
	if want := map[string]uint64{"200 GET": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counted %v, the client got 200: want %v", got, want)
	}
}

// TestInformationalStatusThenFinalIsCounted: a 103 Early Hints, then the
// final status: the final one is counted (the client gets both, the final
// last), and a later superfluous call changes nothing.
func TestInformationalStatusThenFinalIsCounted(t *testing.T) {
	code, got := countedStatuses(t, "informational", func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("Link", "</style.css>; rel=preload; as=style")
		rw.WriteHeader(http.StatusEarlyHints)
		rw.Header().Set("Content-Length", "2")
		rw.WriteHeader(http.StatusNotFound)
		rw.WriteHeader(http.StatusOK) // superfluous
		_, _ = rw.Write([]byte("no"))
	})
	if code != http.StatusNotFound {
		t.Fatalf("client got %d", code)
	}
	if want := map[string]uint64{"404 GET": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counted %v, the client got 404: want %v", got, want)
	}
}
