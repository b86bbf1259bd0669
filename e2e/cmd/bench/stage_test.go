package main

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestStageFloorCopiesEveryGoFile: the reference plugin is staged as a
// local plugin for Traefik, whose Yaegi compiles the package from the files
// staged; the status wrapper lives in status_gen.go (rendered by
// internal/gen), so a stage without it is a package that does not compile
// (undefined: statusWriter), and the floor routers never load.
func TestStageFloorCopiesEveryGoFile(t *testing.T) {
	src := filepath.Join("floor")
	dst := t.TempDir()
	if err := stageFloor(src, dst); err != nil {
		t.Fatal(err)
	}
	list := func(dir string) []string {
		m, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		sort.Strings(m)
		return m
	}
	want, got := list(src), list(dst)
	if len(want) < 2 || len(got) != len(want) {
		t.Fatalf("staged %v, the floor has %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("staged %v, the floor has %v", got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, ".traefik.yml")); err != nil {
		t.Fatal(err)
	}
}
