package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
	"github.com/edgecanary/edgecanary/plugin"
	"gopkg.in/yaml.v3"
)

// prometheusOperator is the module whose CRDs (example/prometheus-operator-crd)
// make the ServiceMonitor and the PrometheusRule of demo/kubernetes valid kinds.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// kubeSubstitutions are the only changes the test makes to demo/kubernetes/
// before applying it, because this machine has no cluster network, no
// kubelet and no cluster DNS. substituteDemo applies exactly these, and fails
// when one no longer finds its target.
var kubeSubstitutions = []string{
	"Services shop/shop-stable and shop/shop-canary: type ExternalName, externalName a loopback address of the test " +
		"(no pods, and endpoints may not be loopback); the backends listen there on the Services' port 80, " +
		"and Traefik runs with allowExternalNameServices",
	"Middleware shop/shop: versions.canary.url http://shop-canary.shop.svc.cluster.local becomes http://<the canary's address> " +
		"(no cluster DNS)",
	"Middleware shop/shop: sidecar.address http://127.0.0.1:9191 becomes the test sidecar's free port, " +
		"and the sidecar container's --ingest.address and --metrics.address become free loopback ports " +
		"(two Traefik replicas and their sidecar share one host)",
	"Deployments: applied unchanged; nothing runs their pods. Traefik runs as two local processes with the " +
		"ConfigMap traefik-static's traefik.yml, changed only by kubeStaticSubstitutions (its token is the " +
		"ServiceAccount traefik's user, so its ClusterRole is what Traefik may read), and must pass the container's " +
		"readinessProbe; the sidecar runs with the container's args and env, as the kubelet would",
}

// shopHost is what the demo's IngressRoute matches.
const shopHost = "shop.example.com"

