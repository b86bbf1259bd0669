//go:build race

package plugin

// raceDetector is true in `go test -race`, which slows every request
// several times over: timing-based comparisons are left to the run without
// it, and so are the differential sequences with slowThreshold, which swap
// the package's clock (see slowClock) while other tests' background
// goroutines (reporters, lease refreshers) read it.
const raceDetector = true
