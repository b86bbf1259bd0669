// Command bench measures what edgecanary costs per request inside the real
// Traefik, side by side with Traefik alone and with Traefik's native
// middlewares, in one run on one Traefik instance, interleaved across rounds.
// It writes BENCHMARKS.md. It is a report, not a test: it never fails on a
// slow machine. Everything listens and talks on 127.0.0.1 only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
)

func main() { os.Exit(run()) }

type options struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	out         string
	root        string
	sidecar     string
	memoryKeys  int
	only        string
	noMicro     bool
	// latencyRounds of one connection each measure the latency a router
	// adds without queueing (see latencyPass).
	latencyRounds int
	// profile, when set, names a router: instead of the rounds, Traefik's
	// CPU profile (api.debug) is taken while wrk loads that router, and
	// written to profileOut.
	profile, profileOut string
}

// router is one line of the table: a Host on the shared Traefik.
type router struct {
	name  string // Host is <name>.bench
	label string
	// cookie names the sticky cookie a returning client sends, if any.
	cookie string
	// fixedCookie is a Cookie header sent as it is (the pick floor's).
	fixedCookie string
}

var routers = []router{
	{name: "plain", label: "1. Traefik, no middleware (the limit)"},
	{name: "native", label: "2. Traefik native: weighted sticky service + RateLimit + CircuitBreaker", cookie: "native_sticky"},
	{name: "canary", label: "3a. edgecanary: canary routing only", cookie: "edgecanary"},
	{name: "ratelimit", label: "3b. edgecanary: rate limit only"},
	{name: "breaker", label: "3c. edgecanary: circuit breaker only"},
	{name: "reporting", label: "3d. edgecanary: reporting only (to the sidecar)"},
	{name: "all", label: "4. edgecanary: everything on, reporting to the sidecar", cookie: "edgecanary"},
	{name: "floor-next", label: "5a. reference Yaegi plugin that only calls next (the interpreter's floor)"},
	{name: "floor-observe", label: "5b. reference Yaegi plugin that reads the status code and times the request (the floor of 3c, 3d and 4)"},
	{name: "floor-limit", label: "5c. reference Yaegi plugin that reads the clock, takes a lock, stores the instant by peer and writes the two RateLimit fields (the floor of 3b)"},
	{name: "floor-pick", label: "5d. reference Yaegi plugin that calls the handler its request's cookie names (the floor of 3a)", fixedCookie: "floor=stable"},
	{name: "floor-all", label: "5e. reference Yaegi plugin that does what 5b, 5c and 5d do, in one handler (the least everything on must do)", fixedCookie: "floor=stable"},
	{name: "native-redis", label: "6a. Traefik native RateLimit shared through Redis (compiled: one Redis script per request)"},
	{name: "redis", label: "6b. edgecanary: rate limit shared through Redis (tokens leased to each replica by its clients' rate, refreshed in the background)"},
	{name: "all-redis", label: "6c. edgecanary: everything on, with the rate limit shared through Redis", cookie: "edgecanary"},
	{name: "canary-reporting", label: "7a. edgecanary: canary routing and reporting (what a rollout needs, without one)", cookie: "edgecanary"},
	{name: "rollout", label: "7b. edgecanary: 7a with a running rollout (step 1 of 2, 20%)", cookie: "edgecanary"},
}

// benchAccept is the Accept header of every benchmark request, as curl sends
// it: real clients send one, and the middleware may look at it (server-sent
// events are streamed past the status wrapper).
const benchAccept = "*/*"

// floorModule is the reference plugin in floor/, staged next to edgecanary.
const floorModule = "github.com/edgecanary/benchfloor"

