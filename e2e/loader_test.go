package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mitchellh/mapstructure"
	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib"
	"gopkg.in/yaml.v3"
)

// manifest is the part of .traefik.yml that Traefik reads.
type manifest struct {
	DisplayName string         `yaml:"displayName"`
	Type        string         `yaml:"type"`
	Import      string         `yaml:"import"`
	BasePkg     string         `yaml:"basePkg"`
	Summary     string         `yaml:"summary"`
	TestData    map[string]any `yaml:"testData"`
}

func readManifest(t testing.TB) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".traefik.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// yaegiPlugin is the plugin loaded as Traefik's Yaegi middleware builder does
// (pkg/plugins/middlewareyaegi.go in Traefik v3.6.12).
type yaegiPlugin struct {
	fnNew, fnCreateConfig reflect.Value
}

func loadYaegiPlugin(t testing.TB) yaegiPlugin {
	t.Helper()
	return loadYaegiPluginLogging(t, os.Stderr)
}

// loadYaegiPluginLogging is loadYaegiPlugin with the plugin's log (Traefik
// sends it to its own log) written to stderr.
func loadYaegiPluginLogging(t testing.TB, stderr io.Writer) yaegiPlugin {
	t.Helper()
	m := readManifest(t)
	goPath := t.TempDir()
	stagePlugin(t, goPath)
	i := yaegiImport(t, goPath, stderr, m.Import)
	basePkg := m.BasePkg
	if basePkg == "" {
		basePkg = strings.ReplaceAll(path.Base(m.Import), "-", "_")
	}
	fnNew, err := i.Eval(basePkg + ".New")
	if err != nil {
		t.Fatal(err)
	}
	fnCreateConfig, err := i.Eval(basePkg + ".CreateConfig")
	if err != nil {
		t.Fatal(err)
	}
	return yaegiPlugin{fnNew: fnNew, fnCreateConfig: fnCreateConfig}
}

// yaegiImport imports importPath from the GOPATH goPath into a new Yaegi
// interpreter with the standard library, as Traefik does.
func yaegiImport(t testing.TB, goPath string, stderr io.Writer, importPath string) *interp.Interpreter {
	t.Helper()
	i := interp.New(interp.Options{GoPath: goPath, Env: os.Environ(), Stdout: io.Discard, Stderr: stderr})
	if err := i.Use(stdlib.Symbols); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Eval(fmt.Sprintf(`import %q`, importPath)); err != nil {
		t.Fatalf("importing %q in Yaegi: %v", importPath, err)
	}
	return i
}

// config runs CreateConfig and decodes raw into it with Traefik's options.
func (p yaegiPlugin) config(raw map[string]any) (reflect.Value, error) {
	v := p.fnCreateConfig.Call(nil)[0]
	if len(raw) == 0 {
		return v, nil
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToSliceHookFunc(","),
		WeaklyTypedInput: true,
		Result:           v.Interface(),
	})
	if err != nil {
		return v, err
	}
	return v, dec.Decode(raw)
}

// handler calls New as Traefik does.
func (p yaegiPlugin) handler(ctx context.Context, next http.Handler, cfg reflect.Value, name string) (http.Handler, error) {
	res := p.fnNew.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(next), cfg, reflect.ValueOf(name)})
	if len(res) > 1 && res[1].Interface() != nil {
		return nil, res[1].Interface().(error)
	}
	h, ok := res[0].Interface().(http.Handler)
	if !ok {
		return nil, fmt.Errorf("New returned %T", res[0].Interface())
	}
	return h, nil
}

func TestManifest(t *testing.T) {
	m := readManifest(t)
	if m.Type != "middleware" || m.Import != moduleName+"/plugin" || m.DisplayName == "" || m.Summary == "" || m.TestData == nil {
		t.Errorf("manifest: %+v", m)
	}
	root, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(root), "traefik/yaegi") {
		t.Error("the root go.mod requires yaegi: the plugin catalog rejects that")
	}
}

