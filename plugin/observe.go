package plugin

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// statusWriter records the status code. It embeds the writer so that Header
// and Write, which Traefik's proxy calls most, stay compiled method calls;
// only WriteHeader enters the interpreter. Compiled code cannot see Flush or
// Hijack through an interpreted wrapper, so requests that may stream are
// never wrapped (see streams).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Requests that may stream need their response flushed or their connection
// hijacked: WebSocket (and other) upgrades, server-sent events and gRPC over
// HTTP/2. Those get the original writer, so they keep working, and are
// counted with code 0 ("unknown"): their status cannot be observed without
// breaking them. The test is inlined in the observed request paths (serve.go).

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

// mayStream reports whether a request without Upgrade may stream: server-sent
// events, or gRPC over HTTP/2. The request paths call it for HTTP/2 only and
// test Accept for server-sent events inline: most requests carry Accept, and
// under Yaegi this call cost 37 allocations for such a request, the inline
// test 10.
func mayStream(req *http.Request) bool {
	if a, ok := req.Header["Accept"]; ok && len(a) > 0 && len(a[0]) >= 17 && strings.Contains(a[0], "text/event-stream") {
		return true
	}
	if req.ProtoMajor == 2 {
		if ct, ok := req.Header["Content-Type"]; ok && len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc") {
			return true
		}
	}
	return false
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
	register(st, ctx)
}
