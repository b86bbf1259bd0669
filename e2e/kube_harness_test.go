package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgecanary/edgecanary/internal/stage"
	"gopkg.in/yaml.v3"
)

// kubeCluster is a real etcd and kube-apiserver on loopback: no kubelet, no
// controller-manager, so nothing runs pods. Clients authenticate with static
// tokens (--token-auth-file).
type kubeCluster struct {
	t      testing.TB
	url    string // https://127.0.0.1:<port>
	caFile string // the API server's self-signed serving certificate
	admin  string // token of a system:masters user
	client *http.Client

	mu        sync.Mutex
	resources map[string]map[string]kubeResource // group/version -> kind -> resource
}

// kubeResource is a kind's REST resource, from discovery.
type kubeResource struct {
	name       string // plural, as in the URL
	namespaced bool
}

// kubeToken is a static token: its user and groups.
type kubeToken struct{ token, user, group string }

// startKube starts etcd and kube-apiserver on free loopback ports, with one
// admin token and the extra tokens given. It skips the test when etcd or the
// kube-apiserver build is missing, and fails instead when CI is set.
func startKube(t testing.TB, tokens ...kubeToken) *kubeCluster {
	t.Helper()
	missing := t.Skip
	if os.Getenv("CI") != "" {
		missing = t.Fatal
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		missing("no etcd in PATH: install Debian's etcd-server (apt-get install --no-install-recommends etcd-server), as .ci/run does")
	}
	apiBin, err := stage.KubeAPIServerBinary()
	if err != nil {
		missing(err.Error())
	}
	dir := t.TempDir()
	k := &kubeCluster{t: t, admin: randomToken(t), resources: map[string]map[string]kubeResource{}}
	lines := []string{k.admin + ",admin,admin,system:masters"}
	for _, tok := range tokens {
		lines = append(lines, fmt.Sprintf("%s,%s,%s,%s", tok.token, tok.user, tok.user, tok.group))
	}
	writeFile(t, filepath.Join(dir, "tokens.csv"), strings.Join(lines, "\n")+"\n")
	writeServiceAccountKeys(t, dir)

	// A free port can be taken by another process before the server binds it:
	// each server gets three tries on new ports.
	var etcdURL string
	startRetrying(t, "etcd", func(try int) (*kubeProc, bool) {
		client, peer := freePort(t), freePort(t)
		etcdURL = fmt.Sprintf("http://127.0.0.1:%d", client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		p := startProc(t, "etcd", etcdBin,
			"--name=e2e", fmt.Sprintf("--data-dir=%s/etcd-%d", dir, try),
			"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
			"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=e2e="+peerURL, "--log-level=warn")
		p.port = client
		return p, p.ready(60*time.Second, func() bool {
			res, err := http.Get(etcdURL + "/health")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		})
	})

	startRetrying(t, "kube-apiserver", func(try int) (*kubeProc, bool) {
		port := freePort(t)
		k.url = fmt.Sprintf("https://127.0.0.1:%d", port)
		certDir := filepath.Join(dir, fmt.Sprintf("certs-%d", try))
		k.caFile = filepath.Join(certDir, "apiserver.crt")
		k.client = nil
		p := startProc(t, "kube-apiserver", apiBin,
			"--etcd-servers="+etcdURL,
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port), "--cert-dir="+certDir,
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
			"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
			"--service-cluster-ip-range=10.96.0.0/16",
			"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--endpoint-reconciler-type=none")
		p.port = port
		return p, p.ready(120*time.Second, func() bool {
			if k.client == nil {
				pem, err := os.ReadFile(k.caFile)
				if err != nil {
					return false
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return false
				}
				k.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
					Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
			}
			status, _, err := k.do(http.MethodGet, "/readyz", "", nil)
			return err == nil && status == http.StatusOK
		})
	})
	return k
}

// kubeProc is a server started for the test's lifetime.
type kubeProc struct {
	t    testing.TB
	name string
	pid  int
	port int // the TCP port it must listen on before ready trusts its check (0: any)
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
}

