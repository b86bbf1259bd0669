package plugin

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// rev20Table is a sticky table that signs the single cookie value v.
func rev20Table(v string) *signedBuckets {
	return &signedBuckets{current: map[string]int{v: 1}}
}

// TestRev20RemovedTableStopsVouchingAfterTheGrace: legacy is removed (its
// New's context done) before shop's New publishes at t1. A lookup more than
// reloadGrace after t1 must no longer accept legacy's cookie: legacy was
// replaced more than reloadGrace ago (signedElsewhere's doc). deadSince is
// only set by a lookup, so the grace starts at the first lookup, however
// long after the removal: a removed middleware's cookie is vouched for
// (kept, and served a foreign bucket) by the first request that brings it,
// an hour or a month later.
func TestRev20RemovedTableStopsVouchingAfterTheGrace(t *testing.T) {
	const name = "rev20-removed-lookup"
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	live, reload := context.WithCancel(context.Background())
	shareCookieTable(live, name, "legacy@file", rev20Table("legacy-value"), t0)
	reload() // the next configuration: legacy is gone
	t1 := t0.Add(time.Hour)
	shareCookieTable(context.Background(), name, "shop@file", rev20Table("shop-value"), t1)
	if signedElsewhere(name, "shop@file", "legacy-value", t1.Add(reloadGrace+time.Second)) {
		t.Error("a middleware removed before a New an hour ago still vouches for its cookie, reloadGrace after that New")
	}
}

// TestRev20RemovedTableIsDropped: shareCookieTable's doc says tables
// removed more than reloadGrace before now are dropped. A table that no
// lookup has seen (deadSince zero) is never dropped below the bound, however
// many publications find its context done.
func TestRev20RemovedTableIsDropped(t *testing.T) {
	const name = "rev20-removed-sweep"
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	live, reload := context.WithCancel(context.Background())
	shareCookieTable(live, name, "legacy@file", rev20Table("legacy-value"), t0)
	reload()
	t1 := t0.Add(time.Hour)
	shareCookieTable(context.Background(), name, "shop@file", rev20Table("shop-value"), t1)
	shareCookieTable(context.Background(), name, "api@file", rev20Table("api-value"), t1.Add(reloadGrace+time.Second))
	cookieTables.Lock()
	_, kept := cookieTables.m[name]["legacy@file"]
	cookieTables.Unlock()
	if kept {
		t.Error("a table found removed at a New more than reloadGrace ago is still published")
	}
}

// TestRev20TestsSurviveASecondRun runs, twice each in one process as
// `go test -count=2` does, the tests whose middleware has a fixed name.
// The package's registries (breakers, figures) keep each middleware's state
// by name for the process, so the second run finds the first one's: an open
// breaker (TestBreakerPrimaryOutage's backend is never called) or doubled
// counts (the telemetry tests). countedStatuses was fixed for the same
// reason at e34d324.
func TestRev20TestsSurviveASecondRun(t *testing.T) {
	if interpreted {
		t.Skip("yaegi test runs each test once; this is go test -count=2's case, and costs the interpreter seconds")
	}
	for _, test := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"TestBreakerPrimaryOutage", TestBreakerPrimaryOutage},
		{"TestRecordCountsByVersionCodeAndMethod", TestRecordCountsByVersionCodeAndMethod},
		{"TestOutOfRangeCodesReportAsZero", TestOutOfRangeCodesReportAsZero},
		{"TestLabelCardinalityIsBounded", TestLabelCardinalityIsBounded},
	} {
		for run := 1; run <= 2; run++ {
			t.Run(test.name, test.f)
		}
	}
}

// TestRev20CookieNamesDropTheOldestFirst: at the bound of cookie names, the
// name whose latest table was published longest ago goes (oldestCookieName).
// No other test reaches this bound (the tests use two or three cookie
// names): oldestCookieName returning any name passed every test.
func TestRev20CookieNamesDropTheOldestFirst(t *testing.T) {
	cookieTables.Lock()
	saved := cookieTables.m
	cookieTables.m = map[string]map[string]cookieTable{}
	cookieTables.Unlock()
	defer func() {
		cookieTables.Lock()
		cookieTables.m = saved
		cookieTables.Unlock()
	}()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := 0; i < maxCookieTables; i++ {
		shareCookieTable(context.Background(), fmt.Sprint("name-", i), "a@file", rev20Table(fmt.Sprint("a-", i)), now)
	}
	// Another middleware publishes for name-0: its latest table is now the newest.
	shareCookieTable(context.Background(), "name-0", "b@file", rev20Table("b-0"), now)
	shareCookieTable(context.Background(), "name-new", "a@file", rev20Table("a-new"), now)
	cookieTables.Lock()
	defer cookieTables.Unlock()
	if len(cookieTables.m) != maxCookieTables {
		t.Errorf("%d cookie names, want the bound, %d", len(cookieTables.m), maxCookieTables)
	}
	for _, name := range []string{"name-0", "name-new"} {
		if cookieTables.m[name] == nil {
			t.Errorf("%s, published a moment ago, was dropped", name)
		}
	}
	if cookieTables.m["name-1"] != nil {
		t.Error("name-1, whose table was published longest ago, was kept")
	}
}

// TestRev20NewStartsTheBreakerWindowAtCreation: New gives a new breaker a
// first window from its creation. TestBreakerFirstWindowStartsAtCreation
// calls newBreaker itself: newCanary passing 0 (the epoch) to getBreaker
// passed every test but a slow one 10 s into the run.
func TestRev20NewStartsTheBreakerWindowAtCreation(t *testing.T) {
	breakerSeq++
	cfg := baseConfig("http://127.0.0.1:1", 50)
	cfg.CircuitBreaker.ConsecutiveFailures = 1
	lo := breakerNow()
	c, err := newCanary(context.Background(), stableNext, cfg, fmt.Sprintf("rev20-window-%d@file", breakerSeq))
	if err != nil {
		t.Fatal(err)
	}
	hi := breakerNow()
	for _, r := range c.routes {
		b := r.br
		b.sem <- lockTok
		start := b.expiry - b.s.interval
		<-b.sem
		if start < lo || start > hi {
			t.Errorf("%s: the first window starts at %v, want its creation, between %v and %v", r.name,
				time.Duration(start), time.Duration(lo), time.Duration(hi))
		}
	}
}
