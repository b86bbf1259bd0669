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
// breaking them. The test is inlined in serveObserved.

// serveObserved serves r with the breaker (and fallback) and/or reporting
// on. Yaegi allocates a frame sized by all of a function's code on every
// call, so this hot function stays small and the rare cases live in their
// own functions.
func serveObserved(c *canary, r *route, rw http.ResponseWriter, req *http.Request) {
	start := int64(time.Since(epoch)) + 1
	served := r
	var gen uint64
	if b := r.br; b != nil {
		// The closed breaker's step of before, inline: a call with three
		// results costs dozens of allocations in Yaegi. Everything else
		// goes through before.
		b.sem <- struct{}{}
		fast := b.state == stateClosed && (b.expiry == 0 || b.expiry >= start)
		if fast {
			b.requests++
			gen = b.generation
		}
		<-b.sem
		if !fast {
			var ok bool
			var retryIn int64
			ok, gen, retryIn = before(b, start)
			if !ok {
				served, gen = fallback(c, r, rw, req, start, retryIn)
				if served == nil {
					return
				}
			}
		}
	}
	code := 0
	if _, up := req.Header["Upgrade"]; up || (req.ProtoMajor == 2 || req.Header["Accept"] != nil) && mayStream(req) {
		served.handler.ServeHTTP(rw, req)
	} else {
		w := &statusWriter{ResponseWriter: rw, code: http.StatusOK}
		served.handler.ServeHTTP(w, req)
		code = w.code
	}
	end := start
	if c.timed {
		end = int64(time.Since(epoch)) + 1
	}
	if b := served.br; b != nil {
		outcome := outcomeSuccess
		if code != http.StatusOK || c.bs.slow > 0 || c.bs.failCodes[http.StatusOK] {
			outcome = outcomeOf(c.bs, code, end-start) // a call only when there is something to classify
		}
		// after's step for a success while closed, inline (see above).
		b.sem <- struct{}{}
		fast := outcome == outcomeSuccess && b.state == stateClosed && gen == b.generation && (b.expiry == 0 || b.expiry >= end)
		if fast {
			b.successes++
			b.consecSuccesses++
			b.consecFailures = 0
		}
		<-b.sem
		if !fast {
			after(b, gen, outcome, end)
		}
	}
	if c.st != nil {
		record(served.vs, c.boundsNs, code, req.Method, end-start)
	}
}

// mayStream reports whether a request without Upgrade may stream: server-sent
// events, or gRPC over HTTP/2.
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
		record(r.vs, c.boundsNs, c.bs.responseCode, req.Method, -1)
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
