package stage

import (
	_ "embed"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// PluginName is the name the plugin is registered under in Traefik's static
// config (experimental.localPlugins.<PluginName>); dynamic configs refer to it.
const PluginName = "edgecanary"

// Loopback is the only host that StaticConfig lets Traefik listen on.
const Loopback = "127.0.0.1"

// StaticOptions are what differs between the static configs of the tests, the
// benchmark and the demo. The rest of traefik.yml.tmpl is fixed: the globals
// (no version check, no anonymous usage), the entry points' names (web and
// traefik), ping and the insecure API on the traefik entry point, the file
// provider, and the plugin as a local plugin.
type StaticOptions struct {
	// LogLevel is log.level ("" leaves it to Traefik: ERROR).
	LogLevel string
	// Web is the web entry point's address, host 127.0.0.1.
	Web string
	// WebTrustedIPs are the web entry point's forwardedHeaders.trustedIPs
	// (none: the key is left out).
	WebTrustedIPs []string
	// Traefik is the traefik entry point's address (ping and API), host
	// 127.0.0.1.
	Traefik string
	// APIDebug is api.debug (false: left out).
	APIDebug bool
	// Dashboard is api.dashboard, always written (Traefik's default is true).
	Dashboard bool
	// ProvidersThrottle is providers.providersThrottleDuration (0 leaves it to
	// Traefik: 2s).
	ProvidersThrottle time.Duration
	// File is the file provider's filename: the dynamic configuration.
	File string
	// Watch writes providers.file.watch: true (false: the key is left out).
	Watch bool
	// LocalPlugins are further local plugins, by name: their module. The
	// plugin itself (PluginName: ModuleName) is always there.
	LocalPlugins map[string]string
	// KubernetesCRD, when set, adds providers.kubernetesCRD (nil: left out).
	KubernetesCRD *KubernetesCRD
}

// KubernetesCRD is Traefik's Kubernetes CRD provider, for an API server on
// loopback.
type KubernetesCRD struct {
	// Endpoint is the API server's URL, https://127.0.0.1:<port>.
	Endpoint string
	// Token is the bearer token Traefik authenticates with.
	Token string
	// CertAuthFilePath is the PEM file of the API server's CA.
	CertAuthFilePath string
	// AllowExternalNameServices lets IngressRoutes use ExternalName Services.
	AllowExternalNameServices bool
}

// pluginName is what a local plugin may be called here: a plain YAML key.
var pluginName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

//go:embed traefik.yml.tmpl
var staticText string

var staticTemplate = template.Must(template.New("traefik.yml").Funcs(template.FuncMap{
	"quote": strconv.Quote,
	"quoteList": func(list []string) string {
		q := make([]string, len(list))
		for i, s := range list {
			q[i] = strconv.Quote(s)
		}
		return strings.Join(q, ", ")
	},
}).Parse(staticText))

// StaticConfig renders Traefik's static configuration (YAML) from
// traefik.yml.tmpl. Both entry points must be on 127.0.0.1.
func StaticConfig(o StaticOptions) (string, error) {
	for _, a := range []struct{ name, addr string }{{"web", o.Web}, {"traefik", o.Traefik}} {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil || host != Loopback || port == "" {
			return "", fmt.Errorf("entry point %s: address %q is not %s:<port>", a.name, a.addr, Loopback)
		}
	}
	if o.File == "" {
		return "", fmt.Errorf("no file provider filename")
	}
	if k := o.KubernetesCRD; k != nil {
		u, err := url.Parse(k.Endpoint)
		if err != nil || u.Scheme != "https" || u.Hostname() != Loopback || u.Port() == "" {
			return "", fmt.Errorf("kubernetesCRD: endpoint %q is not https://%s:<port>", k.Endpoint, Loopback)
		}
	}
	for name := range o.LocalPlugins {
		if name == PluginName || !pluginName.MatchString(name) {
			return "", fmt.Errorf("local plugin name %q: not a [A-Za-z0-9_-]+ other than %s", name, PluginName)
		}
	}
	var b strings.Builder
	err := staticTemplate.Execute(&b, struct {
		StaticOptions
		PluginName, ModuleName string
	}{o, PluginName, ModuleName})
	return b.String(), err
}
