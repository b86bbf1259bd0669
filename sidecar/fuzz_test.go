package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzIngest feeds arbitrary bodies to the ingest handler: it must never
// panic, must answer 204 only for a report that validates, and must count
// every other body as exactly one rejection. Seeds: testdata/fuzz/FuzzIngest.
func FuzzIngest(f *testing.F) {
	f.Add(body(f, mkReport("a", "i1", 1, 10, 2)))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"source":"x"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"version":1,"source":"a","instance":"b","middlewares":[{"name":"m","buckets":[1],"versions":[{"name":"v","durationBuckets":[1,2],"requests":[{"code":200,"method":"GET","count":1}]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newStore(defaultMaxSeries)
		h := &ingestHandler{store: s, maxBody: 1 << 16, now: func() time.Time { return t0 }}
		req := httptest.NewRequest(http.MethodPost, "/v1/reports", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var rejected uint64
		for _, n := range s.rejected {
			rejected += n
		}
		switch rec.Code {
		case http.StatusNoContent:
			if _, err := parseReport(data); err != nil {
				t.Fatalf("accepted a body that does not validate: %v", err)
			}
			if rejected != 0 || s.reports != 1 {
				t.Fatalf("accepted: rejected %d, reports %d", rejected, s.reports)
			}
		default:
			if rejected != 1 || s.reports != 0 {
				t.Fatalf("status %d: rejected %d, reports %d", rec.Code, rejected, s.reports)
			}
		}
		// Whatever was accepted can be published.
		_ = s.snapshot(t0)
		_ = s.status(t0)
	})
}
