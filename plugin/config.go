// Package plugin is the edgecanary Traefik middleware: sticky weighted canary
// routing, client rate limiting and per-version circuit breaking with fallback.
//
// Traefik runs this package in its Yaegi interpreter. It therefore uses only
// the standard library and the vendored golang.org/x/time/rate and
// github.com/sony/gobreaker, sticks to Go 1.21 idioms, and does all of its
// work in New so that ServeHTTP only looks things up.
package plugin

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is the middleware's configuration. Traefik builds it with
// CreateConfig and then decodes the user's map into it, matching keys
// case-insensitively. Unknown keys are dropped by Traefik before New sees them.
type Config struct {
	// Versions maps a version name (lowercase letters, digits and dashes) to
	// its settings. Exactly one version has no URL: the primary, served by the
	// router's own service.
	Versions map[string]VersionConfig `json:"versions,omitempty"`
	// Sticky says how a client is pinned to a bucket.
	Sticky StickyConfig `json:"sticky,omitempty"`
	// Override lets trusted peers force a version.
	Override OverrideConfig `json:"override,omitempty"`
	// RateLimit is a token bucket per client. Off while Average is 0.
	RateLimit RateLimitConfig `json:"rateLimit,omitempty"`
	// CircuitBreaker trips a version on failures and falls back to the primary.
	CircuitBreaker CircuitBreakerConfig `json:"circuitBreaker,omitempty"`
	// Sidecar is where the per-version figures are reported.
	Sidecar SidecarConfig `json:"sidecar,omitempty"`
	// Rollout ramps one version on a schedule and rolls it back when its
	// checks fail. Off while Start is empty.
	Rollout RolloutConfig `json:"rollout,omitempty"`
}

// VersionConfig is one version of the service.
type VersionConfig struct {
	// Weight is a relative share of the buckets, normalised by the sum of all
	// weights. 0 means no client is assigned to this version.
	Weight int `json:"weight"`
	// URL is the upstream of a proxied version. Empty for the primary.
	URL string `json:"url,omitempty"`
	// URLs are several upstreams, used round robin. Not together with URL.
	URLs []string `json:"urls,omitempty"`
	// Timeout bounds the whole wait for the upstream's response headers, for
	// a proxied version: dial, TLS, sending the request and the answer.
	// Default 30s; must be above 0. Past it the client gets 504.
	Timeout string `json:"timeout,omitempty"`
}

// StickyConfig says how clients are pinned.
type StickyConfig struct {
	// Cookie holds the signed bucket.
	Cookie CookieConfig `json:"cookie,omitempty"`
	// Header, when set, pins by an HMAC of this header's value instead of a
	// cookie. A request without the header falls back to the cookie.
	Header string `json:"header,omitempty"`
}

// CookieConfig is the sticky cookie.
type CookieConfig struct {
	// Name of the cookie. Default "edgecanary".
	Name string `json:"name,omitempty"`
	// Secret is the HMAC-SHA256 key. Empty: a random key per process, so
	// stickiness does not survive restarts nor span replicas.
	Secret string `json:"secret,omitempty"`
	// MaxAge in seconds. Default 86400. 0 makes a session cookie.
	MaxAge int `json:"maxAge,omitempty"`
	// Path of the cookie. Default "/".
	Path string `json:"path,omitempty"`
	// Domain of the cookie. Default empty (host only).
	Domain string `json:"domain,omitempty"`
	// Secure sets the Secure attribute. Default false.
	Secure bool `json:"secure,omitempty"`
	// SameSite is lax, strict or none. Default lax. none requires secure.
	SameSite string `json:"sameSite,omitempty"`
	// PreviousSecrets still verify cookies; those are re-signed with Secret.
	PreviousSecrets []string `json:"previousSecrets,omitempty"`
}

// OverrideConfig lets trusted peers force a version.
type OverrideConfig struct {
	// Header carries a version name, "always" (the first non-primary version
	// by name) or "never" (the primary). Default "X-Canary". It is always
	// removed before the request goes upstream.
	Header string `json:"header,omitempty"`
	// Cookie carries the same values. Default empty (off).
	Cookie string `json:"cookie,omitempty"`
	// TrustedIPs are the CIDRs (or single addresses) of peers allowed to
	// override. Empty: every override is ignored.
	TrustedIPs []string `json:"trustedIPs,omitempty"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{
		Versions: map[string]VersionConfig{},
		Sticky: StickyConfig{
			Cookie: CookieConfig{
				Name:            "edgecanary",
				MaxAge:          86400,
				Path:            "/",
				SameSite:        "lax",
				PreviousSecrets: []string{},
			},
		},
		Override: OverrideConfig{
			Header:     "X-Canary",
			TrustedIPs: []string{},
		},
		RateLimit:      defaultRateLimitConfig(),
		CircuitBreaker: defaultCircuitBreakerConfig(),
		Sidecar:        defaultSidecarConfig(),
		Rollout:        defaultRolloutConfig(),
	}
}

// defaultVersionTimeout bounds a proxied version's wait for response headers,
// dial included (see headerDeadline).
const defaultVersionTimeout = 30 * time.Second

// maxDuration bounds every duration setting (about 31 years), so that an
// instant plus a duration never overflows the int64 nanosecond clock.
const maxDuration = 1e9 * time.Second

// parseDuration accepts a Go duration ("1s", "250ms") or a number of seconds
// ("10", "0.5"), as Traefik does for its own durations, from 0 to maxDuration.
func parseDuration(field, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%s: empty duration", field)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f != f || f > float64(maxDuration/time.Second) {
			return 0, fmt.Errorf("%s: invalid duration %q: want 0 to %d seconds", field, s, int64(maxDuration/time.Second))
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid duration %q: want a Go duration such as \"10s\" or a number of seconds", field, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: negative duration %q", field, s)
	}
	if d > maxDuration {
		return 0, fmt.Errorf("%s: duration %q is too long: at most %v", field, s, maxDuration)
	}
	return d, nil
}

// checkCount rejects a count setting outside 0..max.
func checkCount(field string, v, limit int) error {
	if v < 0 {
		return fmt.Errorf("%s: must not be negative, got %d", field, v)
	}
	if v > limit {
		return fmt.Errorf("%s: must be at most %d, got %d", field, limit, v)
	}
	return nil
}
