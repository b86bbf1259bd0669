//go:build race

package plugin

// raceDetector is true in `go test -race`, which slows every request
// several times over: timing-based comparisons (slowThreshold against a
// 30 ms margin) are left to the run without it.
const raceDetector = true
