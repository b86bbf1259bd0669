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
	pickEach := !c.single || c.slowPath // the route is picked per request, not always the primary
	if fuseAll && rl != nil && c.bs != nil && c.st != nil && c.fast {
		return serveAll(c)
	}
	if c.observe {
		st := c.st != nil
		bounds := c.boundsNs
		slow := c.bs != nil && c.bs.slow > 0
		// The end of a request is read for reporting. A breaker alone needs
		// it only for an outcome that is not a plain success (see leave).
		timed := st || slow
		since := time.Since // a captured function costs one selection less per call
		return func(rw http.ResponseWriter, req *http.Request) {
			start := int64(since(epoch))
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
				if gen = enter(r.br, sent); gen == 0 {
					if r, gen = admit(c, r, rw, req, sent); r == nil {
						return
					}
				}
			}
			w := &statusWriter{ResponseWriter: rw, code: 200, timed: slow, c: c, r: r, req: req, gen: gen, start: start}
			defer abandoned(w)
			if req.Header["Upgrade"] != nil || req.ProtoMajor == 2 && grpcOverH2(req) {
				r.handler.ServeHTTP(rw, req)
				w.code = 0
			} else {
				r.handler.ServeHTTP(w, req)
			}
			w.done = true
			end := start
			if timed {
				end = int64(since(epoch))
			}
			if st {
				record(r.vs, bounds, w.code, req.Method, end-start)
			}
			if r.br != nil {
				if slow && w.headers != 0 {
					sent = end - (w.headers - sent) // leave judges end - start: the time to the headers
				}
				leave(c, r.br, gen, w.code, sent, end)
			}
		}
	}
	if rl != nil {
		slow := func(rw http.ResponseWriter, req *http.Request) {
			if allow(rl, rw, req, int64(time.Since(epoch))) < 0 {
				return
			}
			if pickEach || req.Header[oh] != nil {
				pick(c, rw, req).handler.ServeHTTP(rw, req)
				return
			}
			primary.handler.ServeHTTP(rw, req)
		}
		if peers, _ := inlineLimiter(rl); peers != nil && !pickEach {
			return serveLimited(rl, oh, primary.handler, slow)
		}
		return slow
	}
	if c.fast {
		lookup, cookieName := c.signed.lookup, c.cookieName
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

// leave records, at end, the outcome of a request whose version took
// end - start to answer; end is start or earlier when the request was not
// timed. slowThreshold judges end - start, so with it the request paths pass
// start = end - (headers - sent): the time from the request leaving the
// plugin to the response headers, what the backend controls, not the
// limiter's delay nor a slow client reading the body. The outcome itself is
// recorded at end, so a breaker opened by it stays open openDuration from
// then. A success while closed, in the same generation, is
// after's step inline: it only ends a run of failures (the count of
// successes in a row matters only while half-open, and every state change
// resets it). Such a success needs no clock: had the window ended meanwhile,
// the next request starts a new one, which clears the counts anyway. Every
// other outcome goes to after, at the time it was answered.
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
	if end <= start {
		end = int64(time.Since(epoch))
	}
	after(b, gen, outcomeOf(c.bs, code, end-start), end)
}

// fuseAll lets serveFunc use serveAll; the tests turn it off to compare.
var fuseAll = true

