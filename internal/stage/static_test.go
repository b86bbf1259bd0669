package stage

import (
	"strings"
	"testing"
	"time"
)

// The YAML itself is parsed by e2e/static_test.go (the root module has no
// YAML parser); this checks the text and what StaticConfig refuses.

func TestStaticConfigFixed(t *testing.T) {
	for _, o := range []StaticOptions{
		{Web: "127.0.0.1:1", Traefik: "127.0.0.1:2", File: "d.yml"},
		{LogLevel: "INFO", Web: "127.0.0.1:1", WebTrustedIPs: []string{"127.0.0.1/32"}, Traefik: "127.0.0.1:2",
			APIDebug: true, Dashboard: true, ProvidersThrottle: 100 * time.Millisecond, File: "d.yml", Watch: true,
			LocalPlugins: map[string]string{"floor": "example.com/floor"}},
		{Web: "127.0.0.1:1", Traefik: "127.0.0.1:2", File: "d.yml", KubernetesCRD: &KubernetesCRD{
			Endpoint: "https://127.0.0.1:3", Token: "t", CertAuthFilePath: "ca.crt", AllowExternalNameServices: true}},
	} {
		s, err := StaticConfig(o)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n") {
			t.Errorf("the globals are not first and fixed:\n%s", s)
		}
		if !strings.Contains(s, "\n  localPlugins:\n    edgecanary:\n      moduleName: \""+ModuleName+"\"\n") {
			t.Errorf("the plugin is not a local plugin:\n%s", s)
		}
		if strings.Contains(s, "0.0.0.0") || strings.Count(s, `address: "127.0.0.1:`) != 2 {
			t.Errorf("an entry point is not on 127.0.0.1:\n%s", s)
		}
	}
}

func TestStaticConfigRefuses(t *testing.T) {
	ok := StaticOptions{Web: "127.0.0.1:1", Traefik: "127.0.0.1:2", File: "d.yml"}
	for name, change := range map[string]func(*StaticOptions){
		"web on every address": func(o *StaticOptions) { o.Web = ":1" },
		"web on 0.0.0.0":       func(o *StaticOptions) { o.Web = "0.0.0.0:1" },
		"traefik on localhost": func(o *StaticOptions) { o.Traefik = "localhost:2" },
		"traefik without port": func(o *StaticOptions) { o.Traefik = "127.0.0.1" },
		"no file":              func(o *StaticOptions) { o.File = "" },
		"the plugin again":     func(o *StaticOptions) { o.LocalPlugins = map[string]string{PluginName: "x"} },
		"an API server elsewhere": func(o *StaticOptions) {
			o.KubernetesCRD = &KubernetesCRD{Endpoint: "https://10.0.0.1:6443"}
		},
		"an API server in clear": func(o *StaticOptions) {
			o.KubernetesCRD = &KubernetesCRD{Endpoint: "http://127.0.0.1:8080"}
		},
		"a name YAML would mix": func(o *StaticOptions) { o.LocalPlugins = map[string]string{"a: b": "x"} },
	} {
		o := ok
		change(&o)
		if s, err := StaticConfig(o); err == nil {
			t.Errorf("%s: rendered\n%s", name, s)
		}
	}
	if _, err := StaticConfig(ok); err != nil {
		t.Fatal(err)
	}
}
