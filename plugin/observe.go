package plugin

import (
	"net/http"
	"strings"
)

// statusWriter is the ResponseWriter an observed request is served with. It
// records the status code and, for slowThreshold, when the headers were
// written, and it flushes a response that streams.
//
// It embeds the writer, so Header and Write stay compiled method calls: only
// WriteHeader enters the interpreter. Compiled code cannot see Flush or
// Hijack through an interpreted wrapper (Traefik's proxy gets "not
// supported" from http.NewResponseController), so a response without a
// Content-Length (a stream: server-sent events, NDJSON, chunked progress,
// long polling) would wait for the end. WriteHeader therefore swaps the
// embedded writer of such a response for a flushWriter, whose Write flushes
// after every write, as Go's ReverseProxy flushes such a response when it
// holds the original writer. The promoted Write follows the embedded field
// under Yaegi too, so only streams pay for an interpreted Write (about 30
// allocations per write, measured). Upgrades, which need Hijack, and gRPC
// over HTTP/2 are never wrapped (see grpcOverH2).
type statusWriter struct {
	http.ResponseWriter
	code    int   // the final status written; 200 until then
	headers int64 // when the final status was written, ns since epoch, when timed; 0 until then
	timed   bool  // read the clock at WriteHeader (slowThreshold is set)
	stream  bool  // the response has no Content-Length: the embedded writer is a flushWriter
	final   bool  // the final (not 1xx) status is written: a later WriteHeader is ignored, as net/http does
	done    bool  // the handler returned: see abandoned

	// What abandoned records, should the handler not return.
	c     *canary
	r     *route
	req   *http.Request
	gen   uint64
	start int64
}

// WriteHeader records the status, the time and whether the response
// streams. After an informational (1xx) status, the final one overwrites the
// status and the time; a response that sent one (it has no Content-Length)
// is flushed as a stream, which costs only time. A call after the final
// status changes nothing: net/http ignores it ("superfluous
// response.WriteHeader call"), and the client has the first. (A status
// written after a Write, whose implicit 200 goes to the embedded writer
// without this method, is still taken: seeing it would need an interpreted
// Write on every response.)
func (w *statusWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if w.final {
		return
	}
	w.code = code
	w.final = code > 199 // 101 too would be final, but an upgrade never gets a statusWriter (see passThrough)
	if !w.stream && w.ResponseWriter.Header()["Content-Length"] == nil {
		w.stream = true
		w.ResponseWriter = &flushWriter{ResponseWriter: w.ResponseWriter}
	}
	if w.timed {
		w.headers = int64(clock(epoch))
	}
}

// flushWriter is the embedded writer of a statusWriter whose response
// streams: it flushes the original writer after every write.
type flushWriter struct {
	http.ResponseWriter
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	_ = http.NewResponseController(f.ResponseWriter).Flush()
	return n, err
}

// abandoned is deferred by the observed request paths. When the handler did
// not return (w.done is false) it panicked, as Go's and Traefik's proxies do
// with http.ErrAbortHandler when a body breaks mid-copy: the panic goes on up
// to Traefik, and recordAbandoned records the request exactly once. Without
// it, a half-open breaker's probe slot would never be given back. It is this
// small because under Yaegi a deferred call costs every variable of the
// function it calls, on every request.
func abandoned(w *statusWriter) {
	if !w.done {
		recordAbandoned(w)
	}
}

// recordAbandoned records an aborted request: a 502 and a failure for the
// breaker, or a neutral 499 when the client had gone.
func recordAbandoned(w *statusWriter) {
	w.code = http.StatusBadGateway
	if w.req.Context().Err() != nil {
		w.code = statusClientClosedRequest
	}
	end := int64(clock(epoch))
	if w.r.br != nil {
		after(w.r.br, w.gen, outcomeOf(w.c.bs, w.code, 0), end)
	}
	if w.r.vs != nil {
		record(w.r.vs, w.r.vs.sem, w.code, w.req.Method, end-w.start)
	}
}

// passThrough reports whether a request is served with the original writer,
// unobserved: an upgrade (WebSocket and others need Hijack) or gRPC over
// HTTP/2 (trailers and full-duplex streaming). Their status cannot be
// observed without breaking them, so they are counted with code 0
// ("unknown"). It is one expression, which the generated request paths
// inline: the Upgrade test costs no call for the common request.
func passThrough(req *http.Request) bool {
	return req.Header["Upgrade"] != nil || req.ProtoMajor == 2 && grpcOverH2(req)
}

// grpcOverH2 reports, for an HTTP/2 request, whether it is gRPC (see
// passThrough).
func grpcOverH2(req *http.Request) bool {
	ct := req.Header["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}
