// Command gen writes the generated files of internal/gen, or with -check
// fails when one of them differs from what it would write. `make generate`
// and `make lint` run it from the module root.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/edgecanary/edgecanary/internal/gen"
)

func main() {
	check := flag.Bool("check", false, "fail when a generated file is not up to date, write nothing")
	flag.Parse()
	files, err := gen.Generate(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	stale := false
	for _, n := range names {
		old, _ := os.ReadFile(filepath.Clean(n))
		if bytes.Equal(old, files[n]) {
			continue
		}
		if *check {
			fmt.Fprintf(os.Stderr, "gen: %s is not what internal/gen renders: run make generate\n", n)
			stale = true
			continue
		}
		if err := os.WriteFile(n, files[n], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", n)
	}
	if stale {
		os.Exit(1)
	}
}
