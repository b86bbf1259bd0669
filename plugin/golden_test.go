package plugin

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// goldenReport is the report of a fixed set of figures, committed at
// testdata/report.golden.json and parsed by the sidecar's
// TestGoldenReportIsAccepted: a change to the wire format on one side fails a
// unit test on the other. EDGECANARY_UPDATE_GOLDEN=1 rewrites it.
const goldenReport = "../testdata/report.golden.json"

func TestReportMatchesGolden(t *testing.T) {
	saved := processStart
	defer func() { processStart = saved }()
	processStart.source, processStart.instance = "traefik-0", "0123456789abcdef"
	processStart.started = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

	st := getStats("golden@file", []float64{0.1, 1})
	for _, v := range []string{"canary", "stable"} {
		vs := st.version(v)
		vs.counts[200<<4|methodIndex["GET"]] = 7
		vs.counts[503<<4|methodIndex["POST"]] = 2
		vs.hist = []uint64{5, 3, 1}
		vs.sumNs = int64(1500 * time.Millisecond)
	}
	b := testBreaker(t, func(c *CircuitBreakerConfig) { c.ConsecutiveFailures = 1; c.Interval = "0" })
	b.transitions.n = [3]uint64{1, 1, 2}
	st.mu.Lock()
	st.weights = map[string]float64{"canary": 0.25, "stable": 0.75}
	st.primary = "stable"
	st.breakers = map[string]*breaker{"canary": b}
	st.fallbacks["canary\x00stable"] = 4
	st.mu.Unlock()
	body, err := buildReport([]*mwStats{st}, processStart.started.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	body = append(body, '\n')
	if os.Getenv("EDGECANARY_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(goldenReport, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenReport)
	if os.IsNotExist(err) {
		t.Skip("no " + goldenReport + " from here (under yaegi test the working directory is the GOPATH)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		t.Errorf("the report format changed; if on purpose, run with EDGECANARY_UPDATE_GOLDEN=1 and check the sidecar's tests:\ngot  %s\nwant %s", body, want)
	}
}
