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
	fields := []string{"versions", "sticky.", "override.", "rateLimit.", "circuitBreaker.", "sidecar."}
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
		if err == nil {
			return
		}
		for _, f := range fields {
			if strings.Contains(err.Error(), f) {
				return
			}
		}
		t.Fatalf("the error does not name a field: %v", err)
	})
}
