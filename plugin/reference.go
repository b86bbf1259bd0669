package plugin

import (
	"net/http"
)

// serveReference is the request path that calls each step instead of
// inlining it: the generated paths are held to it by the tests, and it
// serves the configurations they do not cover (see serveFunc).
func serveReference(c *canary) http.HandlerFunc {
	oh := c.overrideHeader
	primary := c.primary
	rl := c.rl
	pickEach := c.pickAll
	if c.observe {
		return func(rw http.ResponseWriter, req *http.Request) {
			start := int64(clock(epoch))
			sent := start
			if rl != nil {
				if sent = allow(rl, rw, req, start); sent < 0 {
					return
				}
			}
			servePicked(c, rw, req, start, sent)
		}
	}
	if rl != nil {
		if rl.shared != nil {
			// Every request is the store's (or its lease's): no inline step to try.
			if rl.source == sourcePeer {
				return func(rw http.ResponseWriter, req *http.Request) {
					if allowSharedPeer(rl, rw, req, int64(clock(epoch))) < 0 {
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
				if allowShared(rl, rw, req, sourceKey(rl, req), int64(clock(epoch))) < 0 {
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
			if allow(rl, rw, req, int64(clock(epoch))) < 0 {
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

// serveObserved serves req with r's version (nil: the one choose picks),
// observed: the breaker's steps, the status wrapper, the outcome and the
// figures. The request arrived at start and left the limiter at sent. It is
// the reference path's, and the generated paths call it for what they do
// not inline: a breaker that is not simply closed, a request passed through
// unobserved (see passThrough), and on the paths without the cookie pick,
// an override header; through serveLimited, a request their inline limiter
// step does not admit.
func serveObserved(c *canary, r *route, rw http.ResponseWriter, req *http.Request, start, sent int64) {
	if r == nil {
		r = choose(c, rw, req)
	}
	var gen uint64
	entered := false // enter let it through: leave may take its success
	if r.br != nil {
		if gen = enter(r.br, r.br.sem, sent, noop); gen != 0 {
			entered = true
		} else if r, gen = admit(c, r, rw, req, sent); r == nil {
			return
		}
	}
	w := &statusWriter{ResponseWriter: rw, code: 200, timed: c.timed, c: c, r: r, req: req, gen: gen, start: start}
	defer abandoned(w)
	if passThrough(req) {
		r.handler.ServeHTTP(rw, req)
		w.code = 0
	} else {
		r.handler.ServeHTTP(w, req)
	}
	w.done = true
	if r.br != nil {
		if entered {
			leave(r.br, r.br.sem, gen, w.code, c.okCode, func() { leaveSlow(w, sent, 0) })
		} else {
			leaveSlow(w, sent, 0)
		}
	}
	if c.st != nil {
		record(r.vs, r.vs.sem, w.code, req.Method, int64(clock(epoch))-start)
	}
}

// servePicked picks req's version as the reference path does and serves it
// observed (serveObserved): the request arrived at start and left the
// limiter at sent.
func servePicked(c *canary, rw http.ResponseWriter, req *http.Request, start, sent int64) {
	r := c.primary
	if c.pickAll || req.Header[c.overrideHeader] != nil {
		r = pick(c, rw, req)
	}
	serveObserved(c, r, rw, req, start, sent)
}

// serveLimited serves an observed request that the generated paths' inline
// limiter step did not admit (a new peer, a delay, a rejection): allowSlow
// decides it, as allow would have after the same step, and servePicked
// serves what it lets through.
func serveLimited(c *canary, rw http.ResponseWriter, req *http.Request, start int64) {
	if sent := allowSlow(c.rl, rw, req, start); sent >= 0 {
		servePicked(c, rw, req, start, sent)
	}
}
