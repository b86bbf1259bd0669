package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
	"github.com/gorilla/websocket"
)

const moduleName = stage.ModuleName

// repoRoot is the root of the edgecanary module.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// stagePlugin lays the plugin out under dir as Traefik's plugins-local (and a
// Yaegi GOPATH).
func stagePlugin(t testing.TB, dir string) {
	t.Helper()
	if err := stage.Plugin(repoRoot(t), dir); err != nil {
		t.Fatal(err)
	}
}

func traefikBinary(t testing.TB) string {
	t.Helper()
	p, err := stage.TraefikBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a free TCP port on 127.0.0.1 (see stage.FreePort).
func freePort(t testing.TB) int {
	t.Helper()
	port, err := stage.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// traefikProc is a running Traefik with the plugin as a local plugin.
type traefikProc struct {
	t        testing.TB
	dir      string
	web      string // http://127.0.0.1:port of the web entry point
	api      string // http://127.0.0.1:port of the API (and pprof)
	cmd      *exec.Cmd
	logs     *syncBuffer
	dynamic  string
	exited   chan struct{} // closed when the process has ended
	stopOnce sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// traefikOptions shape the static configuration.
type traefikOptions struct {
	// forwardedTrustedIPs are the entry point's forwardedHeaders.trustedIPs.
	forwardedTrustedIPs []string
	// static, when set, writes the whole static configuration instead of
	// stage.StaticConfig, given the web and traefik entry points' addresses.
	// It must enable the API on the traefik entry point (api.insecure):
	// startTraefik waits for /api/rawdata, not /ping, which the configuration
	// may lack.
	static func(web, api string) (string, error)
}

// startTraefik starts Traefik with the given dynamic configuration, written
// as is. The static configuration is stage.StaticConfig's, or opts.static's.
// A free port taken by another process before Traefik binds it (freePort
// closes its listener) is retried with new ports, up to three times.
func startTraefik(t testing.TB, dynamic string, opts traefikOptions) *traefikProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, taken := tryStartTraefik(t, dynamic, opts)
		if !taken {
			return p
		}
		if attempt == 3 {
			t.Fatalf("Traefik could not bind its ports three times:\n%s", p.logs.String())
		}
		t.Logf("Traefik's port was taken by another process; trying new ports")
	}
}

// tryStartTraefik is one attempt of startTraefik: taken reports that
// Traefik exited because one of its ports was in use.
func tryStartTraefik(t testing.TB, dynamic string, opts traefikOptions) (p *traefikProc, taken bool) {
	t.Helper()
	bin := traefikBinary(t)
	dir := t.TempDir()
	stagePlugin(t, filepath.Join(dir, "plugins-local"))
	web, api := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p = &traefikProc{
		t:       t,
		dir:     dir,
		web:     "http://" + web,
		api:     "http://" + api,
		logs:    &syncBuffer{},
		dynamic: filepath.Join(dir, "dynamic.yml"),
		exited:  make(chan struct{}),
	}
	var static string
	var err error
	if opts.static != nil {
		static, err = opts.static(web, api)
	} else {
		static, err = stage.StaticConfig(stage.StaticOptions{
			LogLevel:          "INFO",
			Web:               web,
			WebTrustedIPs:     opts.forwardedTrustedIPs,
			Traefik:           api,
			APIDebug:          true,
			ProvidersThrottle: 100 * time.Millisecond,
			File:              p.dynamic,
			Watch:             true,
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "traefik.yml"), []byte(static), 0o644); err != nil {
		t.Fatal(err)
	}
	p.writeDynamic(dynamic)

	p.cmd = exec.Command(bin, "--configFile="+filepath.Join(dir, "traefik.yml"))
	p.cmd.Dir = dir
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	p.cmd.Env = append(os.Environ(), "HOME="+dir)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(p.cmd, p.exited)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("Traefik logs:\n%s", p.logs.String())
		}
	})
	ready := "/ping"
	if opts.static != nil {
		ready = "/api/rawdata"
	}
	p.waitFor(60*time.Second, "Traefik "+ready, func() bool {
		select {
		case <-p.exited:
			if strings.Contains(p.logs.String(), "address already in use") {
				taken = true
				return true
			}
			t.Fatalf("Traefik exited:\n%s", p.logs.String())
		default:
		}
		res, err := http.Get(p.api + ready)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return p, taken
}

// stop ends Traefik (SIGTERM, then SIGKILL after 10 s) and waits for it. It
// may be called more than once.
func (p *traefikProc) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// writeDynamic replaces the watched dynamic configuration atomically.
func (p *traefikProc) writeDynamic(content string) {
	p.t.Helper()
	tmp := p.dynamic + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, p.dynamic); err != nil {
		p.t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func (p *traefikProc) waitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	waitFor(p.t, timeout, what, cond)
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitRouter waits until the API shows the router and its middlewares enabled.
func (p *traefikProc) waitRouter(router string) {
	p.t.Helper()
	p.waitFor(30*time.Second, "router "+router, func() bool {
		res, err := http.Get(p.api + "/api/http/routers/" + router + "@file")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK && strings.Contains(string(body), `"status":"enabled"`)
	})
}

// goroutines reads Traefik's goroutine count from /debug/pprof.
func (p *traefikProc) goroutines() int {
	p.t.Helper()
	res, err := http.Get(p.api + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	line, _ := bufio.NewReader(res.Body).ReadString('\n')
	m := regexp.MustCompile(`total (\d+)`).FindStringSubmatch(line)
	if m == nil {
		p.t.Fatalf("no goroutine total in %q", line)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// rss is Traefik's resident memory in bytes.
func (p *traefikProc) rss() int64 { return stage.RSS(p.cmd.Process.Pid) }

// backend is one version of the demo service.
type backend struct {
	*httptest.Server
	version  string
	requests atomic.Int64
	overSeen atomic.Int64 // requests that arrived with an X-Canary header
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func newBackend(t testing.TB, version string) *backend {
	t.Helper()
	return newBackendAt(t, version, "127.0.0.1:0")
}

// newBackendAt is newBackend listening on a given address.
func newBackendAt(t testing.TB, version, addr string) *backend {
	t.Helper()
	b := &backend{version: version}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(rw http.ResponseWriter, req *http.Request) {
		conn, err := upgrader.Upgrade(rw, req, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(mt, append([]byte(version+":"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/sse", func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("Content-Type", "text/event-stream")
		rw.Header().Set("Cache-Control", "no-cache")
		fmt.Fprintf(rw, "data: hello from %s\n\n", version)
		http.NewResponseController(rw).Flush()
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-req.Context().Done():
			return
		}
		fmt.Fprintf(rw, "data: bye\n\n")
	})
	mux.HandleFunc("/status/", func(rw http.ResponseWriter, req *http.Request) {
		b.requests.Add(1)
		code, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/status/"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusBadRequest
		}
		rw.Header().Set("X-Version", version)
		rw.WriteHeader(code)
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, req *http.Request) {
		b.requests.Add(1)
		if req.Header.Get("X-Canary") != "" {
			b.overSeen.Add(1)
		}
		rw.Header().Set("X-Version", version)
		rw.Header().Set("X-Seen-Canary", req.Header.Get("X-Canary"))
		rw.Header().Set("X-Seen-Host", req.Host)
		_, _ = io.WriteString(rw, version)
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// client is an HTTP client with no cookie jar, from a chosen loopback address.
func client(localIP string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: 64,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get sends a GET with optional cookie and headers and returns the version that
// answered, the response and the body.
func get(t testing.TB, c *http.Client, url string, cookie *http.Cookie, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(body)
}

func cookieNamed(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}
