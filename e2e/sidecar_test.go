package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var sidecarBuild struct {
	once sync.Once
	path string
	err  error
}

// sidecarBinary builds the sidecar once per test run.
func sidecarBinary(t testing.TB) string {
	t.Helper()
	sidecarBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "edgecanary-sidecar-bin-")
		if err != nil {
			sidecarBuild.err = err
			return
		}
		sidecarBuild.path = filepath.Join(dir, "edgecanary-sidecar")
		// sidecar/ is its own module: build it from there.
		cmd := exec.Command("go", "build", "-o", sidecarBuild.path, ".")
		cmd.Dir = filepath.Join(repoRoot(t), "sidecar")
		if out, err := cmd.CombinedOutput(); err != nil {
			sidecarBuild.err = fmt.Errorf("building the sidecar: %v\n%s", err, out)
		}
	})
	if sidecarBuild.err != nil {
		t.Fatal(sidecarBuild.err)
	}
	return sidecarBuild.path
}

// sidecarProc is a running sidecar on fixed loopback ports, so it can be
// killed and started again at the same address.
type sidecarProc struct {
	t               testing.TB
	ingestPort      int
	metricsPort     int
	args            []string
	env             []string // added to the test's environment
	cmd             *exec.Cmd
	logs            *syncBuffer
	ingest, metrics string
}

func startSidecar(t testing.TB, extra ...string) *sidecarProc {
	t.Helper()
	s := &sidecarProc{t: t, ingestPort: freePort(t), metricsPort: freePort(t), logs: &syncBuffer{}}
	s.ingest = fmt.Sprintf("http://127.0.0.1:%d", s.ingestPort)
	s.metrics = fmt.Sprintf("http://127.0.0.1:%d", s.metricsPort)
	s.args = append([]string{
		fmt.Sprintf("--ingest.address=127.0.0.1:%d", s.ingestPort),
		fmt.Sprintf("--metrics.address=127.0.0.1:%d", s.metricsPort),
	}, extra...)
	s.start()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *sidecarProc) start() {
	s.t.Helper()
	s.cmd = exec.Command(sidecarBinary(s.t), s.args...)
	s.cmd.Env = append(os.Environ(), s.env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, 20*time.Second, "sidecar ready", func() bool {
		res, err := http.Get(s.metrics + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}

// stop ends the sidecar with sig (SIGKILL: no goodbye) and waits for it.
func (s *sidecarProc) stop(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// scrape parses the sidecar's /metrics.
func (s *sidecarProc) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	res, err := http.Get(s.metrics + "/metrics")
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		s.t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// counts returns edgecanary_requests_total as "version code" -> value.
func requestCounts(mfs map[string]*dto.MetricFamily, middleware string) map[string]float64 {
	out := map[string]float64{}
	mf := mfs["edgecanary_requests_total"]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		l := labels(m)
		if l["middleware"] != middleware {
			continue
		}
		out[l["version"]+" "+l["code"]] += m.GetCounter().GetValue()
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func sameCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// reportingDynamic is canaryDynamic with reporting to the sidecar.
func reportingDynamic(stable, canary, ingest string, extra string) string {
	return canaryDynamic(stable, canary, 50, 50, fmt.Sprintf(`          sidecar:
            address: %q
            interval: 200ms
%s`, ingest, extra))
}

func TestTraefikSidecarCountsEveryRequest(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL, sc.ingest, ""), traefikOptions{})
	tr.waitRouter("shop")
	c := client("")
	sent := map[string]float64{}
	var mu sync.Mutex
	send := func(n int, path string) {
		for i := 0; i < n; i++ {
			res, err := c.Get(tr.web + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			sent[fmt.Sprintf("%s %d", res.Header.Get("X-Version"), res.StatusCode)]++
			mu.Unlock()
		}
	}
	send(300, "/")
	send(40, "/status/404")
	send(20, "/status/503")
	var got map[string]float64
	waitFor(t, 20*time.Second, "the sidecar to account for every request", func() bool {
		got = requestCounts(sc.scrape(), "shop@file")
		return sameCounts(got, sent)
	})
	t.Logf("sent and published: %v", got)

	// Kill the sidecar in the middle of the traffic, keep sending, start it again.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); send(400, "/") }()
	time.Sleep(300 * time.Millisecond)
	sc.stop(syscall.SIGKILL)
	time.Sleep(time.Second)
	sc.start()
	wg.Wait()
	send(50, "/status/404")
	waitFor(t, 20*time.Second, "the restarted sidecar to account for every request since Traefik started", func() bool {
		got = requestCounts(sc.scrape(), "shop@file")
		return sameCounts(got, sent)
	})
	var total float64
	for _, v := range sent {
		total += v
	}
	t.Logf("after a sidecar kill and restart under load: %v requests sent, %v published, none lost", total, total)
	mfs := sc.scrape()
	for _, name := range []string{"edgecanary_request_duration_seconds", "edgecanary_version_weight", "edgecanary_circuit_state", "edgecanary_sidecar_last_report_timestamp_seconds", "edgecanary_ratelimit_rejected_total"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// TestTraefikPrometheusScrapesSidecar runs the real Prometheus server against
// the sidecar and asks it for the per-version request rate.
func TestTraefikPrometheusScrapesSidecar(t *testing.T) {
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL, sc.ingest, ""), traefikOptions{})
	tr.waitRouter("shop")
	prom := startPrometheus(t, sc.metrics)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := client("")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if res, err := c.Get(tr.web + "/"); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-done }()

	q := `sum by (version) (rate(edgecanary_requests_total{middleware="shop@file"}[10s]))`
	var vec model.Vector
	waitFor(t, 60*time.Second, "Prometheus to return a rate for both versions", func() bool {
		vec = prom.query(q)
		seen := map[string]bool{}
		for _, s := range vec {
			if s.Value > 0 {
				seen[string(s.Metric["version"])] = true
			}
		}
		return seen["stable"] && seen["canary"]
	})
	for _, s := range vec {
		t.Logf("%s: %.1f req/s", s.Metric["version"], float64(s.Value))
	}
}

type promProc struct {
	t   testing.TB
	url string
}

// startPrometheus runs Debian's prometheus on loopback, scraping target every second.
func startPrometheus(t testing.TB, targets ...string) *promProc {
	t.Helper()
	return startPrometheusConfig(t, "", targets...)
}

// startPrometheusConfig is startPrometheus with extra global configuration.
func startPrometheusConfig(t testing.TB, extra string, targets ...string) *promProc {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: apt-get install --no-install-recommends prometheus")
	}
	dir := t.TempDir()
	var hosts []string
	for _, target := range targets {
		hosts = append(hosts, fmt.Sprintf("%q", strings.TrimPrefix(target, "http://")))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
`+extra+`scrape_configs:
  - job_name: edgecanary
    static_configs:
      - targets: [%s]
`, strings.Join(hosts, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	logs := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", logs.String())
		}
	})
	p := &promProc{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	waitFor(t, 60*time.Second, "Prometheus ready", func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", logs.String())
		default:
		}
		res, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return p
}

// query runs an instant PromQL query through the HTTP API.
func (p *promProc) query(q string) model.Vector {
	p.t.Helper()
	res, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var doc struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		p.t.Fatalf("query %q: %v", q, err)
	}
	if doc.Status != "success" {
		p.t.Fatalf("query %q: %s", q, doc.Error)
	}
	var vec model.Vector
	if doc.Data.ResultType == "vector" {
		if err := json.Unmarshal(doc.Data.Result, &vec); err != nil {
			p.t.Fatal(err)
		}
	}
	return vec
}