func TestYaegiLoadsManifestTestData(t *testing.T) {
	p := loadYaegiPlugin(t)
	m := readManifest(t)
	cfg, err := p.config(m.TestData)
	if err != nil {
		t.Fatalf("decoding testData: %v", err)
	}
	canary := newBackend(t, "canary")
	// testData names a fixed canary URL; point it at a live backend.
	versions := cfg.Elem().FieldByName("Versions")
	key := reflect.ValueOf("canary")
	vc := reflect.New(versions.Type().Elem()).Elem()
	vc.Set(versions.MapIndex(key))
	vc.FieldByName("URL").SetString(canary.URL)
	vc.FieldByName("Weight").SetInt(100)
	versions.SetMapIndex(key, vc)
	stable := reflect.New(versions.Type().Elem()).Elem()
	versions.SetMapIndex(reflect.ValueOf("stable"), stable) // weight 0: everyone on the canary

	next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "stable") })
	h, err := p.handler(context.Background(), next, cfg, "shop@file")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://shop.test/", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "canary" {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
	var ck *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "edgecanary" {
			ck = c
		}
	}
	if ck == nil {
		t.Fatal("no sticky cookie")
	}
	for i := 0; i < 5; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
		req.AddCookie(ck)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Body.String() != "canary" || len(rec.Result().Cookies()) != 0 {
			t.Fatalf("returning client: %q, cookies %v", rec.Body.String(), rec.Result().Cookies())
		}
	}
}

// TestYaegiWeakDecoding feeds the config as Docker labels do: string leaves only.
func TestYaegiWeakDecoding(t *testing.T) {
	p := loadYaegiPlugin(t)
	raw := map[string]any{
		"versions": map[string]any{
			"stable": map[string]any{"weight": "80"},
			"canary": map[string]any{"weight": "20", "urls": "http://127.0.0.1:1,http://127.0.0.1:2", "timeout": "5"},
		},
		"sticky":   map[string]any{"cookie": map[string]any{"secret": "s3cret", "secure": "true", "sameSite": "none", "maxAge": "60"}},
		"override": map[string]any{"trustedIPs": "127.0.0.1/32,::1"},
	}
	cfg, err := p.config(raw)
	if err != nil {
		t.Fatalf("decoding: %v", err)
	}
	if _, err := p.handler(context.Background(), http.NotFoundHandler(), cfg, "shop@docker"); err != nil {
		t.Fatalf("New: %v", err)
	}
}

func TestYaegiBadConfigIsAnError(t *testing.T) {
	p := loadYaegiPlugin(t)
	testCases := []struct {
		desc    string
		raw     map[string]any
		wantErr string
	}{
		{desc: "two primaries", raw: map[string]any{"versions": map[string]any{"a": map[string]any{"weight": 1}, "b": map[string]any{"weight": 1}}}, wantErr: "more than one primary"},
		{desc: "sameSite", raw: map[string]any{
			"versions": map[string]any{"a": map[string]any{"weight": 1}},
			"sticky":   map[string]any{"cookie": map[string]any{"sameSite": "sideways"}},
		}, wantErr: "sticky.cookie.sameSite"},
		{desc: "negative weight", raw: map[string]any{"versions": map[string]any{"a": map[string]any{"weight": "-5"}}}, wantErr: "versions.a.weight"},
	}
	for _, test := range testCases {
		t.Run(test.desc, func(t *testing.T) {
			cfg, err := p.config(test.raw)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			_, err = p.handler(context.Background(), http.NotFoundHandler(), cfg, "shop@file")
			if err == nil || !strings.Contains(err.Error(), test.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, test.wantErr)
			}
		})
	}
}

// TestYaegiNewReturnsOnExtremeConfigs runs the numbers at the edges of their
// types (extremeConfigs, also FuzzConfig's seeds) through New as Traefik's
// interpreter runs it: New returns, with nil or an error naming the field.
func TestYaegiNewReturnsOnExtremeConfigs(t *testing.T) {
	p := loadYaegiPluginLogging(t, io.Discard)
	for i, raw := range extremeConfigs {
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		cfg, err := p.config(m)
		if err != nil {
			continue // Traefik reports decoding errors itself
		}
		_, err = p.handler(context.Background(), http.NotFoundHandler(), cfg, fmt.Sprintf("extreme-%d@file", i))
		if !namesAField(err) {
			t.Errorf("%s: %v", raw, err)
		}
	}
}
