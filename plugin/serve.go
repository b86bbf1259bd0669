package plugin

import (
	"net/http"
	"time"
)

// serveFunc returns the request path for c's configuration.
//
// Yaegi, which runs this code inside Traefik, allocates every variable and
// temporary of a function each time it is called, whether that code runs or
// not, and every field selection is one of them. So each configuration gets
// a closure holding only its own work, and what the closure reads on every
// request is captured from here (a captured variable costs nothing per call,
// unlike c.field). Rare cases are calls.
func serveFunc(c *canary) http.HandlerFunc {
	oh := c.overrideHeader
	primary := c.primary
	rl := c.rl
	if c.observe {
		st := c.st != nil
		bounds := c.boundsNs
		// The end of a request is read for reporting and slowThreshold. A
		// breaker alone needs it only for an outcome that is not a plain
		// success (see leave).
		timed := st || c.bs.slow > 0
		pickEach := !c.single || c.slowPath
		return func(rw http.ResponseWriter, req *http.Request) {
			start := int64(time.Since(epoch))
			if rl != nil && !allow(rl, rw, req, start) {
				return
			}
			r := primary
			if pickEach || req.Header[oh] != nil {
				r = pick(c, rw, req)
			}
			var gen uint64
			if r.br != nil {
				if gen = enter(r.br, start); gen == 0 {
					if r, gen = admit(c, r, rw, req, start); r == nil {
						return
					}
				}
			}
			code := 0
			if req.Header["Upgrade"] != nil || (req.ProtoMajor == 2 || req.Header["Accept"] != nil) && mayStream(req) {
				r.handler.ServeHTTP(rw, req)
			} else {
				w := &statusWriter{ResponseWriter: rw, code: 200}
				r.handler.ServeHTTP(w, req)
				code = w.code
			}
			end := start
			if timed {
				end = int64(time.Since(epoch))
			}
			if r.br != nil {
				leave(c, r.br, gen, code, start, end)
			}
			if st {
				record(r.vs, bounds, code, req.Method, end-start)
			}
		}
	}
	if rl != nil {
		pickEach := !c.single || c.slowPath
		return func(rw http.ResponseWriter, req *http.Request) {
			if !allow(rl, rw, req, int64(time.Since(epoch))) {
				return
			}
			if pickEach || req.Header[oh] != nil {
				pick(c, rw, req).handler.ServeHTTP(rw, req)
				return
			}
			primary.handler.ServeHTTP(rw, req)
		}
	}
	if c.fast {
		lookup, cookieName := c.lookup, c.cookieName
		handlerOf := make([]http.Handler, numBuckets) // bucket -> its version's handler: one index, no selection
		for b, r := range c.bucketOf {
			handlerOf[b] = r.handler
		}
		return func(rw http.ResponseWriter, req *http.Request) {
			if req.Header[oh] == nil {
				if ck, err := req.Cookie(cookieName); err == nil {
					if b, ok := lookup[ck.Value]; ok && b < numBuckets {
						handlerOf[b].ServeHTTP(rw, req)
						return
					}
				}
			}
			choose(c, rw, req).handler.ServeHTTP(rw, req)
		}
	}
	if c.single && !c.slowPath {
		next := primary.handler
		return func(rw http.ResponseWriter, req *http.Request) {
			if req.Header[oh] != nil {
				req.Header.Del(oh) // overrides mean nothing with one version, but never go upstream
			}
			next.ServeHTTP(rw, req)
		}
	}
	return func(rw http.ResponseWriter, req *http.Request) {
		choose(c, rw, req).handler.ServeHTTP(rw, req)
	}
}

// enter is before's step for a closed breaker whose window has not ended:
// it counts the request and returns its generation. It returns 0 (never a
// generation) in every other case, for admit to decide.
func enter(b *breaker, now int64) uint64 {
	b.sem <- struct{}{}
	if b.closedUntil < now {
		<-b.sem
		return 0
	}
	b.requests++
	gen := b.generation
	<-b.sem
	return gen
}

// leave records the outcome of a request that started at start and ended at
// end (end is start when the request was not timed). A success while
// closed, in the same generation, is after's step inline: it only ends a run
// of failures (the count of successes in a row matters only while
// half-open, and every state change resets it). Such a success needs no
// clock: had the window ended meanwhile, the next request starts a new one,
// which clears the counts anyway. Every other outcome goes to after, at the
// time it ended.
func leave(c *canary, b *breaker, gen uint64, code int, start, end int64) {
	if code == 200 && c.ok200 {
		b.sem <- struct{}{}
		if b.closedUntil >= start && gen == b.generation {
			b.consecFailures = 0
			<-b.sem
			return
		}
		<-b.sem
	}
	leaveSlow(c, b, gen, code, start, end)
}

func leaveSlow(c *canary, b *breaker, gen uint64, code int, start, end int64) {
	if end == start {
		end = int64(time.Since(epoch))
	}
	after(b, gen, outcomeOf(c.bs, code, end-start), end)
}
