// Command demo runs edgecanary on this machine, with no Docker: Traefik with
// the plugin as a local plugin, two versions of an app at 80/20, the sidecar,
// Prometheus and steady traffic, all on 127.0.0.1. From a second terminal it
// changes the canary's weight, breaks or fixes the canary, rolls back or
// promotes. `make demo` runs it; see README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
)

// Fixed loopback ports, so the second terminal and the browser find them.
const (
	webAddr     = "127.0.0.1:8000"
	apiAddr     = "127.0.0.1:8080"
	stableAddr  = "127.0.0.1:8081"
	canaryAddr  = "127.0.0.1:8082"
	ingestAddr  = "127.0.0.1:9191"
	metricsAddr = "127.0.0.1:9190"
	promAddr    = "127.0.0.1:9090"
)

func main() { os.Exit(run(os.Args[1:])) }

func usage() int {
	fmt.Fprint(os.Stderr, `usage: demo [run | weight N | break | slow | fix | rollback | promote | status]
  run        start everything and drive traffic until Ctrl-C (make demo)
  weight N   give the canary N% of users (the rest stay on stable)
  break      make the canary answer 500s: its breaker trips, its users fall back to stable
  slow       make the canary slow (800 ms)
  fix        make the canary healthy again
  rollback   canary weight 0: everyone on stable
  promote    canary weight 100: everyone on the canary
  rollout    a progressive rollout of the healthy canary: 10, 25, 50, 100% in steps of 20 s
  rollout-bad  the same rollout with a canary that fails one request in ten: rolled back after 2 checks
  status     print the sidecar's per-version figures
`)
	return 2
}

func run(args []string) int {
	if len(args) == 0 {
		args = []string{"run"}
	}
	var err error
	switch args[0] {
	case "run":
		err = runDemo()
	case "weight":
		if len(args) != 2 {
			return usage()
		}
		w, perr := strconv.Atoi(args[1])
		if perr != nil || w < 0 || w > 100 {
			fmt.Fprintln(os.Stderr, "weight: a percentage from 0 to 100")
			return 2
		}
		err = setWeight(w)
	case "rollout":
		err = startRollout(false)
	case "rollout-bad":
		err = startRollout(true)
	case "rollback":
		err = setWeight(0)
	case "promote":
		err = setWeight(100)
	case "break":
		err = setMode("error")
	case "slow":
		err = setMode("slow")
	case "fix":
		err = setMode("ok")
	case "status":
		err = printStatus()
	default:
		return usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	return 0
}

func stateDir() string { return filepath.Join(stage.CacheDir(), "demo") }

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, ".traefik.yml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the demo from the edgecanary repository")
		}
		dir = parent
	}
}

// dynamicConfig is the demo's watched file-provider configuration.
func dynamicConfig(canaryWeight int) string { return dynamicConfigWith(canaryWeight, "") }

// rolloutBlock is the demo's rollout, starting at start: four steps of 20 s.
func rolloutBlock(start time.Time) string {
	return fmt.Sprintf(`          rollout:
            start: %q
            stepWeights: [10, 25, 50, 100]
            interval: 20s
            threshold: 2
            minRequests: 20
            metrics:
              - name: request-success-rate
                thresholdRange: {min: 99}
              - name: request-duration
                thresholdRange: {max: 500}
              - name: error-rate-increase
                thresholdRange: {max: 1}
`, start.UTC().Format(time.RFC3339))
}

// dynamicConfigWith is the demo's configuration with extra plugin settings.
func dynamicConfigWith(canaryWeight int, extra string) string {
	return fmt.Sprintf(`# Written by the demo; `+"`make demo-weight W=N`"+` rewrites it.
http:
  routers:
    shop:
      rule: PathPrefix(`+"`/`"+`)
      entryPoints: [web]
      service: shop-stable
      middlewares: [shop]
  services:
    shop-stable:
      loadBalancer:
        servers:
          - url: http://%s
  middlewares:
    shop:
      plugin:
        edgecanary:
          versions:
            stable:
              weight: %d
            canary:
              weight: %d
              url: http://%s
              timeout: 2s
          sticky:
            cookie:
              secret: demo-secret-change-me
          override:
            header: X-Canary
            trustedIPs: ["127.0.0.1/32"]
          rateLimit:
            average: 20
            burst: 40
            sourceCriterion:
              requestHeaderName: X-User-ID
          circuitBreaker:
            consecutiveFailures: 5
            failureRatio: 0.5
            minRequests: 10
            openDuration: 15s
            slowThreshold: 500ms
          sidecar:
            address: http://%s
            interval: 1s
%s`, stableAddr, 100-canaryWeight, canaryWeight, canaryAddr, ingestAddr, extra)
}

