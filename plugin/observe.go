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
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// streams reports whether a request may need its response flushed or its
// connection hijacked: WebSocket (and other) upgrades, server-sent events and
// gRPC. Those get the original writer, so they keep working, and are counted
// with code 0 ("unknown"): their status cannot be observed without breaking
// them.
func streams(req *http.Request) bool {
	if _, ok := req.Header["Upgrade"]; ok {
		return true
	}
	if a, ok := req.Header["Accept"]; ok && len(a) > 0 && len(a[0]) >= 17 && strings.Contains(a[0], "text/event-stream") {
		return true
	}
	if ct, ok := req.Header["Content-Type"]; ok && len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc") {
		return true
	}
	return false
}

// serveObserved serves r with the breaker (and fallback) and/or reporting on.
func serveObserved(c *canary, r *route, rw http.ResponseWriter, req *http.Request) {
	start := int64(time.Since(epoch)) + 1
	served := r
	var gen uint64
	if r.br != nil {
		ok, g, retryIn := before(r.br, start)
		gen = g
		if !ok {
			// r cannot take the request: its users go to the primary, whose
			// own breaker must let them through.
			p := c.primary
			pok := false
			if c.bs.fallback && !r.primary {
				pok = true
				if p.br != nil {
					var pRetry int64
					pok, gen, pRetry = before(p.br, start)
					if !pok && pRetry > retryIn {
						retryIn = pRetry
					}
				}
			}
			if !pok {
				refuse(c, r, rw, req, retryIn)
				return
			}
			rw.Header().Set("Edgecanary-Fallback", r.name)
			if c.st != nil {
				recordFallback(c.st, r.name, p.name)
			}
			served = p
		}
	}
	code := 0
	if streams(req) {
		served.handler.ServeHTTP(rw, req)
	} else {
		w := &statusWriter{ResponseWriter: rw}
		served.handler.ServeHTTP(w, req)
		code = w.code
		if code == 0 {
			code = http.StatusOK // the handler wrote a body, or nothing at all
		}
	}
	end := int64(time.Since(epoch)) + 1
	if served.br != nil {
		outcome := outcomeSuccess
		switch {
		case code == 0 || code == statusClientClosedRequest:
			outcome = outcomeNeutral
		case code < 600 && c.bs.failCodes[code] || code == http.StatusBadGateway || code == http.StatusGatewayTimeout:
			outcome = outcomeFailure
		case c.bs.slow > 0 && end-start > c.bs.slow:
			outcome = outcomeFailure
		}
		after(served.br, gen, outcome, end)
	}
	if c.st != nil {
		m, ok := methodIndex[req.Method]
		if !ok {
			m = methodOther
		}
		if code > 999 || code < 0 {
			code = 0
		}
		record(c.st, served.vs, code, m, end-start)
	}
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
		m, ok := methodIndex[req.Method]
		if !ok {
			m = methodOther
		}
		record(c.st, r.vs, c.bs.responseCode, m, -1)
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
