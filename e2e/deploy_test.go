package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/edgecanary/edgecanary/internal/stage"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/santhosh-tekuri/jsonschema/v6"
	paerser "github.com/traefik/paerser/parser"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The deployment files are checked by the real tools and schemas: the
// compose file by compose-go (docker compose's own loader) and its labels by
// paerser (Traefik's label parser); the Kubernetes manifests by Kubernetes'
// API types and by the CRD schemas that Traefik and the Prometheus Operator
// ship; every PromQL expression by Prometheus's parser and then by a real
// Prometheus while traffic flows.

func demoPath(t testing.TB, parts ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "demo"}, parts...)...)
}

// newPluginConfig decodes a plugin block exactly as Traefik does, through the
// plugin loaded in Yaegi, and builds a handler from it.
func newPluginFromRaw(t testing.TB, raw map[string]any, name string) reflect.Value {
	t.Helper()
	p := loadYaegiPlugin(t)
	cfg, err := p.config(raw)
	if err != nil {
		t.Fatalf("%s: decoding the plugin block: %v", name, err)
	}
	// Cancelled when the test ends, as Traefik cancels it at the next
	// reload: the middleware's reporter stops with it.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := p.handler(ctx, http.NotFoundHandler(), cfg, name); err != nil {
		t.Fatalf("%s: New: %v", name, err)
	}
	return cfg
}

// labelConfig mirrors the part of Traefik's dynamic configuration that the
// middleware labels fill (dynamic.Middleware.Plugin is map[string]PluginConf).
type labelConfig struct {
	HTTP *struct {
		Middlewares map[string]*struct {
			Plugin map[string]map[string]any
		}
	}
}

func TestComposeFile(t *testing.T) {
	path := demoPath(t, "docker-compose.yml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(path),
		ConfigFiles: []types.ConfigFile{{Filename: path, Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("edgecanary", true) })
	if err != nil {
		t.Fatalf("compose-go rejects demo/docker-compose.yml: %v", err)
	}
	services := map[string]types.ServiceConfig{}
	for _, s := range project.Services {
		services[s.Name] = s
	}
	for _, name := range []string{"traefik", "stable", "canary", "sidecar", "prometheus", "grafana"} {
		if _, ok := services[name]; !ok {
			t.Fatalf("no %s service", name)
		}
	}
	if img := services["traefik"].Image; !strings.HasPrefix(img, "traefik:v3.6") {
		t.Errorf("traefik image %q", img)
	}
	for _, name := range []string{"stable", "canary", "sidecar"} {
		b := services[name].Build
		if b == nil {
			t.Fatalf("%s is not built from this repository", name)
		}
		if _, err := os.Stat(filepath.Join(b.Context, b.Dockerfile)); err != nil {
			t.Errorf("%s: Dockerfile %s: %v", name, b.Dockerfile, err)
		}
	}
	cmd := strings.Join(services["traefik"].Command, " ")
	for _, want := range []string{"--experimental.localPlugins.edgecanary.moduleName=" + moduleName, "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("traefik command lacks %s", want)
		}
	}
	mounted := false
	for _, v := range services["traefik"].Volumes {
		if v.Target == "/plugins-local/src/"+moduleName {
			mounted = true
		}
	}
	if !mounted {
		t.Error("the plugin is not mounted as a local plugin")
	}
	for _, s := range project.Services {
		for _, p := range s.Ports {
			if p.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s:%s beyond loopback", s.Name, p.HostIP, p.Published)
			}
		}
	}

	// The labels, decoded as Traefik's Docker provider does.
	var conf labelConfig
	if err := paerser.Decode(services["stable"].Labels, &conf, paerser.DefaultRootName, "traefik.http.middlewares"); err != nil {
		t.Fatalf("paerser: %v", err)
	}
	raw := conf.HTTP.Middlewares["shop"].Plugin["edgecanary"]
	cfg := newPluginFromRaw(t, raw, "shop@docker")
	versions := cfg.Elem().FieldByName("Versions")
	if w := versions.MapIndex(reflect.ValueOf("canary")).FieldByName("Weight").Int(); w != 20 {
		t.Errorf("canary weight from labels: %d", w)
	}
	if u := versions.MapIndex(reflect.ValueOf("canary")).FieldByName("URL").String(); u != "http://canary:8080" {
		t.Errorf("canary url from labels: %q", u)
	}
	if a := cfg.Elem().FieldByName("Sidecar").FieldByName("Address").String(); a != "http://sidecar:9191" {
		t.Errorf("sidecar address from labels: %q", a)
	}
}