// serveAll is the request path with every feature on (two or more versions
// with the sticky cookie, the limiter, the breaker and reporting), the one
// the benchmark's budget names. It is serveFunc's observed path with the
// common steps of allow, pick, enter, leave and record inline: five calls
// and their frames fewer, 272 -> 200 allocations per request in the
// micro-benchmark. The copies are held to the functions by
// TestServeAllMatchesServeFunc and, for allow's step, which is
// serveLimited's, by TestLimitedPathsMatchReserve.
func serveAll(c *canary) http.HandlerFunc {
	rl, oh, ok200, bounds := c.rl, c.overrideHeader, c.ok200, c.boundsNs
	lookup, cookieName, bucketOf := c.signed.lookup, c.cookieName, c.bucketOf
	peers, byQ := inlineLimiter(rl)
	sem, interval, span, headers, policy := rl.sem, rl.interval, rl.window+rl.interval, rl.headers, rl.policy
	slow := c.bs.slow > 0
	since := time.Since
	return func(rw http.ResponseWriter, req *http.Request) {
		start := int64(since(epoch))
		sent := start
		// allow: a keep-alive peer admitted without delay, as in serveLimited.
		q := int64(0)
		sem <- struct{}{}
		if b := peers[req.RemoteAddr]; b != nil {
			tat := b.tat
			if tat < start {
				tat = start
			}
			tat += interval
			if q = (start + span - tat) / interval; q > 0 {
				b.tat = tat
			}
		}
		<-sem
		if q <= 0 {
			if sent = allowSlow(rl, rw, req, start); sent < 0 {
				return
			}
		} else if headers {
			h := rw.Header()
			h["Ratelimit-Policy"] = policy
			h["Ratelimit"] = byQ[q]
		}
		// pick: a returning client's valid cookie.
		var r *route
		if req.Header[oh] == nil {
			if ck, err := req.Cookie(cookieName); err == nil {
				if bk, ok := lookup[ck.Value]; ok && bk < numBuckets {
					r = bucketOf[bk]
				}
			}
		}
		if r == nil {
			r = choose(c, rw, req)
		}
		// enter: a closed breaker inside its window.
		br := r.br
		var gen uint64
		br.sem <- struct{}{}
		if br.closedUntil >= sent {
			br.requests++
			gen = br.generation
			<-br.sem
		} else {
			<-br.sem
			if r, gen = admit(c, r, rw, req, sent); r == nil {
				return
			}
			br = r.br
		}
		w := &statusWriter{ResponseWriter: rw, code: 200, timed: slow, c: c, r: r, req: req, gen: gen, start: start}
		defer abandoned(w)
		if req.Header["Upgrade"] != nil || req.ProtoMajor == 2 && grpcOverH2(req) {
			r.handler.ServeHTTP(rw, req)
			w.code = 0
		} else {
			r.handler.ServeHTTP(w, req)
		}
		w.done = true
		code := w.code
		end := int64(since(epoch))
		d := end - start
		// leave: a success while closed, in the same generation.
		done := false
		if code == 200 && ok200 {
			br.sem <- struct{}{}
			if br.closedUntil >= sent && gen == br.generation {
				br.consecFailures = 0
				done = true
			}
			<-br.sem
		}
		if !done {
			if slow && w.headers != 0 {
				sent = end - (w.headers - sent) // leaveSlow judges end - start: the time to the headers
			}
			leaveSlow(c, br, gen, code, sent, end)
		}
		// record.
		i := 0
		for i < len(bounds) && d > bounds[i] {
			i++
		}
		vs := r.vs
		vs.sem <- struct{}{}
		vs.counts[code<<4|methodIndex[req.Method]]++
		if i < len(vs.hist) {
			vs.hist[i]++
			vs.sumNs += d
		}
		<-vs.sem
	}
}

// serveLimited is the request path with the limiter alone, on one version,
// when inlineLimiter's step can answer: a keep-alive peer admitted without
// delay is allow's inline step with the limiter's fields captured and the
// RateLimit field from byQ (50 allocations per request in the
// micro-benchmark, against 83 through allow). Every other request goes to
// slow, the general path for the same configuration, which decides it from
// scratch. TestLimitedPathsMatchReserve holds both to reserve.
func serveLimited(l *limiter, oh string, next http.Handler, slow http.HandlerFunc) http.HandlerFunc {
	peers, byQ := inlineLimiter(l)
	sem, interval, span, headers, policy := l.sem, l.interval, l.window+l.interval, l.headers, l.policy
	since := time.Since // a captured function costs one selection less per call
	return func(rw http.ResponseWriter, req *http.Request) {
		now := int64(since(epoch))
		sem <- struct{}{}
		if b := peers[req.RemoteAddr]; b != nil && req.Header[oh] == nil {
			tat := b.tat
			if tat < now {
				tat = now
			}
			tat += interval
			if q := (now + span - tat) / interval; q > 0 {
				b.tat = tat
				<-sem
				if headers {
					h := rw.Header()
					h["Ratelimit-Policy"] = policy
					h["Ratelimit"] = byQ[q]
				}
				next.ServeHTTP(rw, req)
				return
			}
		}
		<-sem
		slow(rw, req)
	}
}

// inlineLimiter returns what the inline GCRA step of serveLimited and
// serveAll reads: the peer cache, and byQ, the RateLimit field by q.
//
// With tat charged, q = (now + span - tat) / interval, span = window +
// interval, is (interval - wait) / interval, wait being reserve's: the
// remaining count plus one when the request waits for nothing (wait <= 0),
// and 0 or less when it would wait, or the bucket is dead (deadTat). byQ[q]
// is byR[q-1]; byQ[0] is never read. When the step cannot answer (clients
// keyed otherwise than by peer, or headers on without the byR table), the
// peer cache returned is nil: every lookup misses, and allowSlow decides.
func inlineLimiter(l *limiter) (map[string]*bucket, [][]string) {
	byQ := make([][]string, l.nR+1)
	copy(byQ[1:], l.byR)
	if l.source != sourcePeer || l.headers && l.nR == 0 {
		return nil, byQ
	}
	return l.peers, byQ
}
