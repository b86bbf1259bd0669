// Package benchfloor is a reference Traefik plugin for `make bench`. It measures
// what Yaegi costs a middleware before the middleware does any work of its
// own, so that the benchmark can tell the interpreter's share of edgecanary's
// cost from edgecanary's own.
package benchfloor

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"time"
)

// Config selects what the handler does.
type Config struct {
	// Mode is "next": call next and nothing else; "observe": also wrap the
	// writer to read the status code, and read the clock before and after,
	// which is the least a circuit breaker or a latency histogram of the
	// router's own service can do; or "limit": read the clock, take a lock,
	// store the instant under the client's address, and write the two
	// RateLimit fields, which is the least a rate limiter keyed by the peer
	// does before it decides anything; "pick": call the handler that the
	// request's cookie names, the least a sticky canary router does; or
	// "all": what limit, pick and observe do, in one handler, the least a
	// middleware with all three features does.
	Mode string `json:"mode,omitempty"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config { return &Config{Mode: "next"} }

// The status wrapper is the plugin's own, rendered from plugin/observe.go
// by internal/gen (status_gen.go): the floor pays what the plugin's wrapper
// costs.

var epoch = time.Now()

// clock is the plugin's: status_gen.go's WriteHeader reads the time with it.
var clock = time.Since

// tok is what the locks are taken with, as the plugin's lockTok: a
// package-level value is no slot of the handler's frame under Yaegi, the
// literal struct{}{} is one. The floor locks as cheaply as the plugin.
var tok struct{}

// New returns the handler for the mode.
func New(_ context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	switch cfg.Mode {
	case "next":
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			next.ServeHTTP(rw, req)
		}), nil
	case "observe":
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			start := int64(time.Since(epoch))
			w := &statusWriter{ResponseWriter: rw, code: 200}
			next.ServeHTTP(w, req)
			if w.code == 0 || int64(time.Since(epoch)) < start {
				log.Printf("%s: no status or the clock went back", name)
			}
		}), nil
	case "pick":
		// A returning client's cookie picks the handler of its version: the
		// least a sticky canary router does (edgecanary's signed values
		// are one map lookup too).
		byValue := map[string]http.Handler{"stable": next, "canary": next}
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			if ck, err := req.Cookie("floor"); err == nil {
				if h, ok := byValue[ck.Value]; ok {
					h.ServeHTTP(rw, req)
					return
				}
			}
			next.ServeHTTP(rw, req)
		}), nil
	case "limit":
		sem := make(chan struct{}, 1)
		last := map[string]int64{} // RemoteAddr -> the instant of its last request
		policy := []string{`"floor";q=100000;w=1`}
		field := []string{`"floor";r=999;t=1`}
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			now := int64(time.Since(epoch))
			sem <- tok
			if len(last) >= 4096 {
				last = map[string]int64{}
			}
			last[req.RemoteAddr] = now
			<-sem
			h := rw.Header()
			h["Ratelimit-Policy"] = policy
			h["Ratelimit"] = field
			next.ServeHTTP(rw, req)
		}), nil
	case "all":
		sem := make(chan struct{}, 1)
		last := map[string]int64{} // RemoteAddr -> the instant of its last request
		policy := []string{`"floor";q=100000;w=1`}
		field := []string{`"floor";r=999;t=1`}
		byValue := map[string]http.Handler{"stable": next, "canary": next}
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			start := int64(time.Since(epoch))
			sem <- tok
			if len(last) >= 4096 {
				last = map[string]int64{}
			}
			last[req.RemoteAddr] = start
			<-sem
			h := rw.Header()
			h["Ratelimit-Policy"] = policy
			h["Ratelimit"] = field
			handler := next
			if ck, err := req.Cookie("floor"); err == nil {
				if picked, ok := byValue[ck.Value]; ok {
					handler = picked
				}
			}
			w := &statusWriter{ResponseWriter: rw, code: 200}
			handler.ServeHTTP(w, req)
			if w.code == 0 || int64(time.Since(epoch)) < start {
				log.Printf("%s: no status or the clock went back", name)
			}
		}), nil
	}
	return nil, fmt.Errorf("mode: %q: want next, observe, limit, pick or all", cfg.Mode)
}
