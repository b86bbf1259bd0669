package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgecanary/edgecanary/plugin"
	"github.com/mitchellh/mapstructure"
)

// FuzzConfig feeds arbitrary configurations through CreateConfig, the weak
// decoding Traefik uses (mapstructure, WeaklyTypedInput, "a,b" as a list) and
// New: never a panic, and every error from New names the field at fault.
// Compiled here for speed; the Yaegi tests cover the interpreted path.
func FuzzConfig(f *testing.F) {
	for _, seed := range extremeConfigs {
		f.Add(seed)
	}
	for _, seed := range []string{
		`{"versions":{"stable":{"weight":80},"canary":{"weight":20,"url":"http://127.0.0.1:1","timeout":"30s"}},"sticky":{"cookie":{"secret":"s"}}}`,
		`{"versions":{"stable":{"weight":"80"},"canary":{"weight":"20","urls":"http://a,http://b"}},"override":{"trustedIPs":"10.0.0.0/8,::1"}}`,
		`{"versions":{"a":{"weight":1}},"rateLimit":{"average":"10","period":"abc"}}`,
		`{"versions":{"a":{"weight":1}},"rateLimit":{"average":5,"sourceCriterion":{"ipStrategy":{"depth":1},"requestHost":true}}}`,
		`{"versions":{"a":{"weight":1}},"circuitBreaker":{"failureRatio":"2","failureStatusCodes":"599-500"}}`,
		`{"versions":{"a":{"weight":1}},"sidecar":{"address":"ftp://x","buckets":"1,0.5"}}`,
		`{"versions":{"A B":{"weight":-1,"url":"::"}},"sticky":{"cookie":{"sameSite":"none","maxAge":-5}}}`,
		`{}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		var raw map[string]any
		if json.Unmarshal([]byte(data), &raw) != nil {
			return
		}
		cfg := plugin.CreateConfig()
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
			DecodeHook:       mapstructure.StringToSliceHookFunc(","),
			WeaklyTypedInput: true,
			Result:           cfg,
		})
		if err != nil {
			t.Fatal(err)
		}
		if dec.Decode(raw) != nil {
			return // Traefik reports decoding errors itself
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err = plugin.New(ctx, http.NotFoundHandler(), cfg, "fuzz@file")
		if !namesAField(err) {
			t.Fatalf("the error does not name a field: %v", err)
		}
	})
}

// configFields are the top-level keys an error from New names.
var configFields = []string{"versions", "sticky.", "override.", "rateLimit.", "circuitBreaker.", "sidecar."}

// namesAField reports whether err is nil or names a configuration field,
// and is not New's recovered panic.
func namesAField(err error) bool {
	if err == nil {
		return true
	}
	if strings.Contains(err.Error(), "internal error") {
		return false
	}
	for _, f := range configFields {
		if strings.Contains(err.Error(), f) {
			return true
		}
	}
	return false
}

// extremeConfigs hold numbers at the edges of their types: int64 and uint32
// edges, NaN, Inf, and tiny and huge durations. Before New checked them, the
// first two panicked with an integer divide by zero.
var extremeConfigs = []string{
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":9223372036854775807}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":10000000000,"period":"1ns"}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":"9223372036854775807","period":"1e9","burst":9223372036854775807}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"period":"2562047h47m16.854775807s"}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"period":"NaN"}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"period":"+Inf"}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"period":"1e-300"}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":-9223372036854775808}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"maxSources":9223372036854775807}}`,
	`{"versions":{"a":{"weight":1}},"rateLimit":{"average":1,"sourceCriterion":{"ipStrategy":{"depth":9223372036854775807,"ipv6Subnet":-1}}}}`,
	`{"versions":{"a":{"weight":1}},"circuitBreaker":{"consecutiveFailures":4294967296,"halfOpenRequests":4294967297}}`,
	`{"versions":{"a":{"weight":1}},"circuitBreaker":{"consecutiveFailures":1,"openDuration":"2562047h","interval":"1e9","slowThreshold":"1ns"}}`,
	`{"versions":{"a":{"weight":1}},"circuitBreaker":{"failureRatio":"NaN","minRequests":-9223372036854775808}}`,
	`{"versions":{"a":{"weight":1}},"circuitBreaker":{"failureRatio":"+Inf","responseCode":9223372036854775807}}`,
	`{"versions":{"a":{"weight":9223372036854775807},"b":{"weight":9223372036854775807,"url":"http://127.0.0.1:1","timeout":"1e-9"}}}`,
	`{"versions":{"a":{"weight":1},"b":{"weight":1,"url":"http://127.0.0.1:1","timeout":"0"}}}`,
	`{"versions":{"a":{"weight":1}},"sidecar":{"address":"http://127.0.0.1:1","interval":"1e300","buckets":"1e308,+Inf"}}`,
	`{"versions":{"a":{"weight":1}},"sticky":{"cookie":{"maxAge":-9223372036854775808}}}`,
}