// TestKubernetes runs Traefik's Kubernetes CRD provider against a real
// kube-apiserver holding the project's demo/kubernetes/ files, and proves
// routing, stickiness, urn:k8s:secret resolution, live updates and the
// containment of a bad Middleware through it.
func TestKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, kube-apiserver and two Traefik processes")
	}
	// The test's stand-ins for the pods, on a loopback /24 of its own, at the
	// Services' port 80 (ExternalName Services keep the port).
	prefix := fmt.Sprintf("127.%d.%d.", 100+rand.Intn(100), rand.Intn(250))
	stableAddr, canaryAddr := prefix+"1", prefix+"2"
	if l, err := net.Listen("tcp", stableAddr+":80"); err != nil {
		msg := "the backends listen on port 80, as the demo's Services say, which needs root or CAP_NET_BIND_SERVICE: " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	} else {
		l.Close()
	}
	begin := time.Now()
	traefikToken := randomToken(t)
	k := startKube(t, kubeToken{traefikToken, "system:serviceaccount:traefik:traefik", "system:serviceaccounts"})
	t.Logf("etcd and kube-apiserver ready after %v", time.Since(begin).Round(time.Millisecond))

	// The CRDs and RBAC that ship with Traefik, and the Prometheus Operator's CRDs.
	traefikDir := goModuleDir(t, "github.com/traefik/traefik/v3@"+stage.TraefikVersion)
	ref := filepath.Join(traefikDir, "docs", "content", "reference", "dynamic-configuration")
	base := readManifests(t, filepath.Join(ref, "kubernetes-crd-definition-v1.yml"), filepath.Join(ref, "kubernetes-crd-rbac.yml"))
	poFiles, err := filepath.Glob(filepath.Join(goModuleDir(t, prometheusOperator), "example", "prometheus-operator-crd", "*.yaml"))
	if err != nil || len(poFiles) == 0 {
		t.Fatalf("no Prometheus Operator CRDs in %s: %v", prometheusOperator, err)
	}
	base = append(base, readManifests(t, poFiles...)...)
	k.mustApply(base...)
	k.waitEstablished(base)

	demoFiles, err := filepath.Glob(filepath.Join(repoRoot(t), "demo", "kubernetes", "*.yaml"))
	if err != nil || len(demoFiles) == 0 {
		t.Fatalf("no demo/kubernetes/*.yaml: %v", err)
	}
	sort.Strings(demoFiles)
	demo := readManifests(t, demoFiles...)
	// Each step builds on the one before: the first failure ends the test.
	run := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	run("every demo object is accepted with dryRun=All", func(t *testing.T) {
		// Namespaces first, for real: a namespaced object is only admitted in an
		// existing namespace. Every other object is then dry-run as on a fresh cluster.
		var rest []kubeObject
		for _, o := range demo {
			if o.str("kind") != "Namespace" {
				rest = append(rest, o)
				continue
			}
			if err := k.apply(o, true); err != nil {
				t.Fatalf("dry run of %v: %v", o, err)
			}
			k.mustApply(o)
		}
		kinds := map[string]int{}
		for _, o := range rest {
			if err := k.apply(o, true); err != nil {
				t.Errorf("dry run of %v: %v", o, err)
			}
			kinds[o.str("kind")]++
		}
		t.Logf("%d objects accepted with dryRun=All and strict field validation: %v", len(demo), kinds)
	})

	stable := newBackendAt(t, "stable", stableAddr+":80")
	canary := newBackendAt(t, "canary", canaryAddr+":80")
	ingestPort, metricsPort := freePort(t), freePort(t)

	objs := substituteDemo(t, demo, stableAddr, canaryAddr, ingestPort, metricsPort)
	for _, s := range kubeSubstitutions {
		t.Logf("substitution: %s", s)
	}
	k.mustApply(objs...)

	sc := startDemoSidecar(t, k, objs, ingestPort, metricsPort)
	if !strings.Contains(sc.logs.String(), "bearer token required") {
		t.Fatalf("the sidecar, run as the Deployment says, requires no token:\n%s", sc.logs.String())
	}

	// Traefik runs with the ConfigMap's traefik.yml, changed only by kubeStaticSubstitutions.
	var configMap string
	for _, o := range objs {
		if o.str("kind") == "ConfigMap" && o.str("metadata", "namespace") == "traefik" && o.str("metadata", "name") == "traefik-static" {
			configMap = o.str("data", "traefik.yml")
		}
	}
	if configMap == "" {
		t.Fatal("no traefik.yml in the ConfigMap traefik/traefik-static")
	}
	for _, s := range kubeStaticSubstitutions {
		t.Logf("static configuration substitution: %s", s)
	}
	provider := stage.KubernetesCRD{Endpoint: k.url, Token: traefikToken, CertAuthFilePath: k.caFile}
	opts := traefikOptions{static: func(web, api string) (string, error) { return kubeStatic(configMap, web, api, provider) }}
	replicas := []*traefikProc{startTraefik(t, "", opts), startTraefik(t, "", opts)}
	// The kubelet would keep a replica out of the Service traefik until its readinessProbe passes.
	probe := traefikReadinessPath(t, objs, configMap)
	for _, tr := range replicas {
		res, err := http.Get(tr.api + probe)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("the Traefik container's readinessProbe, GET %s on the entry point traefik, answers %d: no replica would ever be Ready", probe, res.StatusCode)
		}
	}
	s := &kubeShop{replicas: replicas, sidecar: sc, canaryURL: "http://" + canaryAddr, sent: map[string]float64{}}
	for i := 0; i < 40; i++ {
		s.clients = append(s.clients, client(fmt.Sprintf("%s%d", prefix, 10+i)))
	}
	for _, tr := range replicas {
		waitFor(t, 60*time.Second, "the demo's IngressRoute served by "+tr.web, func() bool {
			res, err := s.get(s.clients[0], tr, nil)
			return err == nil && res.StatusCode == http.StatusOK
		})
	}
	t.Logf("two Traefik replicas serve the IngressRoute %v after the start", time.Since(begin).Round(time.Millisecond))
	var users []*kubeUser

	run("routing and stickiness through the IngressRoute", func(t *testing.T) {
		users = s.fresh(t, 2000, 0)
		s.checkShare(t, users, 0.20)
		s.returning(t, users)
		t.Logf("%d returning clients kept their version on both replicas, without a new cookie", len(users))
		// stable through the ExternalName Service shop-stable, canary through the Middleware's url.
		if stable.requests.Load() == 0 || canary.requests.Load() == 0 {
			t.Fatalf("backends served stable %d, canary %d requests", stable.requests.Load(), canary.requests.Load())
		}
		t.Logf("backends served stable %d, canary %d requests", stable.requests.Load(), canary.requests.Load())
		// rateLimit's nested maps and JSON numbers reached the plugin: one client
		// IP past its burst of 200 (100/s on average) gets 429s.
		c := client(prefix + "200")
		codes := make([]int, 500)
		start := time.Now()
		parallel(t, len(codes), func(i int) error {
			res, err := s.get(c, replicas[0], nil)
			if err != nil {
				return err
			}
			codes[i] = res.StatusCode
			return nil
		})
		elapsed := time.Since(start)
		ok, limited := 0, 0
		for _, code := range codes {
			switch code {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
			}
		}
		if most := 200 + int(100*elapsed.Seconds()) + 5; ok < 200 || ok > most || ok+limited != len(codes) {
			t.Fatalf("one client IP sent %d requests in %v: %d OK (want 200 to %d), %d 429", len(codes), elapsed, ok, most, limited)
		}
		if limited == 0 {
			t.Fatalf("one client IP sent %d requests in %v and none got 429: the burst of 200 is not enforced", len(codes), elapsed)
		}
		t.Logf("one client IP, %d requests in %v: %d OK, %d answered 429 (burst 200, 100/s)", len(codes), elapsed.Round(time.Millisecond), ok, limited)
		// The average: the emptied bucket refills at 100/s. After a known pause,
		// another burst of requests gets about 100 per second of pause, no more
		// than the refill until its last answer.
		end1 := time.Now()
		time.Sleep(time.Second)
		start2 := time.Now()
		codes = make([]int, 400)
		parallel(t, len(codes), func(i int) error {
			res, err := s.get(c, replicas[0], nil)
			if err != nil {
				return err
			}
			codes[i] = res.StatusCode
			return nil
		})
		end2 := time.Now()
		refilled := 0
		for _, code := range codes {
			if code == http.StatusOK {
				refilled++
			}
		}
		least, most := int(90*start2.Sub(end1).Seconds())-5, int(100*end2.Sub(end1).Seconds())+20
		if refilled < least || refilled > most {
			t.Fatalf("after a pause of %v, the same client IP got %d OK of %d (want %d to %d: average 100/s)",
				start2.Sub(end1), refilled, len(codes), least, most)
		}
		t.Logf("one client IP, after a pause of %v: %d OK of %d (average 100/s: %d to %d)",
			start2.Sub(end1).Round(time.Millisecond), refilled, len(codes), least, most)
	})

	run("urn:k8s:secret values are resolved from the Secrets", func(t *testing.T) {
		secret := k.secretValue("shop", "edgecanary", "cookieSecret")
		if n := acceptedCookies(t, secret, nil, s.canaryURL, 80, 20, users); n != len(users) {
			t.Fatalf("only %d of %d cookies are signed with the Secret's cookieSecret %q", n, len(users), secret)
		}
		t.Logf("every cookie of both replicas is signed with the Secret's cookieSecret")
		// The sidecar requires the token of its own Secret; the Middleware's comes
		// from another Secret: the reports only arrive if Traefik resolved it.
		res, err := http.Post(sc.ingest+"/v1/reports", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a report without the token got %d, want 401", res.StatusCode)
		}
		s.waitSidecar(t)
	})

	run("raising the weight through the API moves users into the canary and none back", func(t *testing.T) {
		k.mergePatch("traefik.io/v1alpha1", "Middleware", "shop", "shop", map[string]any{"spec": map[string]any{"plugin": map[string]any{
			"edgecanary": map[string]any{"versions": map[string]any{"stable": map[string]any{"weight": 50}, "canary": map[string]any{"weight": 50}}}}}})
		s.waitRaw(t, fmt.Sprintf(`"url":%q,"weight":50`, s.canaryURL))
		moved, stableBefore := 0, 0
		for _, u := range users {
			if u.version == "stable" {
				stableBefore++
			}
		}
		after := s.returningVersions(t, users)
		for i, u := range users {
			switch {
			case u.version == "canary" && after[i] != "canary":
				t.Fatalf("raising the weight moved canary user %d back to %s", i, after[i])
			case u.version == "stable" && after[i] == "canary":
				moved++
			}
			u.version = after[i]
		}
		// From 20% to 50%, 30/80 of the stable users move.
		want := float64(stableBefore) * 30 / 80
		if tol := 4.5 * math.Sqrt(want*(1-30.0/80)); math.Abs(float64(moved)-want) > tol {
			t.Fatalf("%d of %d stable users moved into the canary, want %.0f ± %.0f", moved, stableBefore, want, tol)
		}
		t.Logf("weight 20 -> 50: %d of %d stable users moved into the canary (expected %.0f), none back", moved, stableBefore, want)
		s.checkShare(t, s.fresh(t, 1000, len(users)), 0.50)
	})

	run("moving the cookie secret to previousSecrets keeps users sticky", func(t *testing.T) {
		old := k.secretValue("shop", "edgecanary", "cookieSecret")
		rotated := "rotated-" + randomToken(t)
		// Each step is consistent on its own, whichever replica reloads first:
		// 1. the Secret gains previousCookieSecret (the current value), 2. the
		// Middleware lists it in previousSecrets, 3. the Secret's cookieSecret changes.
		k.mergePatch("v1", "Secret", "shop", "edgecanary", map[string]any{"stringData": map[string]any{"previousCookieSecret": old}})
		k.mergePatch("traefik.io/v1alpha1", "Middleware", "shop", "shop", map[string]any{"spec": map[string]any{"plugin": map[string]any{
			"edgecanary": map[string]any{"sticky": map[string]any{"cookie": map[string]any{
				"previousSecrets": []string{"urn:k8s:secret:edgecanary:previousCookieSecret"}}}}}}})
		s.waitRaw(t, `"previousSecrets":[`)
		k.mergePatch("v1", "Secret", "shop", "edgecanary", map[string]any{"stringData": map[string]any{"cookieSecret": rotated}})
		for _, tr := range replicas {
			waitFor(t, 30*time.Second, "a fresh cookie signed with the rotated secret from "+tr.web, func() bool {
				res, err := s.get(s.clients[0], tr, nil)
				if err != nil || res.StatusCode != http.StatusOK {
					return false
				}
				ck := cookieNamed(res, "edgecanary")
				return ck != nil && acceptedCookies(t, rotated, nil, s.canaryURL, 50, 50, []*kubeUser{{cookie: ck, version: res.Header.Get("X-Version")}}) == 1
			})
		}
		after, resigned := s.returningResigned(t, users)
		for i, u := range users {
			if after[i].version != u.version {
				t.Fatalf("user %d moved from %s to %s when the secret rotated", i, u.version, after[i].version)
			}
		}
		if n := acceptedCookies(t, rotated, nil, s.canaryURL, 50, 50, after); n != len(after) {
			t.Fatalf("%d of %d re-signed cookies carry the rotated secret", n, len(after))
		}
		t.Logf("secret rotated through the Secret and the Middleware: %d users kept their version, %d cookies re-signed with the new secret", len(users), resigned)
		for i := range users {
			users[i].cookie = after[i].cookie
		}
	})

	run("a bad Middleware disables only its routes", func(t *testing.T) {
		// Three bad values, each in its own Middleware and IngressRoute: a
		// negative weight, a version set with two primaries, and a rule that
		// names an unknown version (rollout.version).
		bad := []struct{ name, field string }{
			{"bad-weight", "versions.canary.weight: must not be negative, got -5"},
			{"bad-primary", "exactly one version must have no url"},
			{"bad-rollout", `rollout.version: \"nope\" is not one of versions`}, // as Traefik quotes it in the log
		}
		var objs []kubeObject
		for _, b := range bad {
			versions := map[string]any{"stable": map[string]any{"weight": 80}, "canary": map[string]any{"weight": -5, "url": s.canaryURL}}
			mw := middleware(b.name, versions)
			switch b.name {
			case "bad-primary":
				versions["canary"] = map[string]any{"weight": 20}
			case "bad-rollout":
				versions["canary"] = map[string]any{"weight": 20, "url": s.canaryURL}
				mw["spec"].(map[string]any)["plugin"].(map[string]any)["edgecanary"].(map[string]any)["rollout"] = map[string]any{
					"version": "nope", "start": "2026-12-01T09:00:00Z", "stepWeights": []any{10, 50, 100}, "interval": "10m"}
			}
			objs = append(objs, mw, ingressRoute(b.name, b.name+".example.com", b.name))
		}
		// A good IngressRoute applied with them: Traefik keeps applying new configuration.
		objs = append(objs, ingressRoute("plain", "plain.example.com", ""))
		k.mustApply(objs...)
		for r, tr := range replicas {
			waitFor(t, 30*time.Second, "the new IngressRoute served by "+tr.web, func() bool {
				res, err := hostGet(client(""), tr.web, "plain.example.com", nil)
				return err == nil && res.StatusCode == http.StatusOK
			})
			for _, b := range bad {
				res, err := hostGet(client(""), tr.web, b.name+".example.com", nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != http.StatusNotFound {
					t.Fatalf("%s.example.com answers %d, want 404: its route must be disabled with the Middleware Traefik could not build", b.name, res.StatusCode)
				}
				if !strings.Contains(tr.logs.String(), b.field) {
					t.Fatalf("Traefik did not log the field error %q of Middleware %s", b.field, b.name)
				}
				t.Logf("replica %d: %s.example.com answers %d; Traefik logs %q", r+1, b.name, res.StatusCode, logLine(tr.logs.String(), b.field))
			}
		}
		s.returning(t, users)
		t.Logf("the demo's IngressRoute kept serving %d sticky users on both replicas", len(users))
	})

	s.waitSidecar(t)
	t.Logf("TestKubernetes took %v", time.Since(begin).Round(time.Millisecond))
}

