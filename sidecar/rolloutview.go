package main

import (
	"math"
	"strings"

	"github.com/edgecanary/edgecanary/wire"
)

// Bounds on a reported rollout (wire.Rollout), applied by cleanRollout to the
// store's rollout (see boundRollout) when a sample is taken: the status page
// draws what is left.
const (
	maxRolloutSteps   = 100
	maxRolloutChecks  = 32
	maxReasonBytes    = 200
	maxRolloutMs      = 1 << 46 // about 2,200 years of Unix milliseconds
	maxRolloutStepLen = 1 << 40 // about 35 years, in milliseconds
)

var rolloutStateNames = []string{"waiting", "progressing", "complete", "rolled_back"}

var checkResults = map[string]bool{"pass": true, "fail": true, "inconclusive": true}

// cleanRollout returns a copy of r that the page can draw without further
// checks: at most maxRolloutSteps weights, each a number from 0 to 100; the
// last maxRolloutChecks checks with known results and short reasons; times
// and the interval within bounds; a valid version name or none.
func cleanRollout(r *wire.Rollout) *wire.Rollout {
	c := &wire.Rollout{
		Start:      clampI64(r.Start, 0, maxRolloutMs),
		IntervalMs: clampI64(r.IntervalMs, 0, maxRolloutStepLen),
		State:      r.State,
		Shared:     r.Shared,
		Failed:     max(r.Failed, 0),
		Checks:     r.Checks,
	}
	if wire.ValidVersionName(r.Version) {
		c.Version = strings.Clone(r.Version)
	}
	if c.State < 0 || c.State >= len(rolloutStateNames) {
		c.State = -1
	}
	weights := r.StepWeights
	if len(weights) > maxRolloutSteps {
		weights = weights[:maxRolloutSteps]
	}
	c.StepWeights = make([]float64, len(weights))
	for i, w := range weights {
		if math.IsNaN(w) {
			w = 0
		}
		c.StepWeights[i] = math.Min(math.Max(w, 0), 100)
	}
	c.Step = int(clampI64(int64(r.Step), 0, int64(len(c.StepWeights)+1)))
	recent := r.Recent
	if len(recent) > maxRolloutChecks {
		recent = recent[len(recent)-maxRolloutChecks:]
	}
	c.Recent = make([]wire.Check, 0, len(recent))
	for _, ch := range recent {
		if !checkResults[ch.Result] {
			ch.Result = "unknown"
		}
		if len(ch.Reason) > maxReasonBytes {
			ch.Reason = ch.Reason[:maxReasonBytes]
		}
		// A copy: a substring would keep the report's whole string alive.
		ch.Reason, ch.Result = strings.Clone(ch.Reason), strings.Clone(ch.Result)
		ch.At = clampI64(ch.At, 0, maxRolloutMs)
		ch.Step = int(clampI64(int64(ch.Step), 0, maxRolloutSteps+1))
		c.Recent = append(c.Recent, ch)
	}
	return c
}

func clampI64(v, lo, hi int64) int64 {
	return min(max(v, lo), hi)
}

// rolloutDoc is a rollout in /api/status.
type rolloutDoc struct {
	Version     string           `json:"version"`
	State       string           `json:"state"` // waiting, progressing, complete, rolled_back, unknown
	Step        int              `json:"step"`  // 1-based; 0 before start
	Steps       int              `json:"steps"`
	Start       int64            `json:"start"` // Unix milliseconds
	IntervalMs  int64            `json:"intervalMs"`
	StepWeights []float64        `json:"stepWeights"` // percent
	Schedule    []scheduledStep  `json:"schedule"`
	Shared      bool             `json:"shared"`
	Failed      int              `json:"failedChecks"`
	Checks      map[string]int64 `json:"checks"` // pass, fail, inconclusive: summed over the Traefik processes, as edgecanary_rollout_checks_total
	Recent      []wire.Check     `json:"recentChecks"`
}

// scheduledStep is when a step of the schedule begins.
type scheduledStep struct {
	Step   int     `json:"step"`
	At     int64   `json:"at"` // Unix milliseconds
	Weight float64 `json:"weight"`
}

func rolloutState(s int) string {
	if s < 0 || s >= len(rolloutStateNames) {
		return "unknown"
	}
	return rolloutStateNames[s]
}

// newRolloutDoc describes a cleaned rollout.
func newRolloutDoc(r *wire.Rollout) *rolloutDoc {
	if r == nil {
		return nil
	}
	d := &rolloutDoc{
		Version: r.Version, State: rolloutState(r.State), Step: r.Step, Steps: len(r.StepWeights),
		Start: r.Start, IntervalMs: r.IntervalMs, StepWeights: r.StepWeights, Shared: r.Shared, Failed: r.Failed,
		Checks:   map[string]int64{"pass": int64(min(r.Checks[0], math.MaxInt64)), "fail": int64(min(r.Checks[1], math.MaxInt64)), "inconclusive": int64(min(r.Checks[2], math.MaxInt64))},
		Recent:   r.Recent,
		Schedule: make([]scheduledStep, 0, len(r.StepWeights)),
	}
	for i, w := range r.StepWeights {
		d.Schedule = append(d.Schedule, scheduledStep{Step: i + 1, At: r.Start + int64(i)*r.IntervalMs, Weight: w})
	}
	return d
}