// startProc starts a server for the test's lifetime; its output is logged
// when the test fails.
func startProc(t testing.TB, name, bin string, args ...string) *kubeProc {
	t.Helper()
	p := &kubeProc{t: t, name: name, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			out := p.logs.String()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("%s logs:\n%s", name, out)
		}
	})
	return p
}

// ready polls cond until it holds while the process itself listens on its
// port: an answer on the port from another process (one that took it before
// ours could bind) is not ours. It returns false when the process exits
// first, and fails the test past the timeout.
func (p *kubeProc) ready(timeout time.Duration, cond func() bool) bool {
	p.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			return false
		default:
		}
		if listening(p.pid, p.port) && cond() {
			return true
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %v waiting for %s", timeout, p.name)
		}
	}
}

// startRetrying calls start up to three times, until a server is ready. A
// server that exits for any other reason than a taken port fails the test.
func startRetrying(t testing.TB, name string, start func(try int) (*kubeProc, bool)) {
	t.Helper()
	for try := 0; ; try++ {
		p, ok := start(try)
		if ok {
			return
		}
		if try == 2 || !strings.Contains(p.logs.String(), "address already in use") {
			t.Fatalf("%s exited:\n%s", name, p.logs.String())
		}
		t.Logf("%s found its port taken, trying again on another", name)
	}
}
func randomToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeServiceAccountKeys writes sa.key and sa.pub: kube-apiserver requires
// a service account signing key even when nothing uses it.
func writeServiceAccountKeys(t testing.TB, dir string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	writeFile(t, filepath.Join(dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
}

// do sends one request as the admin and returns the status and body.
func (k *kubeCluster) do(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, k.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.admin)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// resource finds a kind's REST resource by discovery, asking again when the
// kind is new (a CRD applied since).
func (k *kubeCluster) resource(apiVersion, kind string) (kubeResource, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r, ok := k.resources[apiVersion][kind]; ok {
		return r, nil
	}
	path := "/apis/" + apiVersion
	if apiVersion == "v1" {
		path = "/api/v1"
	}
	status, body, err := k.do(http.MethodGet, path, "", nil)
	if err != nil {
		return kubeResource{}, err
	}
	if status != http.StatusOK {
		return kubeResource{}, fmt.Errorf("discovery of %s: %d %s", apiVersion, status, body)
	}
	var list struct {
		Resources []struct {
			Name       string `json:"name"`
			Namespaced bool   `json:"namespaced"`
			Kind       string `json:"kind"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return kubeResource{}, err
	}
	m := map[string]kubeResource{}
	for _, r := range list.Resources {
		if !strings.Contains(r.Name, "/") {
			m[r.Kind] = kubeResource{name: r.Name, namespaced: r.Namespaced}
		}
	}
	k.resources[apiVersion] = m
	r, ok := m[kind]
	if !ok {
		return kubeResource{}, fmt.Errorf("the API server has no kind %s in %s", kind, apiVersion)
	}
	return r, nil
}

// objectPath is the REST path of an object.
func (k *kubeCluster) objectPath(apiVersion, kind, namespace, name string) (string, error) {
	r, err := k.resource(apiVersion, kind)
	if err != nil {
		return "", err
	}
	p := "/apis/" + apiVersion
	if apiVersion == "v1" {
		p = "/api/v1"
	}
	if r.namespaced {
		if namespace == "" {
			namespace = "default"
		}
		p += "/namespaces/" + namespace
	}
	return p + "/" + r.name + "/" + name, nil
}

// kubeObject is a manifest's object, as decoded from YAML.
type kubeObject map[string]any

func (o kubeObject) str(path ...string) string {
	var v any = map[string]any(o)
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

func (o kubeObject) String() string {
	return fmt.Sprintf("%s %s/%s", o.str("kind"), o.str("metadata", "namespace"), o.str("metadata", "name"))
}

// apply creates or updates an object by server-side apply, with strict field
// validation, as `kubectl apply --server-side` does. dryRun asks the API server to
// validate and admit it without storing it (dryRun=All).
func (k *kubeCluster) apply(o kubeObject, dryRun bool) error {
	p, err := k.objectPath(o.str("apiVersion"), o.str("kind"), o.str("metadata", "namespace"), o.str("metadata", "name"))
	if err != nil {
		return err
	}
	body, err := json.Marshal(o)
	if err != nil {
		return err
	}
	q := url.Values{"fieldManager": {"edgecanary-e2e"}, "force": {"true"}, "fieldValidation": {"Strict"}}
	if dryRun {
		q.Set("dryRun", "All")
	}
	status, out, err := k.do(http.MethodPatch, p+"?"+q.Encode(), "application/apply-patch+yaml", body)
	if err != nil {
		return err
	}
	if status != http.StatusOK && status != http.StatusCreated {
		return fmt.Errorf("%d %s", status, out)
	}
	return nil
}

// mustApply applies objects and fails the test on the first refusal.
func (k *kubeCluster) mustApply(objs ...kubeObject) {
	k.t.Helper()
	for _, o := range objs {
		if err := k.apply(o, false); err != nil {
			k.t.Fatalf("applying %v: %v", o, err)
		}
	}
}

// mergePatch changes an object with a JSON merge patch.
func (k *kubeCluster) mergePatch(apiVersion, kind, namespace, name string, patch any) {
	k.t.Helper()
	p, err := k.objectPath(apiVersion, kind, namespace, name)
	if err != nil {
		k.t.Fatal(err)
	}
	body, err := json.Marshal(patch)
	if err != nil {
		k.t.Fatal(err)
	}
	status, out, err := k.do(http.MethodPatch, p, "application/merge-patch+json", body)
	if err != nil || status != http.StatusOK {
		k.t.Fatalf("patching %s %s/%s: %d %s %v", kind, namespace, name, status, out, err)
	}
}

// get reads an object.
func (k *kubeCluster) get(apiVersion, kind, namespace, name string) kubeObject {
	k.t.Helper()
	p, err := k.objectPath(apiVersion, kind, namespace, name)
	if err != nil {
		k.t.Fatal(err)
	}
	status, out, err := k.do(http.MethodGet, p, "", nil)
	if err != nil || status != http.StatusOK {
		k.t.Fatalf("reading %s %s/%s: %d %s %v", kind, namespace, name, status, out, err)
	}
	var o kubeObject
	if err := json.Unmarshal(out, &o); err != nil {
		k.t.Fatal(err)
	}
	return o
}

// waitEstablished waits until every CustomResourceDefinition among objs is
// established, so that its kinds can be applied.
func (k *kubeCluster) waitEstablished(objs []kubeObject) {
	k.t.Helper()
	for _, o := range objs {
		if o.str("kind") != "CustomResourceDefinition" {
			continue
		}
		name := o.str("metadata", "name")
		waitFor(k.t, 60*time.Second, "CRD "+name+" established", func() bool {
			status, out, err := k.do(http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, "", nil)
			if err != nil || status != http.StatusOK {
				return false
			}
			var crd struct {
				Status struct {
					Conditions []struct{ Type, Status string } `json:"conditions"`
				} `json:"status"`
			}
			if json.Unmarshal(out, &crd) != nil {
				return false
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == "Established" && c.Status == "True" {
					return true
				}
			}
			return false
		})
	}
}

// readManifests decodes every object of the YAML files given (multi-document
// files; empty documents are skipped), in file order.
func readManifests(t testing.TB, files ...string) []kubeObject {
	t.Helper()
	var objs []kubeObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o map[string]any
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			if o["kind"] == nil || o["apiVersion"] == nil {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			objs = append(objs, kubeObject(o))
		}
	}
	return objs
}

// goModuleDir downloads a module through the Go module proxy (or finds it in
// the module cache) and returns its directory.
func goModuleDir(t testing.TB, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = t.TempDir() // outside any module: no go.mod is changed
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", module, err, out)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s: %s %v", module, out, err)
	}
	return m.Dir
}

// listening reports whether process pid holds a TCP socket listening on port
// (on any port when port is 0), from /proc/net/tcp{,6} and /proc/<pid>/fd.
func listening(pid, port int) bool {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			local := fields[1]
			if port != 0 && !strings.HasSuffix(local, fmt.Sprintf(":%04X", port)) {
				continue
			}
			inodes["socket:["+fields[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[target] {
			return true
		}
	}
	return false
}