// kubeShop is the demo's shop behind two Traefik replicas.
type kubeShop struct {
	replicas  []*traefikProc
	sidecar   *sidecarProc
	canaryURL string
	clients   []*http.Client // one per loopback source address: the rate limit is per client IP

	mu   sync.Mutex
	sent map[string]float64 // "version code" -> requests through the Middleware
}

// kubeUser is a client: its cookie and the version it was served.
type kubeUser struct {
	cookie  *http.Cookie
	version string
}

// hostGet sends a GET to base with a Host header and an optional cookie.
func hostGet(c *http.Client, base, host string, cookie *http.Cookie) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+"/", nil)
	if err != nil {
		return nil, err
	}
	req.Host = host
	if cookie != nil {
		req.AddCookie(cookie)
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res, nil
}

// parallel runs f for 0..n-1 on 16 workers and fails on the first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// get sends one request to the demo's IngressRoute and counts it when a
// version answered it (through the Middleware).
func (s *kubeShop) get(c *http.Client, tr *traefikProc, cookie *http.Cookie) (*http.Response, error) {
	res, err := hostGet(c, tr.web, shopHost, cookie)
	if err != nil {
		return nil, err
	}
	if v := res.Header.Get("X-Version"); v != "" {
		s.mu.Lock()
		s.sent[fmt.Sprintf("%s %d", v, res.StatusCode)]++
		s.mu.Unlock()
	}
	return res, nil
}