func setWeight(w int) error {
	if err := writeDynamic(dynamicConfig(w)); err != nil {
		return err
	}
	fmt.Printf("canary weight %d%%: Traefik reloads the file within a second; a raise only adds users to the canary, a cut sends the last ones added back to stable\n", w)
	return nil
}

// writeDynamic replaces the running demo's dynamic configuration.
func writeDynamic(content string) error {
	path := filepath.Join(stateDir(), "dynamic.yml")
	if _, err := os.Stat(path); err != nil {
		return errors.New("the demo is not running: start it with `make demo`")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// startRollout starts a rollout of the canary 5 s from now, healthy or
// flaky (one 500 in ten: the checks' success rate, 90%, is below 99%).
func startRollout(flaky bool) error {
	mode := "ok"
	if flaky {
		mode = "flaky"
	}
	if err := setMode(mode); err != nil {
		return err
	}
	start := time.Now().Add(6 * time.Second).Truncate(time.Second)
	if err := writeDynamic(dynamicConfigWith(0, rolloutBlock(start))); err != nil {
		return err
	}
	fmt.Printf("rollout of the canary from %s: 10, 25, 50, 100%% in steps of 20 s.\n", start.Format(time.TimeOnly))
	if flaky {
		fmt.Println("The canary fails one request in ten: each 20 s check fails, and the second rolls it back (about 45 s).")
	} else {
		fmt.Println("The canary is healthy: the rollout completes in 80 s.")
	}
	fmt.Printf("Watch Traefik's log (rollout: ...), http://%s/ and edgecanary_rollout_state in Prometheus.\n", metricsAddr)
	return nil
}

func setMode(mode string) error {
	res, err := http.Post("http://"+canaryAddr+"/-/mode", "text/plain", strings.NewReader(mode))
	if err != nil {
		return fmt.Errorf("the demo is not running (%v): start it with `make demo`", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("canary: %s", res.Status)
	}
	fmt.Printf("canary mode: %s. Watch http://%s/ (breaker state, fallbacks)\n", mode, metricsAddr)
	return nil
}

func printStatus() error {
	res, err := http.Get("http://" + metricsAddr + "/api/status")
	if err != nil {
		return fmt.Errorf("the demo is not running (%v)", err)
	}
	defer res.Body.Close()
	var doc struct {
		Versions []struct {
			Version    string   `json:"version"`
			Weight     *float64 `json:"weight"`
			State      string   `json:"circuitState"`
			Rate       float64  `json:"requestsPerSecond"`
			ErrorRatio *float64 `json:"errorRatio"`
			P99        *float64 `json:"p99Seconds"`
		} `json:"versions"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		return err
	}
	fmt.Printf("%-8s %7s %-9s %8s %8s %9s\n", "version", "weight", "breaker", "req/s", "errors", "p99")
	for _, v := range doc.Versions {
		w, e, p := "-", "-", "-"
		if v.Weight != nil {
			w = fmt.Sprintf("%.0f%%", 100**v.Weight)
		}
		if v.ErrorRatio != nil {
			e = fmt.Sprintf("%.1f%%", 100**v.ErrorRatio)
		}
		if v.P99 != nil {
			p = fmt.Sprintf("%.0fms", 1000**v.P99)
		}
		fmt.Printf("%-8s %7s %-9s %8.1f %8s %9s\n", v.Version, w, v.State, v.Rate, e, p)
	}
	return nil
}

// proc is a child process of the demo, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
}

func start(dir, logName string, name string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(name), err)
	}
	return &proc{name: filepath.Base(name), cmd: cmd}, nil
}

func (p *proc) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v", url, timeout)
}

// build builds the package pkg of the module in dir.
func build(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func runDemo() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	traefik, err := stage.TraefikBinary()
	if err != nil {
		return err
	}
	dir := stateDir()
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Println("building the sidecar and the demo app…")
	// sidecar/ is its own module (its dependencies stay out of the plugin's vendor/).
	if err := build(filepath.Join(root, "sidecar"), filepath.Join(dir, "edgecanary-sidecar"), "."); err != nil {
		return err
	}
	if err := build(root, filepath.Join(dir, "demo-app"), "./demo/app"); err != nil {
		return err
	}
	if err := stage.Plugin(root, filepath.Join(dir, "plugins-local")); err != nil {
		return err
	}
	static, err := stage.StaticConfig(stage.StaticOptions{
		LogLevel:          "INFO",
		Web:               webAddr,
		Traefik:           apiAddr,
		Dashboard:         true,
		ProvidersThrottle: 500 * time.Millisecond,
		File:              "dynamic.yml",
		Watch:             true,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "traefik.yml"), []byte(static), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "dynamic.yml"), []byte(dynamicConfig(20)), 0o644); err != nil {
		return err
	}

	var procs []*proc
	defer func() {
		fmt.Println("\nstopping…")
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		fmt.Println("everything the demo started has stopped")
	}()
	launch := func(logName, name string, args ...string) error {
		p, err := start(dir, logName, name, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	if err := launch("stable.log", filepath.Join(dir, "demo-app"), "--address="+stableAddr, "--version=stable"); err != nil {
		return err
	}
	if err := launch("canary.log", filepath.Join(dir, "demo-app"), "--address="+canaryAddr, "--version=canary"); err != nil {
		return err
	}
	if err := launch("sidecar.log", filepath.Join(dir, "edgecanary-sidecar"), "--ingest.address="+ingestAddr, "--metrics.address="+metricsAddr); err != nil {
		return err
	}
	promNote := ""
	if prom, err := exec.LookPath("prometheus"); err == nil {
		rules, _ := filepath.Abs(filepath.Join(root, "demo", "prometheus", "rules.yml"))
		promCfg := fmt.Sprintf("global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nrule_files: [%q]\nscrape_configs:\n  - job_name: edgecanary\n    static_configs:\n      - targets: [%q]\n", rules, metricsAddr)
		if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o644); err != nil {
			return err
		}
		if err := launch("prometheus.log", prom, "--config.file=prometheus.yml", "--storage.tsdb.path=prometheus-data", "--web.listen-address="+promAddr); err != nil {
			return err
		}
		promNote = "http://" + promAddr + "/graph?g0.expr=" + strings.ReplaceAll("sum by (version) (rate(edgecanary_requests_total[30s]))", " ", "%20")
	} else {
		promNote = "not installed: apt-get install --no-install-recommends prometheus"
	}
	if err := launch("traefik.log", traefik, "--configFile=traefik.yml"); err != nil {
		return err
	}
	for _, u := range []string{"http://" + stableAddr + "/-/healthy", "http://" + canaryAddr + "/-/healthy", "http://" + metricsAddr + "/-/ready", "http://" + apiAddr + "/ping", "http://" + webAddr + "/"} {
		if err := waitHTTP(u, 60*time.Second); err != nil {
			return fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var sent, limited, fellBack atomic.Int64
	var wg sync.WaitGroup
	traffic(ctx, &wg, &sent, &limited, &fellBack)

	fmt.Printf(`
edgecanary demo is running (logs and configs in %s)

  the app, through Traefik     http://%s/        (curl -i it: the edgecanary cookie pins you)
  sidecar status page          http://%s/
  sidecar metrics              http://%s/metrics
  Prometheus                   %s
  Traefik dashboard            http://%s/dashboard/

From a second terminal:
  make demo-weight W=50    give the canary 50%% of users (canary users never move back)
  make demo-break          the canary answers 500s: its breaker trips, users fall back to stable
  make demo-fix            the canary recovers: after openDuration (15s) its users return
  make demo-rollback       canary weight 0        make demo-promote   canary weight 100
  make demo-status         per-version rate, errors, p99, breaker state

Ctrl-C stops everything.
`, dir, webAddr, metricsAddr, metricsAddr, promNote, apiAddr)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			fmt.Printf("traffic: %d requests, %d rate-limited, %d served by fallback\n", sent.Load(), limited.Load(), fellBack.Load())
		}
	}
}

// traffic simulates 200 users, each with its own cookie jar and user id, at
// about 25 requests per second in all, plus one greedy user who bursts and
// meets the rate limit.
func traffic(ctx context.Context, wg *sync.WaitGroup, sent, limited, fellBack *atomic.Int64) {
	type user struct {
		id string
		c  *http.Client
	}
	users := make([]user, 200)
	for i := range users {
		jar, _ := cookiejar.New(nil)
		users[i] = user{id: fmt.Sprintf("user-%d", i), c: &http.Client{Jar: jar, Timeout: 5 * time.Second}}
	}
	do := func(u user) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+webAddr+"/", nil)
		req.Header.Set("X-User-ID", u.id)
		res, err := u.c.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		sent.Add(1)
		if res.StatusCode == http.StatusTooManyRequests {
			limited.Add(1)
		}
		if res.Header.Get("Edgecanary-Fallback") != "" {
			fellBack.Add(1)
		}
	}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			for ctx.Err() == nil {
				do(users[rng.Intn(len(users))])
				time.Sleep(time.Duration(120+rng.Intn(80)) * time.Millisecond)
			}
		}(int64(w))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		greedy := user{id: "greedy", c: &http.Client{Timeout: 5 * time.Second}}
		for ctx.Err() == nil {
			for i := 0; i < 60 && ctx.Err() == nil; i++ {
				do(greedy)
			}
			select {
			case <-ctx.Done():
			case <-time.After(15 * time.Second):
			}
		}
	}()
}
