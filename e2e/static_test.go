package e2e

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
	"gopkg.in/yaml.v3"
)

// staticConfig is the part of Traefik's static configuration that
// stage.StaticConfig writes; decoding it with KnownFields fails on any other key.
type staticConfig struct {
	Global struct {
		CheckNewVersion    *bool `yaml:"checkNewVersion"`
		SendAnonymousUsage *bool `yaml:"sendAnonymousUsage"`
	} `yaml:"global"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	EntryPoints map[string]struct {
		Address          string `yaml:"address"`
		ForwardedHeaders struct {
			TrustedIPs []string `yaml:"trustedIPs"`
		} `yaml:"forwardedHeaders"`
	} `yaml:"entryPoints"`
	API struct {
		Insecure  bool  `yaml:"insecure"`
		Debug     bool  `yaml:"debug"`
		Dashboard *bool `yaml:"dashboard"`
	} `yaml:"api"`
	Ping struct {
		EntryPoint string `yaml:"entryPoint"`
	} `yaml:"ping"`
	Providers struct {
		ProvidersThrottleDuration string `yaml:"providersThrottleDuration"`
		File                      struct {
			Filename string `yaml:"filename"`
			Watch    *bool  `yaml:"watch"`
		} `yaml:"file"`
		KubernetesCRD *struct {
			Endpoint                  string `yaml:"endpoint"`
			Token                     string `yaml:"token"`
			CertAuthFilePath          string `yaml:"certAuthFilePath"`
			AllowExternalNameServices bool   `yaml:"allowExternalNameServices"`
		} `yaml:"kubernetesCRD"`
	} `yaml:"providers"`
	Experimental struct {
		LocalPlugins map[string]struct {
			ModuleName string `yaml:"moduleName"`
		} `yaml:"localPlugins"`
	} `yaml:"experimental"`
}

// TestStaticConfig parses what stage.StaticConfig renders for the option
// sets the tests, the benchmark and the demo use: the globals are fixed, the
// plugin and any further local plugin are registered, everything listens on
// 127.0.0.1, and the options land where Traefik reads them.
func TestStaticConfig(t *testing.T) {
	for name, o := range map[string]stage.StaticOptions{
		"tests": {LogLevel: "INFO", Web: "127.0.0.1:40001", WebTrustedIPs: []string{"127.0.0.1/32", "127.0.0.2/32"},
			Traefik: "127.0.0.1:40002", APIDebug: true, ProvidersThrottle: 100 * time.Millisecond,
			File: "/tmp/a dir/dynamic.yml", Watch: true},
		"bench": {LogLevel: "ERROR", Web: "127.0.0.1:40001", Traefik: "127.0.0.1:40002", File: "/tmp/dynamic.yml",
			LocalPlugins: map[string]string{"floor": "github.com/edgecanary/benchfloor"}},
		"demo": {LogLevel: "INFO", Web: "127.0.0.1:8000", Traefik: "127.0.0.1:8080", Dashboard: true,
			ProvidersThrottle: 500 * time.Millisecond, File: "dynamic.yml", Watch: true},
		"kubernetes": {LogLevel: "INFO", Web: "127.0.0.1:40001", Traefik: "127.0.0.1:40002", File: "/tmp/dynamic.yml",
			KubernetesCRD: &stage.KubernetesCRD{Endpoint: "https://127.0.0.1:40003", Token: "a token",
				CertAuthFilePath: "/tmp/a dir/apiserver.crt", AllowExternalNameServices: true}},
	} {
		t.Run(name, func(t *testing.T) {
			text, err := stage.StaticConfig(o)
			if err != nil {
				t.Fatal(err)
			}
			var c staticConfig
			dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if g := c.Global; g.CheckNewVersion == nil || *g.CheckNewVersion || g.SendAnonymousUsage == nil || *g.SendAnonymousUsage {
				t.Errorf("global: want checkNewVersion and sendAnonymousUsage false:\n%s", text)
			}
			plugins := map[string]string{}
			for n, p := range c.Experimental.LocalPlugins {
				plugins[n] = p.ModuleName
			}
			want := map[string]string{stage.PluginName: moduleName}
			for n, m := range o.LocalPlugins {
				want[n] = m
			}
			if !reflect.DeepEqual(plugins, want) {
				t.Errorf("local plugins %v, want %v", plugins, want)
			}
			web, api := c.EntryPoints["web"], c.EntryPoints["traefik"]
			if len(c.EntryPoints) != 2 || web.Address != o.Web || api.Address != o.Traefik {
				t.Errorf("entry points %+v", c.EntryPoints)
			}
			if !reflect.DeepEqual(web.ForwardedHeaders.TrustedIPs, o.WebTrustedIPs) {
				t.Errorf("trustedIPs %q, want %q", web.ForwardedHeaders.TrustedIPs, o.WebTrustedIPs)
			}
			if c.Ping.EntryPoint != "traefik" || !c.API.Insecure || c.API.Debug != o.APIDebug ||
				c.API.Dashboard == nil || *c.API.Dashboard != o.Dashboard {
				t.Errorf("ping/api %+v %+v", c.Ping, c.API)
			}
			if c.Log.Level != o.LogLevel {
				t.Errorf("log level %q, want %q", c.Log.Level, o.LogLevel)
			}
			throttle := ""
			if o.ProvidersThrottle != 0 {
				throttle = o.ProvidersThrottle.String()
			}
			f := c.Providers.File
			if c.Providers.ProvidersThrottleDuration != throttle || f.Filename != o.File || (f.Watch != nil) != o.Watch || (f.Watch != nil && !*f.Watch) {
				t.Errorf("providers %+v", c.Providers)
			}
			k := c.Providers.KubernetesCRD
			if (k != nil) != (o.KubernetesCRD != nil) || (k != nil && (k.Endpoint != o.KubernetesCRD.Endpoint ||
				k.Token != o.KubernetesCRD.Token || k.CertAuthFilePath != o.KubernetesCRD.CertAuthFilePath ||
				k.AllowExternalNameServices != o.KubernetesCRD.AllowExternalNameServices)) {
				t.Errorf("kubernetesCRD %+v, want %+v", k, o.KubernetesCRD)
			}
		})
	}
}
