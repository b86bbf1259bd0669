package e2e

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStatusPageInChromium loads the sidecar's status page in headless
// Chromium (Debian's package) while traffic flows through the real Traefik:
// the page must show each version's numbers, and the console no errors.
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: apt-get install --no-install-recommends chromium")
	}
	stable, canary := newBackend(t, "stable"), newBackend(t, "canary")
	sc := startSidecar(t)
	tr := startTraefik(t, reportingDynamic(stable.URL, canary.URL, sc.ingest, ""), traefikOptions{})
	tr.waitRouter("shop")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := client("")
		for ctx.Err() == nil {
			if res, err := c.Get(tr.web + "/"); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(4 * time.Second) // a few sampled seconds of history for the rates

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(context.Background(), chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0",
		"--virtual-time-budget=6000", "--dump-dom", sc.metrics+"/")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { runErr <- cmd.Wait() }()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("chromium did not finish\n%s", stderr.String())
	}
	dom := stdout.String()
	for _, version := range []string{"stable", "canary"} {
		row := regexp.MustCompile(`<tr data-version="` + version + `">(.*?)</tr>`).FindStringSubmatch(dom)
		if row == nil {
			t.Fatalf("the page shows no row for %s:\n%s", version, dom)
		}
		// A rate with one decimal above zero, and a latency in ms.
		if !regexp.MustCompile(`<td>[1-9][0-9]*\.[0-9]</td>|<td>0\.[1-9]</td>`).MatchString(row[1]) || !strings.Contains(row[1], " ms</td>") {
			t.Errorf("%s row lacks its numbers: %s", version, row[1])
		}
	}
	if e := regexp.MustCompile(`<p id="error">([^<]*)</p>`).FindStringSubmatch(dom); e == nil || e[1] != "" {
		t.Errorf("the page shows an error: %v", e)
	}
	// The page logs nothing when all is well; Chromium prints every console
	// message (console.error, uncaught exceptions) as a CONSOLE line.
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, ":CONSOLE") {
			t.Errorf("console message: %s", line)
		}
	}
}
