//go:build ignore

// The template of the generated request paths (plugin/paths_gen.go). It is
// Go, read by internal/gen and never compiled itself:
//   - HAS.limit, HAS.pick, HAS.breaker, HAS.stats, HAS.observe (breaker or
//     stats), HAS.rollout and HAS.shared are the features of one path. An
//     if on them alone is decided when generating: its branch stays, the
//     other goes.
//   - INLINE.f(args) is replaced by the body of the plugin's function f, with
//     its parameters renamed to the arguments, its named results to what the
//     call is assigned to, and calls of a func parameter to the body of the
//     func literal passed for it (whose return then returns from the path).
//   - INLINE.limitStep is the limiter's step: gcraStep, or leaseStep on the
//     paths with HAS.shared (the limit shared through Redis).
//   - pathTemplate is rendered once per path (internal/gen's Paths); every
//     other function once, as it is, with its INLINE calls inlined.
//
// Everything a path reads on every request is captured here, outside the
// closure: under Yaegi a captured variable costs nothing per call, a field
// selection costs an allocation.

package plugin

func pathTemplate(c *canary) http.HandlerFunc {
	oh := c.overrideHeader
	if HAS.limit || HAS.observe {
		since := clock // time.Since (see clock); a captured function costs one selection less per call
	}
	if HAS.limit {
		rl := c.rl
		peers, byQ := inlineLimiter(rl)
		if HAS.shared {
			sem := rl.sem // leaseStep reads neither the interval nor the span
		} else {
			sem, interval, span0 := rl.sem, rl.interval, rl.window+rl.interval
		}
		headers, policy := rl.headers, rl.policy
		if !HAS.observe {
			rest := serveReference(c)
			if peers == nil {
				return rest // the inline step would never answer (see inlineLimiter)
			}
		}
	}
	if HAS.pick {
		current, cookieName := c.signed.current, c.cookieName
		if HAS.observe {
			bucketOf1 := c.bucketOf1
			if HAS.rollout {
				ramp, cut := c.ramp, c.cut
			}
		} else {
			// bucket+1 -> its version's handler: one index, no selection.
			// Entry 0, a cookie not signed with the current secret, chooses.
			handlerOf := make([]http.Handler, 1+numBuckets)
			handlerOf[0] = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
				choose(c, rw, req).handler.ServeHTTP(rw, req)
			})
			for b, r := range c.bucketOf {
				handlerOf[b+1] = r.handler
			}
		}
	} else {
		primary := c.primary
		if !HAS.observe {
			next := primary.handler
		} else {
			// One version: what the closure reads of it is captured.
			r := primary
			if HAS.breaker {
				br := r.br
				bsem := br.sem
			}
			if HAS.stats {
				vs := r.vs
				vsem := vs.sem
			}
			handler := r.handler
		}
	}
	if HAS.breaker {
		okCode := c.okCode
		slow := c.timed
	}
	if HAS.observe {
		ab := abandoned // deferring a captured function costs two allocations less than deferring abandoned
	}
	return func(rw http.ResponseWriter, req *http.Request) {
		if HAS.limit || HAS.observe {
			start := int64(since(epoch))
		}
		if HAS.limit && !HAS.observe && !HAS.pick {
			// A keep-alive peer admitted without delay is served from inside
			// the step; every other request goes to rest, which decides it
			// from scratch.
			sem <- lockTok
			if b := peers[req.RemoteAddr]; b != nil && req.Header[oh] == nil {
				_, q := INLINE.limitStep(b, start, interval, span0, func() {
					<-sem
					if headers {
						h := rw.Header()
						h["Ratelimit-Policy"] = policy
						h["Ratelimit"] = byQ[q]
					}
					next.ServeHTTP(rw, req)
					return
				})
			}
			<-sem
			rest(rw, req)
		}
		if HAS.limit && !HAS.observe && HAS.pick {
			// The same, for a returning client with a valid cookie.
			sem <- lockTok
			if b := peers[req.RemoteAddr]; b != nil {
				_, q := INLINE.limitStep(b, start, interval, span0, func() {
					<-sem
					if headers {
						h := rw.Header()
						h["Ratelimit-Policy"] = policy
						h["Ratelimit"] = byQ[q]
					}
					INLINE.cookieLookup(req, oh, cookieName, current, func(b1 int) {
						handlerOf[b1].ServeHTTP(rw, req)
						return
					})
					choose(c, rw, req).handler.ServeHTTP(rw, req)
					return
				})
			}
			<-sem
			rest(rw, req)
		}
		if HAS.limit && HAS.observe {
			// A keep-alive peer admitted without delay; every other request
			// goes to serveLimited: allowSlow decides it, and the reference
			// path serves what it lets through (after a delay, say).
			q := int64(0)
			sem <- lockTok
			if b := peers[req.RemoteAddr]; b != nil {
				_, q = INLINE.limitStep(b, start, interval, span0, func() {})
			}
			<-sem
			if q <= 0 {
				serveLimited(c, rw, req, start)
				return
			}
			if headers {
				h := rw.Header()
				h["Ratelimit-Policy"] = policy
				h["Ratelimit"] = byQ[q]
			}
		}
		if !HAS.observe && !HAS.limit {
			if HAS.pick {
				INLINE.cookieLookup(req, oh, cookieName, current, func(b1 int) {
					handlerOf[b1].ServeHTTP(rw, req)
					return
				})
				choose(c, rw, req).handler.ServeHTTP(rw, req)
			} else {
				if req.Header[oh] != nil {
					choose(c, rw, req).handler.ServeHTTP(rw, req)
					return
				}
				next.ServeHTTP(rw, req)
			}
		}
		if HAS.observe {
			if HAS.pick {
				var r *route
				INLINE.cookieLookup(req, oh, cookieName, current, func(b1 int) {
					r = bucketOf1[b1] // nil when b1 is 0
					if HAS.rollout {
						if b1 > 0 && b1 <= int(atomic.LoadInt32(cut)) { // owner, inline: bucket b1-1 is below the cut
							r = ramp
						}
					}
				})
				if r == nil {
					r = choose(c, rw, req)
				}
				if HAS.breaker {
					br := r.br
					bsem := br.sem
				}
				if HAS.stats {
					vs := r.vs
				}
			} else {
				if req.Header[oh] != nil {
					serveObserved(c, nil, rw, req, start, start) // nil: serveObserved chooses
					return
				}
			}
			// Every branch this closure does not inline is a call: under
			// Yaegi the closure allocates every variable and temporary it
			// has on every request, whether its branch runs or not.
			if INLINE.passThrough(req) {
				serveObserved(c, r, rw, req, start, start)
				return
			}
			if HAS.breaker {
				gen := INLINE.enter(br, bsem, start, func() {
					serveObserved(c, r, rw, req, start, start)
					return
				})
				w := &statusWriter{ResponseWriter: rw, code: 200, timed: slow, c: c, r: r, req: req, gen: gen, start: start}
			} else {
				w := &statusWriter{ResponseWriter: rw, code: 200, c: c, r: r, req: req, start: start}
			}
			defer ab(w)
			if HAS.pick {
				r.handler.ServeHTTP(w, req)
			} else {
				handler.ServeHTTP(w, req)
			}
			w.done = true
			if HAS.breaker {
				INLINE.leave(br, bsem, gen, w.code, okCode, func() {
					leaveSlow(w, start, 0)
				})
			}
			if HAS.stats {
				d := int64(since(epoch))
				d -= start // a compound assignment to a variable is no temporary under Yaegi; the subtraction is one
				if HAS.pick {
					INLINE.record(vs, vs.sem, w.code, req.Method, d)
				} else {
					INLINE.record(vs, vsem, w.code, req.Method, d)
				}
			}
		}
	}
}

// reserve charges b at now when the request waits at most maxDelay, and
// returns the wait. Called with the lock held.
func reserve(l *limiter, b *bucket, now int64) int64 {
	tat, _ := INLINE.gcraStep(b, now, l.interval, l.span, func() {})
	return tat - now - l.window
}

// take reserves one token for key at now (nanoseconds since epoch) and
// returns how long the request must wait for it. A wait above maxDelay is a
// rejection: nothing is reserved, as when x/time/rate's reservation is
// cancelled (in dry-run mode too). When admitted, the bucket is full again
// wait+window after now; when rejected, wait+window-interval after now. (One
// result, not two: every extra result costs allocations in Yaegi.)
func take(l *limiter, key string, now int64) int64 {
	l.sem <- lockTok
	b := l.buckets[key]
	if b == nil {
		b = insertBucket(l, key, now)
	}
	tat, _ := INLINE.gcraStep(b, now, l.interval, l.span, func() {})
	<-l.sem
	return tat - now - l.window
}
