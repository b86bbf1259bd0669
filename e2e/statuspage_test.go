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

	dom, console := runChromium(t, chromium, "--virtual-time-budget=6000", "--dump-dom", sc.metrics+"/")
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
	noConsoleMessages(t, console)
}

// runChromium runs Debian's headless Chromium with args (a URL last) and
// returns its standard output and its log.
func runChromium(t *testing.T, chromium string, args ...string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(context.Background(), chromium, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
	}, args...)...)
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
	return stdout.String(), stderr.String()
}

// noConsoleMessages fails on any console message: the page logs nothing when
// all is well, and Chromium prints every console message (console.error,
// uncaught exceptions, CSP violations) as a CONSOLE line.
func noConsoleMessages(t *testing.T, log string) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, ":CONSOLE") || strings.Contains(line, "Content Security Policy") {
			t.Errorf("console message: %s", line)
		}
	}
}
