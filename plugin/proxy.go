package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// statusClientClosedRequest is what Traefik answers when the client went away.
const statusClientClosedRequest = 499

// transports are shared by every proxied version with the same timeout, across
// routers and reloads, so connections are pooled and nothing leaks per New.
var transports = struct {
	sync.Mutex
	m map[time.Duration]*http.Transport
}{m: map[time.Duration]*http.Transport{}}

const maxTransports = 32

func sharedTransport(timeout time.Duration) *http.Transport {
	transports.Lock()
	defer transports.Unlock()
	if t, ok := transports.m[timeout]; ok {
		return t
	}
	if len(transports.m) >= maxTransports {
		for k, t := range transports.m {
			t.CloseIdleConnections()
			delete(transports.m, k)
		}
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
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
		ResponseHeaderTimeout: timeout,
	}
	transports.m[timeout] = t
	return t
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
// client went away, 502 otherwise. The error itself goes to the log only.
func proxyErrorHandler(rw http.ResponseWriter, req *http.Request, err error) {
	rw.WriteHeader(errorStatus(req, err))
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
	r.backends[int(i)%len(r.backends)].ServeHTTP(rw, req)
}
