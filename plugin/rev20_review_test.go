package plugin

import (
	"context"
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