// shop sends one request for user i (its source address and replica follow
// from i).
func (s *kubeShop) shop(i int, cookie *http.Cookie) (*http.Response, error) {
	res, err := s.get(s.clients[i%len(s.clients)], s.replicas[i%len(s.replicas)], cookie)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("user %d: status %d", i, res.StatusCode)
	}
	return res, nil
}

// fresh sends n users without a cookie, numbered from first.
func (s *kubeShop) fresh(t *testing.T, n, first int) []*kubeUser {
	t.Helper()
	users := make([]*kubeUser, n)
	parallel(t, n, func(i int) error {
		res, err := s.shop(first+i, nil)
		if err != nil {
			return err
		}
		ck := cookieNamed(res, "edgecanary")
		if ck == nil {
			return fmt.Errorf("fresh user %d got no cookie", i)
		}
		users[i] = &kubeUser{cookie: ck, version: res.Header.Get("X-Version")}
		return nil
	})
	return users
}

// returningVersions sends every user again, with its cookie, to the other
// replica than before, and returns the versions served. A new cookie fails.
func (s *kubeShop) returningVersions(t *testing.T, users []*kubeUser) []string {
	t.Helper()
	out := make([]string, len(users))
	parallel(t, len(users), func(i int) error {
		res, err := s.shop(i+1, users[i].cookie)
		if err != nil {
			return err
		}
		if cookieNamed(res, "edgecanary") != nil {
			return fmt.Errorf("user %d: a valid cookie was replaced", i)
		}
		out[i] = res.Header.Get("X-Version")
		return nil
	})
	return out
}

