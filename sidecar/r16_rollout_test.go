package main

// Review of issue 16 (progressive rollout): failing tests that reproduce
// defects in the sidecar's rollout series.

import (
	"testing"

	"github.com/edgecanary/edgecanary/wire"
)

// TestR16RolloutSeriesWithinTheCap: --ingest.maxSeries bounds what the
// sidecar publishes. The rollout's 5 series per middleware (step, state,
// 3 check counters) are not accounted (middlewareSeries), so a store at its
// cap publishes more series than the cap.
func TestR16RolloutSeriesWithinTheCap(t *testing.T) {
	plain := newStore(defaultMaxSeries)
	plain.merge(mkReport("traefik-a", "i1", 1, 1, 1), t0)
	n := publishedSeries(t, plain)
	s := newStore(n)
	r := mkReport("traefik-a", "i1", 1, 1, 1)
	r.Middlewares[0].Rollout = &wire.Rollout{Version: "canary", Step: 1, State: wire.RolloutProgressing, StepWeights: []float64{10, 100}}
	s.merge(r, t0)
	if got := publishedSeries(t, s); got > n {
		t.Errorf("%d series published, cap %d", got, n)
	}
}