func run() int {
	var o options
	flag.IntVar(&o.rounds, "rounds", 7, "interleaved rounds (the table reports medians)")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "wrk duration per router per round")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up per router before the rounds")
	flag.IntVar(&o.connections, "connections", 32, "wrk connections")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "Markdown report to write")
	flag.StringVar(&o.root, "root", "..", "root of the edgecanary module")
	flag.StringVar(&o.sidecar, "sidecar", "", "sidecar binary (built from sidecar/ when empty)")
	flag.IntVar(&o.memoryKeys, "memory-keys", 1000000, "distinct rate-limit keys in the memory run (0: skip)")
	flag.StringVar(&o.only, "only", "", "comma-separated router names to run (default: all)")
	flag.BoolVar(&o.noMicro, "no-micro", false, "skip the Yaegi micro-benchmarks")
	flag.StringVar(&o.profile, "profile", "", "a router: write Traefik's CPU profile under its load to -profile-out, and measure nothing else")
	flag.StringVar(&o.profileOut, "profile-out", "traefik.pprof", "where -profile writes the profile (go tool pprof reads it)")
	flag.IntVar(&o.latencyRounds, "latency-rounds", 4, "interleaved rounds of 2 s with one connection, for the latency without queueing (0: skip)")
	flag.Parse()
	if err := bench(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// backendHandler is the fast local upstream: a small fixed body.
var backendBody = []byte("ok\n")

func startBackend(version string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		rw.Header().Set("X-Served-By", version)
		_, _ = rw.Write(backendBody)
	})}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() { _ = srv.Close() }, nil
}

// result is one wrk run.
type result struct {
	rps      float64
	p50, p99 float64 // microseconds
	errors   int
	rss      int64
	// storeCalls are the Redis script calls per request (the Redis lines).
	storeCalls float64
	requests   int64 // wrk's count of completed requests
}

