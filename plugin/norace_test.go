//go:build !race

package plugin

// raceDetector is true in `go test -race` (see race_test.go).
const raceDetector = false
