package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/edgecanary/edgecanary/wire"
)

// The plugin's report format, written once in package wire.
type (
	report         = wire.Report
	reportMWStat   = wire.Middleware
	reportVersion  = wire.Version
	reportRequest  = wire.Request
	reportFallback = wire.Fallback
)

var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "CONNECT": true,
	"OPTIONS": true, "TRACE": true, "PATCH": true, "OTHER": true,
}

// errUnsupported marks a well-formed body in a format this sidecar does not speak.
var errUnsupported = errors.New("unsupported report version")

// validate checks everything the store and the metrics rely on. Label values
// are bounded: version names as the plugin allows them, middleware names as
// Traefik forms them, exact status codes, normalised methods.
func validate(r *report) error {
	if r.Version != wire.FormatVersion {
		return fmt.Errorf("%w %d", errUnsupported, r.Version)
	}
	if !validLabel(r.Source, 253) {
		return errors.New("source: missing or invalid")
	}
	if !validLabel(r.Instance, 64) {
		return errors.New("instance: missing or invalid")
	}
	if len(r.Middlewares) > maxMiddlewares {
		return errors.New("too many middlewares")
	}
	seen := map[string]bool{}
	for _, m := range r.Middlewares {
		if !validLabel(m.Name, 256) || seen[m.Name] {
			return fmt.Errorf("middleware name %q: invalid or repeated", m.Name)
		}
		seen[m.Name] = true
		if len(m.Buckets) == 0 || len(m.Buckets) > 64 {
			return fmt.Errorf("middleware %q: 1 to 64 histogram buckets required", m.Name)
		}
		for i, b := range m.Buckets {
			if !(b > 0) || math.IsInf(b, 0) || i > 0 && b <= m.Buckets[i-1] {
				return fmt.Errorf("middleware %q: buckets must increase", m.Name)
			}
		}
		if len(m.Versions) > maxVersionsPerMW {
			return fmt.Errorf("middleware %q: too many versions", m.Name)
		}
		versions := map[string]bool{}
		for _, v := range m.Versions {
			if !wire.ValidVersionName(v.Name) || versions[v.Name] {
				return fmt.Errorf("middleware %q: version %q invalid or repeated", m.Name, v.Name)
			}
			versions[v.Name] = true
			if v.State < 0 || v.State > 2 {
				return fmt.Errorf("version %q: circuit state %d", v.Name, v.State)
			}
			if !(v.Weight >= 0 && v.Weight <= 1) {
				return fmt.Errorf("version %q: weight %v", v.Name, v.Weight)
			}
			if len(v.Hist) != len(m.Buckets)+1 {
				return fmt.Errorf("version %q: %d histogram counts for %d buckets", v.Name, len(v.Hist), len(m.Buckets))
			}
			if !(v.SumSeconds >= 0) || math.IsInf(v.SumSeconds, 0) {
				return fmt.Errorf("version %q: duration sum %v", v.Name, v.SumSeconds)
			}
			if len(v.Requests) > 6000 {
				return fmt.Errorf("version %q: too many request series", v.Name)
			}
			for _, q := range v.Requests {
				if q.Code < 0 || q.Code > 999 || !knownMethods[q.Method] {
					return fmt.Errorf("version %q: code %d method %q", v.Name, q.Code, q.Method)
				}
			}
		}
		for _, f := range m.Fallbacks {
			if !versions[f.From] || !versions[f.To] {
				return fmt.Errorf("middleware %q: fallback %q -> %q names unknown versions", m.Name, f.From, f.To)
			}
		}
	}
	return nil
}

// validLabel accepts printable ASCII without quotes or backslashes.
func validLabel(s string, limit int) bool {
	if s == "" || len(s) > limit {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// ingestHandler accepts reports at POST /v1/reports.
type ingestHandler struct {
	store   *store
	token   string
	maxBody int64
	now     func() time.Time
}

func (h *ingestHandler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/reports" {
		http.NotFound(rw, req)
		return
	}
	if req.Method != http.MethodPost {
		h.store.reject(reasonUnsupported)
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if h.token != "" {
		auth := req.Header.Get("Authorization")
		got, bearer := strings.CutPrefix(auth, "Bearer ")
		if !bearer || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
			h.store.reject(reasonUnauthorized)
			rw.Header().Set("WWW-Authenticate", `Bearer realm="edgecanary"`)
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	// application/json is required: a browser cannot send it cross-origin
	// without a CORS preflight, which the sidecar never grants, so a web page
	// cannot post reports to a sidecar without a token.
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.store.reject(reasonUnsupported)
		http.Error(rw, "want Content-Type: application/json", http.StatusUnsupportedMediaType)
		return
	}
	if req.ContentLength > h.maxBody {
		h.store.reject(reasonTooLarge)
		http.Error(rw, "report too large", http.StatusRequestEntityTooLarge)
		return
	}
	// The body is read through a limit: an oversized body is cut off before
	// it is held in memory.
	body, err := io.ReadAll(http.MaxBytesReader(rw, req.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.store.reject(reasonTooLarge)
			http.Error(rw, "report too large", http.StatusRequestEntityTooLarge)
			return
		}
		h.store.reject(reasonMalformed)
		http.Error(rw, "could not read the report", http.StatusBadRequest)
		return
	}
	r, err := parseReport(body)
	if err != nil {
		reason := reasonMalformed
		status := http.StatusBadRequest
		if errors.Is(err, errUnsupported) {
			reason, status = reasonUnsupported, http.StatusUnprocessableEntity
		}
		h.store.reject(reason)
		http.Error(rw, "rejected: "+err.Error(), status)
		return
	}
	if !h.store.merge(r, h.now()) {
		http.Error(rw, fmt.Sprintf("rejected: the sidecar holds at most %d series (ingest.maxSeries)", h.store.maxSeries), http.StatusUnprocessableEntity)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

// parseReport decodes and validates a body.
func parseReport(body []byte) (*report, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if probe.Version == nil {
		return nil, errors.New("no version: not an edgecanary report")
	}
	if *probe.Version != wire.FormatVersion {
		return nil, fmt.Errorf("%w %d", errUnsupported, *probe.Version)
	}
	var r report
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("invalid report: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the report")
	}
	if err := validate(&r); err != nil {
		return nil, err
	}
	return &r, nil
}
