package plugin

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// statusClientClosedRequest is what Traefik answers when the client went away.
const statusClientClosedRequest = 499

// transport is shared by every proxied version, across routers and reloads,
// so connections are pooled and nothing leaks per New. A version's timeout is
// applied per request by headerDeadline, not here.
var transport = newTransport()

func newTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: nil, // never via an environment proxy: the upstream is explicit
		// A closure, not the method value: Yaegi mistypes method values of
		// compiled types. It runs once per new connection only.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

// headerDeadline bounds a version's wait for response headers: the time to
// get a connection (dial and TLS handshake included) plus the time from the
// request being written to its response headers, together at most timeout.
// Sending the request body is not counted, as with Traefik's own
// responseHeaderTimeout: a client uploading slowly is not the backend's
// fault. Past timeout the attempt is cancelled and the proxy answers 504.
// Once the headers are in, the body streams for as long as it takes.
type headerDeadline struct {
	next    http.RoundTripper
	timeout time.Duration
}

// errHeaderTimeout is a version's timeout; errorStatus maps it to 504.
var errHeaderTimeout = fmt.Errorf("no response headers within the version's timeout: %w", context.DeadlineExceeded)

func (d *headerDeadline) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	var fired int32
	timer := time.AfterFunc(d.timeout, func() {
		atomic.StoreInt32(&fired, 1)
		cancel()
	})
	deadline := time.Now().Add(d.timeout)
	// The timer is paused from the connection to the request being written.
	// A backend may answer before it has read the body, so WroteRequest can
	// come after RoundTrip returned: mu and done keep it from re-arming the
	// timer then, which would cancel the body being read.
	var mu sync.Mutex
	done := false
	var left time.Duration // what is left of timeout once the connection is there
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			if !done && timer.Stop() {
				left = time.Until(deadline)
			}
			mu.Unlock()
		},
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			mu.Lock()
			if !done && left > 0 {
				timer.Reset(left)
			}
			mu.Unlock()
		},
	}
	res, err := d.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	mu.Lock()
	done = true
	timer.Stop()
	mu.Unlock()
	if atomic.LoadInt32(&fired) != 0 {
		if res != nil {
			_ = res.Body.Close()
		}
		return nil, errHeaderTimeout
	}
	if err != nil {
		cancel()
	}
	return res, err
}

// parseUpstream validates a version's URL.
func parseUpstream(field, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid URL %q: %w", field, raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%s: invalid URL %q: scheme must be http or https", field, raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s: invalid URL %q: no host", field, raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s: invalid URL %q: only scheme, host and path are allowed", field, raw)
	}
	return u, nil
}

// newProxy returns the compiled standard-library reverse proxy for one
// upstream. Its Director (from NewSingleHostReverseProxy) keeps the Host
// header and the X-Forwarded-Proto/Host/Port/Server and X-Real-Ip headers that
// Traefik's entry point has set, and appends the peer to X-Forwarded-For, as
// Traefik's own proxy does. Nothing interpreted runs per request unless an
// upstream fails.
func newProxy(target *url.URL, transport http.RoundTripper) *httputil.ReverseProxy {
	p := httputil.NewSingleHostReverseProxy(target)
	p.Transport = transport
	p.FlushInterval = 100 * time.Millisecond // Traefik's default
	p.ErrorHandler = proxyErrorHandler
	p.ErrorLog = nil
	return p
}

// proxyErrorHandler answers as Traefik does: 504 on a timeout, 499 when the
// client went away, 502 otherwise. The error itself goes to the log only
// (see logProxyError), never to the client.
func proxyErrorHandler(rw http.ResponseWriter, req *http.Request, err error) {
	code := errorStatus(req, err)
	if code != statusClientClosedRequest {
		logProxyError(req.URL.Host, code, err, time.Now())
	}
	rw.WriteHeader(code)
}

// proxyErrors rate-limits the log of upstream errors: one line per
// proxyLogEvery, with the number of errors it left out.
var proxyErrors = struct {
	sync.Mutex
	last       time.Time
	suppressed int
}{}

const proxyLogEvery = 10 * time.Second

func logProxyError(host string, code int, err error, now time.Time) bool {
	proxyErrors.Lock()
	if d := now.Sub(proxyErrors.last); !proxyErrors.last.IsZero() && d >= 0 && d < proxyLogEvery {
		proxyErrors.suppressed++
		proxyErrors.Unlock()
		return false
	}
	n := proxyErrors.suppressed
	proxyErrors.last, proxyErrors.suppressed = now, 0
	proxyErrors.Unlock()
	extra := ""
	if n > 0 {
		extra = fmt.Sprintf(" (%d more upstream errors in the last %v not logged)", n, proxyLogEvery)
	}
	log.Printf("edgecanary: upstream %s failed, answered %d: %v%s", host, code, err, extra)
	return true
}

func errorStatus(req *http.Request, err error) int {
	if errors.Is(err, context.Canceled) || req.Context().Err() == context.Canceled {
		return statusClientClosedRequest
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// roundRobin spreads requests over several upstreams of one version.
type roundRobin struct {
	next     uint32
	backends []http.Handler
}

func (r *roundRobin) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	i := atomic.AddUint32(&r.next, 1)
	// The modulo in uint32: int(i) is negative past 2^31 on 32-bit builds.
	r.backends[i%uint32(len(r.backends))].ServeHTTP(rw, req)
}