// returning checks that every user keeps its version, on the other replica
// and without a new cookie.
func (s *kubeShop) returning(t *testing.T, users []*kubeUser) {
	t.Helper()
	for i, v := range s.returningVersions(t, users) {
		if v != users[i].version {
			t.Fatalf("returning user %d moved from %s to %s", i, users[i].version, v)
		}
	}
}

// returningResigned sends every user again and returns what each now holds:
// the new cookie when the response re-signed it.
func (s *kubeShop) returningResigned(t *testing.T, users []*kubeUser) ([]*kubeUser, int) {
	t.Helper()
	out := make([]*kubeUser, len(users))
	var mu sync.Mutex
	resigned := 0
	parallel(t, len(users), func(i int) error {
		res, err := s.shop(i, users[i].cookie)
		if err != nil {
			return err
		}
		u := &kubeUser{cookie: users[i].cookie, version: res.Header.Get("X-Version")}
		if ck := cookieNamed(res, "edgecanary"); ck != nil {
			u.cookie = ck
			mu.Lock()
			resigned++
			mu.Unlock()
		}
		out[i] = u
		return nil
	})
	return out, resigned
}

// checkShare fails unless the canary share is within 4.5 binomial standard
// deviations of p.
func (s *kubeShop) checkShare(t *testing.T, users []*kubeUser, p float64) {
	t.Helper()
	n := float64(len(users))
	var k float64
	for _, u := range users {
		if u.version == "canary" {
			k++
		}
	}
	tol := 4.5 * math.Sqrt(n*p*(1-p))
	if math.Abs(k-n*p) > tol {
		t.Fatalf("the canary got %.0f of %.0f fresh users, want %.0f ± %.0f", k, n, n*p, tol)
	}
	t.Logf("canary share %.4f of %.0f fresh users over both replicas (weight %.2f, tolerance ±%.0f users)", k/n, n, p, tol)
}

