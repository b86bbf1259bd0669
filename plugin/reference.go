package plugin

import (
	"net/http"
	"time"
)

// serveReference is the request path that calls each step instead of
// inlining it: the generated paths are held to it by the tests, and it
// serves the configurations they do not cover (see serveFunc).
func serveReference(c *canary) http.HandlerFunc {
	oh := c.overrideHeader
	primary := c.primary
	rl := c.rl
	pickEach := !c.single || c.slowPath // the route is picked per request, not always the primary
	if c.observe {
		st := c.st != nil
		bounds := c.boundsNs
		slow := c.bs != nil && c.bs.slow > 0
		// The end of a request is read for reporting. A breaker alone needs
		// it only for an outcome that is not a plain success (see leave).
		timed := st || slow
		return func(rw http.ResponseWriter, req *http.Request) {
			start := int64(time.Since(epoch))
			sent := start
			if rl != nil {
				if sent = allow(rl, rw, req, start); sent < 0 {
					return
				}
			}
			r := primary
			if pickEach || req.Header[oh] != nil {
				r = pick(c, rw, req)
			}
			var gen uint64
			if r.br != nil {
				if gen = enter(r.br, sent, noop); gen == 0 {
					if r, gen = admit(c, r, rw, req, sent); r == nil {
						return
					}
				}
			}
			w := &statusWriter{ResponseWriter: rw, code: 200, timed: slow, c: c, r: r, req: req, gen: gen, start: start}
			defer abandoned(w)
			if passThrough(req) {
				r.handler.ServeHTTP(rw, req)
				w.code = 0
			} else {
				r.handler.ServeHTTP(w, req)
			}
			w.done = true
			end := start
			if timed {
				end = int64(time.Since(epoch))
			}
			if r.br != nil {
				leave(r.br, gen, w.code, c.ok200, sent, func() {
					if slow {
						sent = headersStart(w, sent, end)
					}
					leaveSlow(c, r.br, gen, w.code, sent, end)
				})
			}
			if st {
				record(r.vs, bounds, w.code, req.Method, end-start)
			}
		}
	}
	if rl != nil {
		if rl.shared != nil {
			// Every request is the store's (or its lease's): no inline step to try.
			if rl.source == sourcePeer {
				return func(rw http.ResponseWriter, req *http.Request) {
					if allowSharedPeer(rl, rw, req, int64(time.Since(epoch))) < 0 {
						return
					}
					if pickEach || req.Header[oh] != nil {
						pick(c, rw, req).handler.ServeHTTP(rw, req)
						return
					}
					primary.handler.ServeHTTP(rw, req)
				}
			}
			return func(rw http.ResponseWriter, req *http.Request) {
				if allowShared(rl, rw, req, sourceKey(rl, req), int64(time.Since(epoch))) < 0 {
					return
				}
				if pickEach || req.Header[oh] != nil {
					pick(c, rw, req).handler.ServeHTTP(rw, req)
					return
				}
				primary.handler.ServeHTTP(rw, req)
			}
		}
		return func(rw http.ResponseWriter, req *http.Request) {
			if allow(rl, rw, req, int64(time.Since(epoch))) < 0 {
				return
			}
			if pickEach || req.Header[oh] != nil {
				pick(c, rw, req).handler.ServeHTTP(rw, req)
				return
			}
			primary.handler.ServeHTTP(rw, req)
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