// moduleDir downloads a module through the Go module proxy and returns its directory.
func moduleDir(t testing.TB, mod string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", mod).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", mod, err)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %s", mod, out)
	}
	return info.Dir
}

// crdSchemas reads CRDs and returns a JSON-schema validator per
// "group/version/kind", converting OpenAPI v3 as kubeconform does in strict mode.
func crdSchemas(t testing.TB, files ...string) map[string]*jsonschema.Schema {
	t.Helper()
	out := map[string]*jsonschema.Schema{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range splitYAML(data) {
			var crd struct {
				Kind string
				Spec struct {
					Group    string
					Names    struct{ Kind string }
					Versions []struct {
						Name   string
						Schema struct {
							OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
						}
					}
				}
			}
			if err := yaml.Unmarshal(doc, &crd); err != nil || crd.Kind != "CustomResourceDefinition" {
				continue
			}
			for _, v := range crd.Spec.Versions {
				schema := toJSONSchema(v.Schema.OpenAPIV3Schema)
				c := jsonschema.NewCompiler()
				loc := fmt.Sprintf("%s/%s/%s.json", crd.Spec.Group, v.Name, crd.Spec.Names.Kind)
				if err := c.AddResource(loc, schema); err != nil {
					t.Fatal(err)
				}
				sch, err := c.Compile(loc)
				if err != nil {
					t.Fatalf("%s: %v", loc, err)
				}
				out[crd.Spec.Group+"/"+v.Name+"/"+crd.Spec.Names.Kind] = sch
			}
		}
	}
	return out
}

// toJSONSchema turns x-kubernetes-int-or-string into anyOf and forbids
// unknown properties where the schema does not preserve them.
func toJSONSchema(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, val := range x {
			m[k] = toJSONSchema(val)
		}
		if m["x-kubernetes-int-or-string"] == true {
			delete(m, "type")
			m["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
		}
		if _, hasProps := m["properties"]; hasProps && m["x-kubernetes-preserve-unknown-fields"] != true {
			if _, set := m["additionalProperties"]; !set {
				m["additionalProperties"] = false
			}
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toJSONSchema(e)
		}
		return out
	}
	return v
}