// waitRaw waits until both replicas' raw dynamic configuration contains want.
func (s *kubeShop) waitRaw(t *testing.T, want string) {
	t.Helper()
	for _, tr := range s.replicas {
		waitFor(t, 30*time.Second, "Traefik "+tr.api+" to apply "+want, func() bool {
			res, err := http.Get(tr.api + "/api/rawdata")
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			return strings.Contains(string(body), want)
		})
	}
}

// waitSidecar waits until the sidecar has published every request sent
// through the Middleware, from both replicas.
func (s *kubeShop) waitSidecar(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	sent := map[string]float64{}
	for k, v := range s.sent {
		sent[k] = v
	}
	s.mu.Unlock()
	var got map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got = requestCounts(s.sidecar.scrape(), "shop-shop@kubernetescrd")
		if sameCounts(got, sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar published %v for shop-shop@kubernetescrd, the clients received %v", got, sent)
		}
	}
	t.Logf("the sidecar accepted the token from the Secret and published %v for shop-shop@kubernetescrd", got)
}

// secretValue reads one key of a Secret.
func (k *kubeCluster) secretValue(namespace, name, key string) string {
	k.t.Helper()
	data, _ := k.get("v1", "Secret", namespace, name)["data"].(map[string]any)
	enc, _ := data[key].(string)
	v, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || enc == "" {
		k.t.Fatalf("Secret %s/%s has no key %s", namespace, name, key)
	}
	return string(v)
}

// acceptedCookies counts the users whose cookie a compiled edgecanary, with
// this secret and weights, takes as valid and current: it serves their
// version and signs no new cookie. The middleware name is always the same,
// so that no earlier instance's cookies count as another middleware's.
func acceptedCookies(t *testing.T, secret string, previous []string, canaryURL string, stableWeight, canaryWeight int, users []*kubeUser) int {
	t.Helper()
	cfg := plugin.CreateConfig()
	cfg.Versions = map[string]plugin.VersionConfig{"stable": {Weight: stableWeight}, "canary": {Weight: canaryWeight, URL: canaryURL}}
	cfg.Sticky.Cookie.Secret = secret
	cfg.Sticky.Cookie.PreviousSecrets = previous
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.Header().Set("X-Version", "stable") })
	h, err := plugin.New(ctx, next, cfg, "kubernetes-cookie-check")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, u := range users {
		req := httptest.NewRequest(http.MethodGet, "http://"+shopHost+"/", nil)
		req.AddCookie(u.cookie)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Header().Get("Set-Cookie") == "" && rec.Header().Get("X-Version") == u.version {
			n++
		}
	}
	return n
}

// middleware is a Middleware in namespace shop whose edgecanary block holds
// only the versions given.
func middleware(name string, versions map[string]any) kubeObject {
	return kubeObject{
		"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
		"metadata": map[string]any{"name": name, "namespace": "shop"},
		"spec":     map[string]any{"plugin": map[string]any{"edgecanary": map[string]any{"versions": versions}}},
	}
}

// ingressRoute routes host to shop-stable, through a Middleware when one is named.
func ingressRoute(name, host, mw string) kubeObject {
	route := map[string]any{
		"match": "Host(`" + host + "`)", "kind": "Rule",
		"services": []any{map[string]any{"name": "shop-stable", "port": 80}},
	}
	if mw != "" {
		route["middlewares"] = []any{map[string]any{"name": mw}}
	}
	return kubeObject{
		"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
		"metadata": map[string]any{"name": name, "namespace": "shop"},
		"spec":     map[string]any{"entryPoints": []any{"web"}, "routes": []any{route}},
	}
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*m")

// logLine is the first log line that contains s, without colours.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return ansiEscape.ReplaceAllString(l, "")
		}
	}
	return ""
}

