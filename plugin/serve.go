package plugin

import "net/http"

// serveFunc returns the request path for c's configuration. It only chooses;
// the paths themselves are rendered by internal/gen (paths_gen.go) from one
// template and the steps below, each written once, or are the reference path
// (reference.go), which calls those steps.
//
//	configuration                           path                  steps it inlines                  held equal to the reference by
//	one version, nothing on                 reference (next)      none                              TestOverrideHeaderNeverGoesUpstream
//	versions with the cookie                pathP                 cookieLookup                      TestGeneratedPathsMatchReference
//	limiter, one version / with the cookie  pathL / pathLP        gcraStep (+ cookieLookup)         TestGeneratedPathsMatchReference, TestLimitedPathsMatchReserve
//	breaker and/or reporting, one version   pathB, pathS, pathBS  enter, leave, passThrough,        TestGeneratedPathsMatchReference
//	  with the cookie, with the limiter     pathP*, pathL*        record (+ the above); the rest    (random sequences, every path)
//	                                                              calls serveObserved, or with the
//	                                                              limiter serveLimited
//	a rollout (stats on), with the cookie   pathPSR, pathPBSR,    the above, and owner's cut test   TestGeneratedPathsMatchReference
//	                                        pathLPSR, pathLPBSR
//	the limit shared through Redis          each L path + D       leaseStep instead of gcraStep     TestGeneratedPathsMatchReference (a real redis-server),
//	  (rateLimit.redis)                     (pathLD ... pathLPBSRD)                                     TestSharedPathsRateLimitFieldFromTheLease
//	sticky.header or override.cookie set    reference             none: each request is chosen      the reference itself
//	limiter the inline step cannot answer   pathL/pathLP return   none: allowSlow decides           TestGeneratedPathsMatchReference
//	  (not by peer, fields without table),  the reference path                                      TestSharedLimit*, TestTraefikReplicasShareOneLimit
//	  nothing observed
//
// Path names are the features' initials: L limiter, P cookie pick, B breaker,
// S stats (reporting), R rollout, D the limit shared through Redis. To add a step: write it once as a function of the
// plugin (named results and one final bare return, or one return
// expression; a func parameter marks where the caller's code goes), call it
// from the reference path, use INLINE.step(...) in
// internal/gen/template/paths.go, and run `make generate`. `make lint` fails
// when paths_gen.go is not what the generator renders.
//
// Why generated: Yaegi, which runs this code inside Traefik, allocates every
// variable and temporary of a function each time it is called, whether that
// code runs or not, and every field selection is one of them. So each
// configuration gets a closure holding only its own work, its steps inline
// (a call costs its frame), and what the closure reads on every request is
// captured (a captured variable costs nothing per call, unlike c.field).
// Rare cases are calls.
func serveFunc(c *canary) http.HandlerFunc {
	if generated {
		if path := generatedPaths[pathKey(c)]; path != nil {
			return path(c)
		}
	}
	return serveReference(c)
}

// generated lets serveFunc use the generated paths; the tests turn it off to
// compare them with the reference path.
var generated = true

// lockTok is what every lock of the plugin (a channel of capacity one: sem,
// b.sem, vs.sem) is taken with: sem <- lockTok, not sem <- struct{}{}.
// Under Yaegi the literal struct{}{} is a temporary of the function that
// sends it, and each temporary is a slot of that function's frame on every
// call, zero-sized or not (24 bytes of the frame's []reflect.Value); a
// package-level variable is none. On the everything-on path (pathLPBS) the
// four literals made the frame 98 slots (2352 bytes: Go's 2688-byte size
// class) instead of 94 (2256 bytes: the 2304-byte class); the frame is
// allocated, and scanned by the GC, on every request.
var lockTok struct{}

// pathKey is the key of c's configuration in generatedPaths, or "" when no
// generated path serves it.
func pathKey(c *canary) string {
	if !c.single && !c.fast || c.single && c.slowPath {
		return "" // every request is chosen: the reference path
	}
	k := ""
	if c.rl != nil {
		k += "L"
	}
	if c.fast {
		k += "P"
	}
	if c.bs != nil {
		k += "B"
	}
	if c.st != nil {
		k += "S"
	}
	if c.cut != nil {
		k += "R"
	}
	if c.rl != nil && c.rl.shared != nil {
		k += "D"
	}
	return k
}