func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestKubernetesManifests(t *testing.T) {
	traefikDir := moduleDir(t, "github.com/traefik/traefik/v3@"+stage.TraefikVersion)
	operatorDir := moduleDir(t, "github.com/prometheus-operator/prometheus-operator@v0.85.0")
	schemas := crdSchemas(t,
		filepath.Join(traefikDir, "integration", "fixtures", "k8s", "01-traefik-crd.yml"),
		filepath.Join(operatorDir, "example", "prometheus-operator-crd", "monitoring.coreos.com_servicemonitors.yaml"),
		filepath.Join(operatorDir, "example", "prometheus-operator-crd", "monitoring.coreos.com_prometheusrules.yaml"),
	)
	files, err := filepath.Glob(demoPath(t, "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	kinds := map[string]int{}
	secrets := map[string]map[string]string{} // namespace/name -> data
	var middlewares []map[string]any
	var staticConfig string
	var ruleGroups any
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, doc := range splitYAML(data) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string
				Metadata   struct{ Name, Namespace string }
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kinds[meta.Kind]++
			where := fmt.Sprintf("%s: %s %s", filepath.Base(f), meta.Kind, meta.Metadata.Name)
			var typed any
			switch meta.Kind {
			case "Namespace":
				typed = &corev1.Namespace{}
			case "ServiceAccount":
				typed = &corev1.ServiceAccount{}
			case "ConfigMap":
				typed = &corev1.ConfigMap{}
			case "Secret":
				typed = &corev1.Secret{}
			case "Service":
				typed = &corev1.Service{}
			case "Deployment":
				typed = &appsv1.Deployment{}
			case "ClusterRole":
				typed = &rbacv1.ClusterRole{}
			case "ClusterRoleBinding":
				typed = &rbacv1.ClusterRoleBinding{}
			}
			if typed != nil {
				if err := yaml.UnmarshalStrict(doc, typed); err != nil {
					t.Errorf("%s: not a valid %s: %v", where, meta.Kind, err)
				}
				switch x := typed.(type) {
				case *corev1.Secret:
					secrets[x.Namespace+"/"+x.Name] = x.StringData
				case *corev1.ConfigMap:
					if s, ok := x.Data["traefik.yml"]; ok {
						staticConfig = s
					}
				case *appsv1.Deployment:
					if len(x.Spec.Template.Spec.Containers) == 0 || x.Spec.Selector == nil {
						t.Errorf("%s: no containers or selector", where)
					}
				}
				continue
			}
			gv := strings.Split(meta.APIVersion, "/")
			sch := schemas[gv[0]+"/"+gv[len(gv)-1]+"/"+meta.Kind]
			if sch == nil {
				t.Errorf("%s: no schema for %s", where, meta.APIVersion)
				continue
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(inst); err != nil {
				detail := err.Error()
				if ve, ok := err.(*jsonschema.ValidationError); ok {
					detail = fmt.Sprintf("%v", ve.DetailedOutput())
				}
				t.Errorf("%s: the CRD schema rejects it: %s", where, detail)
			}
			var generic map[string]any
			_ = yaml.Unmarshal(doc, &generic)
			switch meta.Kind {
			case "Middleware":
				generic["namespace"] = meta.Metadata.Namespace
				middlewares = append(middlewares, generic)
			case "PrometheusRule":
				ruleGroups = generic["spec"].(map[string]any)["groups"]
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "Middleware", "IngressRoute", "ServiceMonitor", "PrometheusRule", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s", k)
		}
	}
	// Traefik installs the plugin from the catalog.
	var static struct {
		Experimental struct {
			Plugins map[string]struct {
				ModuleName string `yaml:"moduleName"`
				Version    string `yaml:"version"`
			}
		}
	}
	if err := yamlv3.Unmarshal([]byte(staticConfig), &static); err != nil {
		t.Fatal(err)
	}
	if p := static.Experimental.Plugins["edgecanary"]; p.ModuleName != moduleName || p.Version == "" {
		t.Errorf("static config does not register the plugin from the catalog: %+v", p)
	}
	// The Middleware's plugin block, with its secrets resolved as Traefik's
	// CRD provider does (urn:k8s:secret:<name>:<key>), decodes into the Config.
	for _, mw := range middlewares {
		ns := mw["namespace"].(string)
		raw := mw["spec"].(map[string]any)["plugin"].(map[string]any)["edgecanary"].(map[string]any)
		resolved := resolveSecrets(t, raw, ns, secrets)
		name := ns + "-" + mw["metadata"].(map[string]any)["name"].(string) + "@kubernetescrd"
		cfg := newPluginFromRaw(t, resolved.(map[string]any), name)
		if s := cfg.Elem().FieldByName("Sticky").FieldByName("Cookie").FieldByName("Secret").String(); s == "" || strings.HasPrefix(s, "urn:") {
			t.Errorf("%s: the cookie secret did not come from the Secret: %q", name, s)
		}
	}
	// The PrometheusRule carries the same rules as demo/prometheus/rules.yml.
	var file map[string]any
	data, _ := os.ReadFile(demoPath(t, "prometheus", "rules.yml"))
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(file["groups"], ruleGroups) {
		t.Error("the PrometheusRule's groups differ from demo/prometheus/rules.yml")
	}
}

func resolveSecrets(t testing.TB, v any, ns string, secrets map[string]map[string]string) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range x {
			out[k] = resolveSecrets(t, val, ns, secrets)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = resolveSecrets(t, e, ns, secrets)
		}
		return out
	case string:
		if strings.HasPrefix(x, "urn:k8s:secret:") {
			parts := strings.Split(strings.TrimPrefix(x, "urn:k8s:secret:"), ":")
			if len(parts) != 2 {
				t.Fatalf("bad secret reference %q", x)
			}
			val, ok := secrets[ns+"/"+parts[0]][parts[1]]
			if !ok {
				t.Fatalf("secret reference %q: no such Secret key in namespace %s", x, ns)
			}
			return val
		}
	}
	return v
}

// promExpr is one PromQL expression and where it comes from.
type promExpr struct {
	where, expr string
}

// substitute fills the template variables of Grafana, Flagger and Argo
// Rollouts with values for the test's middleware.
var substitute = strings.NewReplacer(
	"$__rate_interval", "1m", `"$middleware"`, `"shop@file"`,
	"{{ namespace }}-{{ target }}@kubernetescrd", "shop@file", "{{ interval }}", "1m",
	"{{args.middleware}}", "shop@file", "{{args.canary}}", "canary", "{{args.stable}}", "stable",
)

