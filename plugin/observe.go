package plugin

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// statusWriter is the ResponseWriter an observed request is served with. It
// records the status code and, for slowThreshold, when the headers were
// written, and it flushes a response that streams.
//
// It embeds the writer, so Header and Write stay compiled method calls: only
// WriteHeader enters the interpreter. Compiled code cannot see Flush or
// Hijack through an interpreted wrapper (Traefik's proxy gets "not
// supported" from http.NewResponseController), so a response without a
// Content-Length (a stream: server-sent events, NDJSON, chunked progress,
// long polling) would wait for the end. WriteHeader therefore swaps the
// embedded writer of such a response for a flushWriter, whose Write flushes
// after every write, as Go's ReverseProxy flushes such a response when it
// holds the original writer. The promoted Write follows the embedded field
// under Yaegi too, so only streams pay for an interpreted Write (about 30
// allocations per write, measured). Upgrades, which need Hijack, and gRPC
// over HTTP/2 are never wrapped (see grpcOverH2).
type statusWriter struct {
	http.ResponseWriter
	code    int   // the final status written; 200 until then
	headers int64 // when the final status was written, ns since epoch, when timed; 0 until then
	timed   bool  // read the clock at WriteHeader (slowThreshold is set)
	stream  bool  // the response has no Content-Length: the embedded writer is a flushWriter
	done    bool  // the handler returned: see abandoned

	// What abandoned records, should the handler not return.
	c     *canary
	r     *route
	req   *http.Request
	gen   uint64
	start int64
}

// WriteHeader records the status, the time and whether the response
// streams. After an informational (1xx) status, the final one overwrites the
// status and the time; a response that sent one (it has no Content-Length)
// is flushed as a stream, which costs only time.
func (w *statusWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	w.code = code
	if !w.stream && w.ResponseWriter.Header()["Content-Length"] == nil {
		w.stream = true
		w.ResponseWriter = &flushWriter{ResponseWriter: w.ResponseWriter}
	}
	if w.timed {
		w.headers = int64(time.Since(epoch))
	}
}

// flushWriter is the embedded writer of a statusWriter whose response
// streams: it flushes the original writer after every write.
type flushWriter struct {
	http.ResponseWriter
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	_ = http.NewResponseController(f.ResponseWriter).Flush()
	return n, err
}

// abandoned is deferred by the observed request paths. When the handler did
// not return (w.done is false) it panicked, as Go's and Traefik's proxies do
// with http.ErrAbortHandler when a body breaks mid-copy: the panic goes on up
// to Traefik, and recordAbandoned records the request exactly once. Without
// it, a half-open breaker's probe slot would never be given back. It is this
// small because under Yaegi a deferred call costs every variable of the
// function it calls, on every request.
func abandoned(w *statusWriter) {
	if !w.done {
		recordAbandoned(w)
	}
}

// recordAbandoned records an aborted request: a 502 and a failure for the
// breaker, or a neutral 499 when the client had gone.
func recordAbandoned(w *statusWriter) {
	w.code = http.StatusBadGateway
	if w.req.Context().Err() != nil {
		w.code = statusClientClosedRequest
	}
	end := int64(time.Since(epoch))
	if w.r.br != nil {
		after(w.r.br, w.gen, outcomeOf(w.c.bs, w.code, 0), end)
	}
	if w.r.vs != nil {
		record(w.r.vs, w.c.boundsNs, w.code, w.req.Method, end-w.start)
	}
}

// grpcOverH2 reports, for an HTTP/2 request, whether it is gRPC. The request
// paths serve with the original writer, testing inline, upgrades (WebSocket
// and others need Hijack) and, through this call, gRPC over HTTP/2 (trailers
// and full-duplex streaming): their status cannot be observed without
// breaking them, so they are counted with code 0 ("unknown"). Inline, the
// Upgrade test costs no call for the common request.
func grpcOverH2(req *http.Request) bool {
	ct := req.Header["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// admit asks r's breaker, which is not simply closed, to let a request
// through, and falls back when it refuses. It returns the route to serve and
// the generation for after, or nil when the request was answered.
func admit(c *canary, r *route, rw http.ResponseWriter, req *http.Request, now int64) (*route, uint64) {
	ok, gen, retryIn := before(r.br, now)
	if ok {
		return r, gen
	}
	return fallback(c, r, rw, req, now, retryIn)
}

// outcomeOf classifies a response for the breaker. Transport errors (502
// and 504 from the proxy, which include a version's timeout) always count.
func outcomeOf(s *breakerSettings, code int, d int64) int {
	if code == 0 || code == statusClientClosedRequest {
		return outcomeNeutral
	}
	if code < 600 && s.failCodes[code] || code == http.StatusBadGateway || code == http.StatusGatewayTimeout {
		return outcomeFailure
	}
	if s.slow > 0 && d > s.slow {
		return outcomeFailure
	}
	return outcomeSuccess
}

// fallback handles a request whose version's breaker refused it: the users
// of a non-primary version go to the primary (whose own breaker must let
// them through); otherwise the client gets responseCode. It returns the
// route to serve and its generation, or nil when it answered itself.
func fallback(c *canary, r *route, rw http.ResponseWriter, req *http.Request, now, retryIn int64) (*route, uint64) {
	p := c.primary
	var gen uint64
	ok := false
	if c.bs.fallback && !r.primary {
		ok = true
		if p.br != nil {
			var pRetry int64
			ok, gen, pRetry = before(p.br, now)
			if !ok && pRetry > retryIn {
				retryIn = pRetry
			}
		}
	}
	if !ok {
		refuse(c, r, rw, req, retryIn)
		return nil, 0
	}
	rw.Header().Set("Edgecanary-Fallback", r.name)
	if c.st != nil {
		recordFallback(c.st, r.name, p.name)
	}
	return p, gen
}

// refuse answers when no version can serve: responseCode, and Retry-After
// until the next probe. Nothing reaches a backend. The request counts under
// the version whose breaker refused it.
func refuse(c *canary, r *route, rw http.ResponseWriter, req *http.Request, retryIn int64) {
	secs := retryAfterSeconds(retryIn)
	if secs < 1 {
		secs = 1
	}
	h := rw.Header()
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(c.bs.responseCode)
	_, _ = rw.Write([]byte(http.StatusText(c.bs.responseCode) + "\n"))
	if c.st != nil {
		recordRefused(r.vs, c.bs.responseCode, req.Method)
	}
}

// setupStats wires reporting: per-version figures, current weights and
// breakers for the report, and the background sender.
func (c *canary) setupStats(ctx context.Context, target reportTarget, interval time.Duration, bounds []float64, versions map[string]VersionConfig) {
	st := getStats(c.name, bounds)
	var total float64
	for _, v := range versions {
		total += float64(v.Weight)
	}
	weights := map[string]float64{}
	breakersByName := map[string]*breaker{}
	for _, r := range c.routes {
		r.vs = st.version(r.name)
		weights[r.name] = float64(versions[r.name].Weight) / total
		if r.br != nil {
			breakersByName[r.name] = r.br
		}
	}
	st.mu.Lock()
	c.boundsNs = st.boundsNs // replaced, never modified, when the bounds change
	st.weights = weights
	st.primary = c.primary.name
	st.limiter = c.rl
	st.breakers = breakersByName
	st.cfg = target
	st.interval = interval
	st.mu.Unlock()
	c.st = st
	register(ctx, st)
}
