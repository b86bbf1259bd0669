package plugin

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestNewRejectsExtremeNumbers feeds New values at the edges of their types.
// Each must be an error that names the field; before these checks the first
// two panicked with an integer divide by zero, which in Traefik stops every
// router.
func TestNewRejectsExtremeNumbers(t *testing.T) {
	const maxInt64 = 1<<63 - 1
	testCases := []struct {
		desc    string
		mutate  func(cfg *Config)
		wantErr string
	}{
		{desc: "average int64 max", mutate: func(cfg *Config) { cfg.RateLimit.Average = maxInt64 }, wantErr: "rateLimit.average"},
		{desc: "1e10 per nanosecond", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.Period = 10000000000, "1ns"
		}, wantErr: "rateLimit.average"},
		{desc: "average int64 max, period max", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.Period = maxInt64, "1000000000"
		}, wantErr: "rateLimit.average"},
		{desc: "one per 30 years", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.Period = 1, "262800h"
		}, wantErr: "rateLimit.burst"},
		{desc: "burst int64 max", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.Burst = 1, maxInt64
		}, wantErr: "rateLimit.burst"},
		{desc: "period past the clock", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.Period = 1, "2562047h"
		}, wantErr: "rateLimit.period"},
		{desc: "period NaN", mutate: func(cfg *Config) { cfg.RateLimit.Average, cfg.RateLimit.Period = 1, "NaN" }, wantErr: "rateLimit.period"},
		{desc: "period Inf", mutate: func(cfg *Config) { cfg.RateLimit.Average, cfg.RateLimit.Period = 1, "+Inf" }, wantErr: "rateLimit.period"},
		{desc: "period 1e300", mutate: func(cfg *Config) { cfg.RateLimit.Average, cfg.RateLimit.Period = 1, "1e300" }, wantErr: "rateLimit.period"},
		{desc: "maxSources int max", mutate: func(cfg *Config) {
			cfg.RateLimit.Average, cfg.RateLimit.MaxSources = 1, maxInt
		}, wantErr: "rateLimit.maxSources"},
		{desc: "consecutiveFailures past uint32", mutate: func(cfg *Config) {
			cfg.CircuitBreaker.ConsecutiveFailures = 1 << 32
		}, wantErr: "circuitBreaker.consecutiveFailures"},
		{desc: "halfOpenRequests past uint32", mutate: func(cfg *Config) {
			cfg.CircuitBreaker.ConsecutiveFailures, cfg.CircuitBreaker.HalfOpenRequests = 1, 1<<32
		}, wantErr: "circuitBreaker.halfOpenRequests"},
		{desc: "minRequests int min", mutate: func(cfg *Config) { cfg.CircuitBreaker.MinRequests = minInt }, wantErr: "circuitBreaker.minRequests"},
		{desc: "openDuration int64 max", mutate: func(cfg *Config) {
			cfg.CircuitBreaker.ConsecutiveFailures, cfg.CircuitBreaker.OpenDuration = 1, "2562047h47m16.854775807s"
		}, wantErr: "circuitBreaker.openDuration"},
		{desc: "interval past the clock", mutate: func(cfg *Config) {
			cfg.CircuitBreaker.ConsecutiveFailures, cfg.CircuitBreaker.Interval = 1, "2000000h"
		}, wantErr: "circuitBreaker.interval"},
		{desc: "slowThreshold 1e10 seconds", mutate: func(cfg *Config) {
			cfg.CircuitBreaker.ConsecutiveFailures, cfg.CircuitBreaker.SlowThreshold = 1, "1e10"
		}, wantErr: "circuitBreaker.slowThreshold"},
		{desc: "failureRatio NaN", mutate: func(cfg *Config) { cfg.CircuitBreaker.FailureRatio = nan() }, wantErr: "circuitBreaker.failureRatio"},
		{desc: "failureRatio Inf", mutate: func(cfg *Config) { cfg.CircuitBreaker.FailureRatio = inf() }, wantErr: "circuitBreaker.failureRatio"},
		{desc: "weight int max", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: maxInt, URL: "http://127.0.0.1:1"}
		}, wantErr: "versions.canary.weight"},
		{desc: "version timeout zero", mutate: func(cfg *Config) {
			cfg.Versions["canary"] = VersionConfig{Weight: 1, URL: "http://127.0.0.1:1", Timeout: "0"}
		}, wantErr: "versions.canary.timeout"},
		{desc: "sidecar bucket Inf", mutate: func(cfg *Config) { cfg.Sidecar.Buckets = []float64{1, inf()} }, wantErr: "sidecar.buckets"},
		{desc: "sidecar bucket NaN", mutate: func(cfg *Config) { cfg.Sidecar.Buckets = []float64{nan()} }, wantErr: "sidecar.buckets"},
		{desc: "sidecar interval huge", mutate: func(cfg *Config) { cfg.Sidecar.Interval = "1e12" }, wantErr: "sidecar.interval"},
		{desc: "maxAge int min", mutate: func(cfg *Config) { cfg.Sticky.Cookie.MaxAge = minInt }, wantErr: "sticky.cookie.maxAge"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg := baseConfig("http://127.0.0.1:1", 20)
			test.mutate(cfg)
			_, err := New(context.Background(), stableNext, cfg, "extreme@file")
			if err == nil {
				t.Fatalf("New accepted the config, want an error naming %q", test.wantErr)
			}
			if !strings.Contains(err.Error(), test.wantErr) || strings.Contains(err.Error(), "internal error") {
				t.Errorf("error %q does not name %q", err, test.wantErr)
			}
		})
	}
}

// TestNewAcceptsLargestValidNumbers: the checks above are not off by one.
func TestNewAcceptsLargestValidNumbers(t *testing.T) {
	cfg := baseConfig("http://127.0.0.1:1", 20)
	cfg.RateLimit.Average, cfg.RateLimit.Period, cfg.RateLimit.MaxSources = 1000000000, "1s", maxMaxSources
	cfg.CircuitBreaker.ConsecutiveFailures = maxBreakerCount
	cfg.CircuitBreaker.OpenDuration = "1000000000"
	if _, err := New(context.Background(), stableNext, cfg, "largest@file"); err != nil {
		t.Fatal(err)
	}
}

// TestNewRecoversFromPanics: a bug that panics while building becomes an
// error from New instead of a panic in Traefik's configuration goroutine.
func TestNewRecoversFromPanics(t *testing.T) {
	saved := build
	defer func() { build = saved }()
	build = func(context.Context, http.Handler, *Config, string) (*canary, error) {
		var m map[string]int
		m["boom"]++ //nolint:staticcheck // the panic is the point: an assignment to an entry in a nil map
		return nil, nil
	}
	h, err := New(context.Background(), stableNext, baseConfig("http://127.0.0.1:1", 20), "panics@file")
	if err == nil || h != nil {
		t.Fatalf("New returned %v, %v; want an error", h, err)
	}
	if !strings.Contains(err.Error(), "panics@file") || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("error %q does not say what happened", err)
	}
}

const (
	maxInt = int(^uint(0) >> 1)
	minInt = -maxInt - 1
)

func nan() float64 { z := 0.0; return z / z }
func inf() float64 { z := 0.0; return 1 / z }