// substituteDemo returns a copy of the demo's objects with kubeSubstitutions
// applied, and fails when one of them finds nothing to change.
func substituteDemo(t *testing.T, demo []kubeObject, stableAddr, canaryAddr string, ingestPort, metricsPort int) []kubeObject {
	t.Helper()
	done := map[string]bool{}
	var out []kubeObject
	for _, orig := range demo {
		o := deepCopy(map[string]any(orig)).(map[string]any)
		obj := kubeObject(o)
		id := obj.str("kind") + " " + obj.str("metadata", "namespace") + "/" + obj.str("metadata", "name")
		spec, _ := o["spec"].(map[string]any)
		switch id {
		case "Service shop/shop-stable", "Service shop/shop-canary":
			addr := stableAddr
			if id == "Service shop/shop-canary" {
				addr = canaryAddr
			}
			delete(spec, "selector")
			spec["type"] = "ExternalName"
			spec["externalName"] = addr
			done[id] = true
		case "Middleware shop/shop":
			ec := spec["plugin"].(map[string]any)["edgecanary"].(map[string]any)
			canary := ec["versions"].(map[string]any)["canary"].(map[string]any)
			if canary["url"] == "http://shop-canary.shop.svc.cluster.local" {
				canary["url"] = "http://" + canaryAddr
				done["canary url"] = true
			}
			sidecar := ec["sidecar"].(map[string]any)
			if sidecar["address"] == "http://127.0.0.1:9191" {
				sidecar["address"] = fmt.Sprintf("http://127.0.0.1:%d", ingestPort)
				done["sidecar address"] = true
			}
		case "Deployment traefik/traefik":
			sidecarContainer(t, obj) // its listen addresses change where the sidecar starts: startDemoSidecar
			done[id] = true
		}
		out = append(out, obj)
	}
	for _, want := range []string{"Service shop/shop-stable", "Service shop/shop-canary", "canary url", "sidecar address", "Deployment traefik/traefik"} {
		if !done[want] {
			t.Fatalf("substitution %q found nothing to change in demo/kubernetes: update kubeSubstitutions", want)
		}
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = deepCopy(x)
		}
		return l
	}
	return v
}

// sidecarContainer is the edgecanary-sidecar container of the Deployment traefik.
func sidecarContainer(t *testing.T, deployment kubeObject) map[string]any {
	t.Helper()
	spec := deployment["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	for _, c := range spec["containers"].([]any) {
		if c := c.(map[string]any); c["name"] == "edgecanary-sidecar" {
			return c
		}
	}
	t.Fatal("the Deployment traefik/traefik has no container edgecanary-sidecar")
	return nil
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// startDemoSidecar runs the sidecar as the kubelet would run the Deployment's
// container: its args, with $(VAR) expanded from its env, and its env, with
// secretKeyRef read from the API server. Only the listen addresses change.
func startDemoSidecar(t *testing.T, k *kubeCluster, objs []kubeObject, ingestPort, metricsPort int) *sidecarProc {
	t.Helper()
	var c map[string]any
	for _, o := range objs {
		if o.str("kind") == "Deployment" && o.str("metadata", "namespace") == "traefik" && o.str("metadata", "name") == "traefik" {
			c = sidecarContainer(t, o)
		}
	}
	if c == nil {
		t.Fatal("no Deployment traefik/traefik in demo/kubernetes")
	}
	env := map[string]string{}
	var envList []string
	for _, e := range c["env"].([]any) {
		e := e.(map[string]any)
		name := e["name"].(string)
		value, _ := e["value"].(string)
		if from, ok := e["valueFrom"].(map[string]any); ok {
			ref := from["secretKeyRef"].(map[string]any)
			value = k.secretValue("traefik", ref["name"].(string), ref["key"].(string))
		}
		env[name] = value
		envList = append(envList, name+"="+value)
	}
	var args []string
	for _, a := range c["args"].([]any) {
		a := varRef.ReplaceAllStringFunc(a.(string), func(ref string) string {
			if v, ok := env[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		})
		switch {
		case strings.HasPrefix(a, "--ingest.address="):
			a = fmt.Sprintf("--ingest.address=127.0.0.1:%d", ingestPort)
		case strings.HasPrefix(a, "--metrics.address="):
			a = fmt.Sprintf("--metrics.address=127.0.0.1:%d", metricsPort)
		}
		args = append(args, a)
	}
	s := &sidecarProc{t: t, ingestPort: ingestPort, metricsPort: metricsPort, args: args, env: envList, logs: &syncBuffer{},
		ingest: fmt.Sprintf("http://127.0.0.1:%d", ingestPort), metrics: fmt.Sprintf("http://127.0.0.1:%d", metricsPort)}
	s.start()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.logs.String())
		}
	})
	return s
}

// kubeStaticSubstitutions are the only changes TestKubernetes makes to the
// ConfigMap traefik-static's traefik.yml before starting a Traefik replica
// with it (kubeStatic).
var kubeStaticSubstitutions = []string{
	"entryPoints.web.address and entryPoints.traefik.address become free loopback ports (two replicas share one host)",
	"providers.kubernetesCRD gains endpoint, token and certAuthFilePath (the test's API server, the ServiceAccount " +
		"traefik's token, the API server's CA) and allowExternalNameServices: true (the Services are ExternalName); " +
		"its other settings are kept",
	"providers.providersThrottleDuration: 100ms, when the ConfigMap sets none (the test waits for each change)",
	"experimental.plugins.edgecanary (the catalog: no internet here) becomes experimental.localPlugins.edgecanary, " +
		"the same moduleName, staged from this checkout",
	"api.insecure: true on the traefik entry point and log.level INFO: the test reads /api/rawdata and the log",
}

