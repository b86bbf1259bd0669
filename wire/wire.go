// Package wire is the format in which the edgecanary plugin reports its
// per-version figures to the sidecar, and the rule for version names that
// both apply. The plugin and the sidecar both import it, the plugin through
// Traefik's Yaegi interpreter: it uses only the standard library and Go 1.21
// idioms.
package wire

// FormatVersion is the format's version, sent as Report.Version.
const FormatVersion = 1

// Report is the body of one report: a Traefik process's cumulative totals
// since it started, for every middleware reporting to the same sidecar.
type Report struct {
	Version     int          `json:"version"`
	Source      string       `json:"source"`    // the Traefik host
	Instance    string       `json:"instance"`  // random per Traefik process
	StartedAt   int64        `json:"startedAt"` // Unix milliseconds
	SentAt      int64        `json:"sentAt"`    // Unix milliseconds
	Middlewares []Middleware `json:"middlewares"`
}

// Middleware is one middleware's totals.
type Middleware struct {
	Name              string    `json:"name"`
	Versions          []Version `json:"versions"`
	RateLimitRejected uint64    `json:"rateLimitRejected"`
	RateLimitDryRun   uint64    `json:"rateLimitDryRunRejected"`
	RateLimitEvicted  uint64    `json:"rateLimitEvictions"`
	// The shared store of the rate limit (rateLimit.redis): "redis", or
	// empty when each replica limits alone. StoreUp: the last store call
	// succeeded. StoreErrors: store calls that failed, cumulative.
	RateLimitStore       string `json:"rateLimitStore,omitempty"`
	RateLimitStoreUp     bool   `json:"rateLimitStoreUp"`
	RateLimitStoreErrors uint64 `json:"rateLimitStoreErrors"`
	// How far a lease lets this replica run ahead of the store: the most
	// tokens one client's lease holds (0: no lease, a call per request),
	// the tokens taken from the store so far, and those given back unspent,
	// cumulative.
	RateLimitLease    int64      `json:"rateLimitLease,omitempty"`
	RateLimitLeased   uint64     `json:"rateLimitLeasedTokens"`
	RateLimitReturned uint64     `json:"rateLimitReturnedTokens"`
	Fallbacks         []Fallback `json:"fallbacks"`
	Buckets           []float64  `json:"buckets"`           // the latency histogram's upper bounds, in seconds
	Rollout           *Rollout   `json:"rollout,omitempty"` // nil when no rollout is configured
}

// Rollout states, as Rollout.State and the metric edgecanary_rollout_state.
const (
	RolloutWaiting     = 0 // before start
	RolloutProgressing = 1
	RolloutComplete    = 2 // past the last step
	RolloutRolledBack  = 3
)

// Rollout is a middleware's progressive rollout (config rollout): its
// schedule, where it stands, and its checks.
type Rollout struct {
	Version     string    `json:"version"`      // the version that ramps
	Start       int64     `json:"start"`        // Unix milliseconds
	IntervalMs  int64     `json:"intervalMs"`   // length of each step and check window
	StepWeights []float64 `json:"stepWeights"`  // percent, one per step
	Step        int       `json:"step"`         // 1-based current step; 0 before start
	State       int       `json:"state"`        // RolloutWaiting ... RolloutRolledBack
	Shared      bool      `json:"shared"`       // the rollback is shared through Redis
	Failed      int       `json:"failedChecks"` // consecutive failed checks now
	// Checks counts results since the process started: pass, fail, inconclusive.
	Checks [3]uint64 `json:"checks"`
	// Recent holds the last checks, oldest first (at most 32).
	Recent []Check `json:"recentChecks"`
}

// Check is one check of a rollout's window.
type Check struct {
	At     int64  `json:"at"`     // Unix milliseconds, the end of the window
	Step   int    `json:"step"`   // the step the window belonged to
	Result string `json:"result"` // "pass", "fail" or "inconclusive"
	Reason string `json:"reason"` // e.g. "request-success-rate 98.7% < 99%"
}

// Version is one version's totals and its current state.
type Version struct {
	Name        string    `json:"name"`
	Primary     bool      `json:"primary"`
	Weight      float64   `json:"weight"`     // share of new users, 0 to 1
	Configured  bool      `json:"configured"` // in the current configuration
	State       int       `json:"circuitState"`
	Transitions [3]uint64 `json:"circuitTransitions"` // by state entered: closed, half-open, open
	Requests    []Request `json:"requests"`
	Hist        []uint64  `json:"durationBuckets"` // one per bound, then +Inf; not cumulative
	SumSeconds  float64   `json:"durationSumSeconds"`
}

// Request is the number of requests with one status code and method.
type Request struct {
	Code   int    `json:"code"`
	Method string `json:"method"`
	Count  uint64 `json:"count"`
}

// Fallback is the number of requests of an open version served by another.
type Fallback struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count uint64 `json:"count"`
}

// ValidVersionName reports whether s is a version name: 1 to 63 lowercase
// letters, digits and dashes.
func ValidVersionName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