func bench(o options) error {
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	bin, err := stage.TraefikBinary()
	if err != nil {
		return err
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: apt-get install --no-install-recommends wrk")
	}
	selected := routers
	if o.only != "" {
		selected = nil
		for _, r := range routers {
			if r.name == "plain" || strings.Contains(","+o.only+",", ","+r.name+",") {
				selected = append(selected, r)
			}
		}
	}

	stable, stopStable, err := startBackend("stable")
	if err != nil {
		return err
	}
	defer stopStable()
	canary, stopCanary, err := startBackend("canary")
	if err != nil {
		return err
	}
	defer stopCanary()

	dir, err := os.MkdirTemp("", "edgecanary-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	sidecarIngest := ""
	if contains(selected, "reporting") || contains(selected, "all") || contains(selected, "all-redis") || contains(selected, "canary-reporting") || contains(selected, "rollout") {
		ingest, stopSidecar, err := startSidecar(o, root, dir)
		if err != nil {
			return err
		}
		defer stopSidecar()
		sidecarIngest = ingest
	}

	redisAddr := ""
	if contains(selected, "redis") || contains(selected, "native-redis") || contains(selected, "all-redis") {
		addr, stopRedis, err := startRedis(dir)
		if err != nil {
			return err
		}
		defer stopRedis()
		redisAddr = addr
	}

	if err := stage.Plugin(root, filepath.Join(dir, "plugins-local")); err != nil {
		return err
	}
	if err := stageFloor(filepath.Join(root, "e2e", "cmd", "bench", "floor"), filepath.Join(dir, "plugins-local", "src", floorModule)); err != nil {
		return err
	}
	webPort, err := stage.FreePort()
	if err != nil {
		return err
	}
	apiPort, err := stage.FreePort()
	if err != nil {
		return err
	}
	static, err := stage.StaticConfig(stage.StaticOptions{
		LogLevel:     "ERROR",
		Web:          fmt.Sprintf("127.0.0.1:%d", webPort),
		Traefik:      fmt.Sprintf("127.0.0.1:%d", apiPort),
		File:         filepath.Join(dir, "dynamic.yml"),
		LocalPlugins: map[string]string{"floor": floorModule},
		APIDebug:     o.profile != "",
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "traefik.yml"), []byte(static), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "dynamic.yml"), []byte(dynamicConfig(stable, canary, sidecarIngest, redisAddr)), 0o644); err != nil {
		return err
	}
	logs := &bytes.Buffer{}
	cmd := exec.Command(bin, "--configFile="+filepath.Join(dir, "traefik.yml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	web := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	if err := waitReady(api, selected, web); err != nil {
		return fmt.Errorf("%w\nTraefik logs:\n%s", err, logs.String())
	}

	cookies := map[string]string{}
	for _, r := range selected {
		if r.fixedCookie != "" {
			cookies[r.name] = r.fixedCookie
		}
		if r.cookie != "" {
			c, err := primaryCookie(web, r)
			if err != nil {
				return err
			}
			cookies[r.name] = c
		}
	}

	runWith := func(r router, d time.Duration, threads, connections int) (result, error) {
		args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(connections), "-d", fmt.Sprintf("%ds", int(d.Seconds())),
			"--latency", "-H", "Host: " + r.name + ".bench", "-H", "Accept: " + benchAccept}
		if c := cookies[r.name]; c != "" {
			args = append(args, "-H", "Cookie: "+c)
		}
		args = append(args, web+"/")
		before := redisScriptCalls(redisAddr)
		out, err := exec.Command(wrk, args...).CombinedOutput()
		if err != nil {
			return result{}, fmt.Errorf("wrk %v: %v\n%s", args, err, out)
		}
		res, err := parseWrk(string(out))
		res.rss = rss(cmd.Process.Pid)
		if n := redisScriptCalls(redisAddr) - before; n > 0 && res.requests > 0 {
			res.storeCalls = float64(n) / float64(res.requests)
		}
		return res, err
	}
	runOne := func(r router, d time.Duration) (result, error) { return runWith(r, d, o.threads, o.connections) }

	fmt.Fprintf(os.Stderr, "warming up %d routers for %v each\n", len(selected), o.warmup)
	for _, r := range selected {
		if _, err := runOne(r, o.warmup); err != nil {
			return err
		}
	}
	if o.profile != "" {
		return profileUnderLoad(o, selected, api, runOne)
	}
	rssStart := rss(cmd.Process.Pid)
	results := map[string][]result{}
	for round := 0; round < o.rounds; round++ {
		// Rotate the order each round so no router always runs first or last.
		for i := range selected {
			r := selected[(i+round)%len(selected)]
			res, err := runOne(r, o.duration)
			if err != nil {
				return err
			}
			results[r.name] = append(results[r.name], res)
			fmt.Fprintf(os.Stderr, "round %d %-10s %9.0f req/s p50 %7.0fus p99 %7.0fus errors %d store calls/request %.3f\n", round+1, r.name, res.rps, res.p50, res.p99, res.errors, res.storeCalls)
		}
	}
	rssEnd := rss(cmd.Process.Pid)

	// The latency pass: one connection, so a request never waits behind
	// another and p50 is the time Traefik (and the middleware) spends on
	// it. Under the saturating load above, p50 is mostly queueing, which
	// follows throughput.
	latency := map[string][]result{}
	for round := 0; round < o.latencyRounds; round++ {
		for i := range selected {
			r := selected[(i+round)%len(selected)]
			res, err := runWith(r, 2*time.Second, 1, 1)
			if err != nil {
				return err
			}
			latency[r.name] = append(latency[r.name], res)
			fmt.Fprintf(os.Stderr, "latency round %d %-13s p50 %6.0fus p99 %6.0fus\n", round+1, r.name, res.p50, res.p99)
		}
	}

	var mem *memoryResult
	if o.memoryKeys > 0 && contains(selected, "ratelimit") {
		mem, err = memoryRun(wrk, web, cmd.Process.Pid, o.memoryKeys, dir)
		if err != nil {
			return err
		}
	}
	var micro []microResult
	if !o.noMicro {
		fmt.Fprintln(os.Stderr, "running the Yaegi micro-benchmarks")
		if micro, err = runMicro(filepath.Join(root, "e2e")); err != nil {
			return err
		}
	}
	return writeReport(o, selected, results, latency, rssStart, rssEnd, mem, micro)
}

