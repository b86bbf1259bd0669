package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStatusRenderCache: the history is rendered once per sample and shared;
// a new sample renders it again, for the page, the fragment and the JSON.
func TestStatusRenderCache(t *testing.T) {
	h, v := fullHistory()
	sp := &statusPages{store: newStore(defaultMaxSeries), history: h, now: func() time.Time { return t0 }}
	get := func(handler http.HandlerFunc, path string) string {
		rec := httptest.NewRecorder()
		handler(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Body.String()
	}
	first := get(sp.fragment, "/status/live")
	if again := get(sp.fragment, "/status/live"); again != first {
		t.Error("two renderings at one sample differ")
	}
	a := sp.historyHTML.body
	_ = get(sp.page, "/")
	if &sp.historyHTML.body[0] != &a[0] {
		t.Error("the page rendered the history again at the same sample")
	}
	next := t0.Add(time.Duration(historyPoints+1) * 5 * time.Second)
	h.record(v, next)
	ms := strconv.FormatInt(next.UnixMilli(), 10)
	if page := get(sp.page, "/"); !strings.Contains(page, ms) {
		t.Error("the page does not show the new sample")
	}
	var doc statusDoc
	if err := json.Unmarshal([]byte(get(sp.json, "/api/status")), &doc); err != nil || doc.History == nil {
		t.Fatalf("/api/status: %v", err)
	}
	if ts := doc.History.Times; ts[len(ts)-1] != next.UnixMilli() {
		t.Errorf("/api/status' last sample %d, want %d", ts[len(ts)-1], next.UnixMilli())
	}
}
