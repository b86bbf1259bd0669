// Package stage lays out the plugin as Traefik loads a local plugin, finds
// the cached Traefik build and writes Traefik's static configuration
// (traefik.yml.tmpl). The tests, the benchmark and the demo share it.
package stage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ModuleName is the plugin's module, as registered in Traefik's static config.
const ModuleName = "github.com/edgecanary/edgecanary"

// TraefikVersion is the Traefik that the tests, the benchmark and the demo run.
const TraefikVersion = "v3.6.12"

// KubeVersion is the kube-apiserver that the Kubernetes e2e test runs
// (make kube-apiserver builds it).
const KubeVersion = "v1.34.3"

// pluginDirs are the module's top-level directories that Traefik needs: the
// plugin, the report format it shares with the sidecar, and the vendored
// dependencies.
var pluginDirs = map[string]bool{"plugin": true, "wire": true, "vendor": true}

// Plugin copies what Traefik reads of the plugin from the module at root into
// <dir>/src/<ModuleName>: .traefik.yml, go.mod, the packages the plugin
// imports (pluginDirs, without tests) and vendor/. dir is then a GOPATH for
// Yaegi, or Traefik's plugins-local.
func Plugin(root, dir string) error {
	dst := filepath.Join(dir, "src", filepath.FromSlash(ModuleName))
	for _, f := range []string{".traefik.yml", "go.mod", "go.sum"} {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			if err := copyFile(filepath.Join(root, f), filepath.Join(dst, f)); err != nil {
				return err
			}
		}
	}
	return filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		top := strings.SplitN(rel, string(filepath.Separator), 2)[0]
		if info.IsDir() {
			if rel != "." && !pluginDirs[top] {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "." || !pluginDirs[top] || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// CacheDir is where the Traefik build and tools are cached: $XDG_CACHE_HOME/edgecanary
// or ~/.cache/edgecanary.
func CacheDir() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "edgecanary")
}

// TraefikBinary is the cached Traefik build (make traefik), or $EDGECANARY_TRAEFIK.
func TraefikBinary() (string, error) {
	p := os.Getenv("EDGECANARY_TRAEFIK")
	if p == "" {
		p = filepath.Join(CacheDir(), "traefik-"+TraefikVersion)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no Traefik %s at %s: run `make traefik` first (or set EDGECANARY_TRAEFIK)", TraefikVersion, p)
	}
	return p, nil
}

// KubeAPIServerBinary is the cached kube-apiserver build (make
// kube-apiserver), or $EDGECANARY_KUBE_APISERVER.
func KubeAPIServerBinary() (string, error) {
	p := os.Getenv("EDGECANARY_KUBE_APISERVER")
	if p == "" {
		p = filepath.Join(CacheDir(), "kube-apiserver-"+KubeVersion)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no kube-apiserver %s at %s: run `make kube-apiserver` first (or set EDGECANARY_KUBE_APISERVER)", KubeVersion, p)
	}
	return p, nil
}

// RSS is a process's resident memory in bytes, from /proc (0 when unknown).
func RSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