// stageFloor copies the reference plugin (its manifest, go.mod and every Go
// file: the status wrapper is in status_gen.go) as a local plugin.
func stageFloor(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	goFiles, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil {
		return err
	}
	files := []string{".traefik.yml", "go.mod"}
	for _, f := range goFiles {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, filepath.Base(f))
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startRedis starts Debian's redis-server on a free loopback port, without
// persistence, for the Redis lines.
func startRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("the Redis lines need redis-server (apt-get install --no-install-recommends redis-server): %w", err)
	}
	port, err := stage.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return addr, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("redis-server on %s did not start", addr)
}

// redisScriptCalls is the number of script calls (EVALSHA and EVAL) the
// Redis at addr has served, from INFO commandstats; 0 without Redis.
func redisScriptCalls(addr string) int64 {
	if addr == "" {
		return 0
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("INFO commandstats\r\n")); err != nil {
		return 0
	}
	br := bufio.NewReader(c)
	header, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(header, "$") {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(header[1:]))
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0
	}
	var total int64
	for _, m := range reScriptCalls.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		total += v
	}
	return total
}

var reScriptCalls = regexp.MustCompile(`(?m)^cmdstat_(?:evalsha|eval):calls=(\d+),`)

// profileUnderLoad writes Traefik's CPU profile of 10 s while wrk loads the
// router o.profile: where the time goes, the interpreter's and Traefik's.
func profileUnderLoad(o options, selected []router, api string, runOne func(router, time.Duration) (result, error)) error {
	var target *router
	for i := range selected {
		if selected[i].name == o.profile {
			target = &selected[i]
		}
	}
	if target == nil {
		return fmt.Errorf("-profile %q: no such router among those selected", o.profile)
	}
	done := make(chan error, 1)
	go func() {
		_, err := runOne(*target, 12*time.Second)
		done <- err
	}()
	time.Sleep(time.Second)
	res, err := http.Get(api + "/debug/pprof/profile?seconds=10")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", res.Status)
	}
	f, err := os.Create(o.profileOut)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s: go tool pprof %s\n", o.profileOut, o.profileOut)
	return nil
}

func contains(rs []router, name string) bool {
	for _, r := range rs {
		if r.name == name {
			return true
		}
	}
	return false
}

func waitReady(api string, selected []router, web string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, r := range selected {
			req, _ := http.NewRequest(http.MethodGet, web+"/", nil)
			req.Host = r.name + ".bench"
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				ok = false
				break
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("routers not ready after 60s")
}

// primaryCookie returns a sticky cookie that a returning client of the
// primary version (stable) sends.
func primaryCookie(web string, r router) (string, error) {
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest(http.MethodGet, web+"/", nil)
		req.Host = r.name + ".bench"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		for _, c := range res.Cookies() {
			if c.Name == r.cookie && res.Header.Get("X-Served-By") == "stable" {
				return c.Name + "=" + c.Value, nil
			}
		}
	}
	return "", fmt.Errorf("%s: no cookie for the stable version in 200 tries", r.name)
}

var (
	reLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	reNon2xx  = regexp.MustCompile(`(?m)^\s+Non-2xx or 3xx responses:\s+(\d+)`)
	reSockErr = regexp.MustCompile(`(?m)^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) (result, error) {
	var r result
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reRequests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, l := range reLatency.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		switch l[3] {
		case "ms":
			v *= 1000
		case "s":
			v *= 1e6
		}
		if l[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.errors, _ = strconv.Atoi(m[1])
	}
	if m := reSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.errors += n
		}
	}
	return r, nil
}

func rss(pid int) int64 { return stage.RSS(pid) }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		if x < lo {
			lo = x
		}
		if x > hi {
			hi = x
		}
	}
	return lo, hi
}

func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "model name") {
				model = strings.TrimSpace(strings.SplitN(sc.Text(), ":", 2)[1])
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%s, %d cores, %s/%s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
}

func wrkVersion(wrk string) string {
	out, _ := exec.CommandContext(context.Background(), wrk, "-v").CombinedOutput()
	line := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	return line
}