func collectExpressions(t testing.TB) []promExpr {
	t.Helper()
	var out []promExpr
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	data, _ := os.ReadFile(demoPath(t, "grafana", "dashboards", "edgecanary.json"))
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, promExpr{"dashboard: " + p.Title, substitute.Replace(tg.Expr)})
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Record, Alert, Expr string }
		}
	}
	data, _ = os.ReadFile(demoPath(t, "prometheus", "rules.yml"))
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, promExpr{"rule: " + r.Record + r.Alert, r.Expr})
		}
	}
	for _, f := range []string{"flagger-metric-templates.yaml", "argo-analysis-template.yaml"} {
		data, _ := os.ReadFile(demoPath(t, "analysis", f))
		for _, doc := range splitYAML(data) {
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err != nil {
				t.Fatal(err)
			}
			walkQueries(m, func(q string) { out = append(out, promExpr{f, substitute.Replace(q)}) })
		}
	}
	return out
}

func walkQueries(v any, fn func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && k == "query" {
				fn(s)
				continue
			}
			walkQueries(val, fn)
		}
	case []any:
		for _, e := range x {
			walkQueries(e, fn)
		}
	}
}

// TestPromQLExpressions parses every expression with Prometheus's parser,
// then runs each against a real Prometheus scraping the sidecar while traffic
// flows (a failing-then-recovering canary, and a user who meets the rate
// limit). An alert's condition is checked by evaluating the quantity it
// compares (its left-hand side); the conditions themselves are unit-tested by
// promtool test rules.
func TestPromQLExpressions(t *testing.T) {
	exprs := collectExpressions(t)
	if len(exprs) < 15 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	queries := make([]string, len(exprs))
	for i, e := range exprs {
		node, err := parser.ParseExpr(e.expr)
		if err != nil {
			t.Fatalf("%s: Prometheus's parser rejects %q: %v", e.where, e.expr, err)
		}
		queries[i] = node.String()
		if b, ok := node.(*parser.BinaryExpr); ok && b.Op.IsComparisonOperator() && !b.ReturnBool {
			queries[i] = b.LHS.String()
		}
	}
	if testing.Short() {
		return
	}
	stable := newBackend(t, "stable")
	canary := newSwitchBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, canaryDynamic(stable.URL, canary.URL(), 60, 40, fmt.Sprintf(`          rateLimit:
            average: 5
            burst: 5
            sourceCriterion:
              requestHeaderName: X-User
          circuitBreaker:
            consecutiveFailures: 3
            openDuration: 1s
          sidecar:
            address: %q
            interval: 200ms
          rollout:
            start: %q
            stepWeights: [40, 100]
            interval: 1h
`, sc.ingest, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))), traefikOptions{}) // a rollout at step 1 (40%), for the rollout row
	tr.waitRouter("shop")
	rules := demoPath(t, "prometheus", "rules.yml")
	prom := startPrometheusWithRules(t, rules, sc.metrics)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := client("")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			canary.setModeQuiet(i/40%2 == 1) // alternate healthy and failing phases
			user := fmt.Sprintf("user-%d", i%50)
			if i%10 == 0 {
				user = "greedy"
			}
			req, _ := http.NewRequest(http.MethodGet, tr.web+"/", nil)
			req.Header.Set("X-User", user)
			if res, err := c.Do(req); err == nil {
				res.Body.Close()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	for i, e := range exprs {
		q := queries[i]
		waitFor(t, 90*time.Second, fmt.Sprintf("data for %s: %s", e.where, q), func() bool {
			return len(prom.query(q)) > 0
		})
	}
	t.Logf("%d expressions parsed and returned data from the real Prometheus", len(exprs))
}

// setModeQuiet switches between healthy and 500s without reopening listeners.
func (b *switchBackend) setModeQuiet(failing bool) {
	if failing {
		b.mode.Store(mode500)
	} else {
		b.mode.Store(modeOK)
	}
}

// startPrometheusWithRules is startPrometheus with a rule file loaded.
func startPrometheusWithRules(t testing.TB, rules string, targets ...string) *promProc {
	t.Helper()
	return startPrometheusConfig(t, fmt.Sprintf("rule_files: [%q]\n", rules), targets...)
}