// kubeStatic is the ConfigMap's traefik.yml with kubeStaticSubstitutions
// applied. It fails when a substitution finds nothing to change or would
// replace a setting of the ConfigMap.
func kubeStatic(configMap, web, api string, crd stage.KubernetesCRD) (string, error) {
	var static map[string]any
	if err := yaml.Unmarshal([]byte(configMap), &static); err != nil || static == nil {
		return "", fmt.Errorf("the ConfigMap's traefik.yml: %v", err)
	}
	eps, _ := static["entryPoints"].(map[string]any)
	for name, addr := range map[string]string{"web": web, "traefik": api} {
		ep, _ := eps[name].(map[string]any)
		if ep == nil || ep["address"] == nil {
			return "", fmt.Errorf("the ConfigMap has no entryPoints.%s.address", name)
		}
		ep["address"] = addr
	}
	providers, _ := static["providers"].(map[string]any)
	kc, _ := providers["kubernetesCRD"].(map[string]any)
	if kc == nil {
		return "", fmt.Errorf("the ConfigMap has no providers.kubernetesCRD")
	}
	for _, key := range []string{"endpoint", "token", "certAuthFilePath", "allowExternalNameServices"} {
		if _, ok := kc[key]; ok {
			return "", fmt.Errorf("the ConfigMap sets providers.kubernetesCRD.%s, which the test replaces", key)
		}
	}
	kc["endpoint"], kc["token"], kc["certAuthFilePath"], kc["allowExternalNameServices"] = crd.Endpoint, crd.Token, crd.CertAuthFilePath, true
	if _, ok := providers["providersThrottleDuration"]; !ok {
		providers["providersThrottleDuration"] = "100ms"
	}
	exp, _ := static["experimental"].(map[string]any)
	plugins, _ := exp["plugins"].(map[string]any)
	if pl, _ := plugins["edgecanary"].(map[string]any); pl == nil || pl["moduleName"] != stage.ModuleName {
		return "", fmt.Errorf("the ConfigMap has no experimental.plugins.edgecanary with moduleName %s", stage.ModuleName)
	}
	delete(plugins, "edgecanary")
	if len(plugins) == 0 {
		delete(exp, "plugins")
	}
	exp["localPlugins"] = map[string]any{"edgecanary": map[string]any{"moduleName": stage.ModuleName}}
	for _, key := range []string{"api", "log"} {
		if _, ok := static[key]; ok {
			return "", fmt.Errorf("the ConfigMap sets %s, which the test replaces", key)
		}
	}
	static["api"] = map[string]any{"insecure": true, "debug": true}
	static["log"] = map[string]any{"level": "INFO"}
	out, err := yaml.Marshal(static)
	return string(out), err
}

// traefikReadinessPath is the path of the Traefik container's readinessProbe,
// checked to be on the port of the ConfigMap's entry point traefik (the one
// the test reaches as traefikProc.api).
func traefikReadinessPath(t *testing.T, objs []kubeObject, configMap string) string {
	t.Helper()
	var static map[string]any
	if err := yaml.Unmarshal([]byte(configMap), &static); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.str("kind") != "Deployment" || o.str("metadata", "namespace") != "traefik" || o.str("metadata", "name") != "traefik" {
			continue
		}
		spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		for _, c := range spec["containers"].([]any) {
			c := c.(map[string]any)
			if c["name"] != "traefik" {
				continue
			}
			get, _ := kubeObject(c).get("readinessProbe", "httpGet").(map[string]any)
			if get == nil {
				t.Fatal("the Traefik container has no readinessProbe.httpGet")
			}
			port := fmt.Sprint(get["port"])
			for _, p := range c["ports"].([]any) {
				if p := p.(map[string]any); p["name"] == get["port"] {
					port = fmt.Sprint(p["containerPort"])
				}
			}
			addr := kubeObject(static).str("entryPoints", "traefik", "address")
			if !strings.HasSuffix(addr, ":"+port) {
				t.Fatalf("the Traefik container's readinessProbe is on port %s, the ConfigMap's entry point traefik on %q", port, addr)
			}
			path, _ := get["path"].(string)
			return path
		}
	}
	t.Fatal("no Traefik container in the Deployment traefik/traefik")
	return ""
}

// get is the value at path, or nil.
func (o kubeObject) get(path ...string) any {
	var v any = map[string]any(o)
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
