package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisServer is a real redis-server (Debian's) on a free loopback port.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (apt-get install --no-install-recommends redis-server; .ci/run does)")
	}
	port := freePort(t)
	s := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port)}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
	waitFor(t, 5*time.Second, "redis-server", func() bool {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

// TestTraefikReplicasShareOneLimit: three real Traefik processes with the
// same middleware and rateLimit.redis admit one client's burst once, not
// three times; with Redis stopped (SIGSTOP) or killed, no request gets a 5xx
// or waits more than readTimeout, and each replica limits on its own
// (onError: local); once Redis answers again the limit is shared again.
func TestTraefikReplicasShareOneLimit(t *testing.T) {
	rd := startRedis(t)
	backendSrv := newBackend(t, "stable")
	limit := fmt.Sprintf("          rateLimit:\n            average: 1\n            period: 1m\n            burst: 10\n"+
		"            sourceCriterion:\n              requestHeaderName: X-Client\n"+
		"            redis:\n              endpoints: [%q]\n              readTimeout: 300ms\n", rd.addr)
	dynamic := routesDynamic([]route{{host: "shop.test", backend: backendSrv.URL, pluginYAML: limit}})
	var trs []*traefikProc
	for i := 0; i < 3; i++ {
		tr := startTraefik(t, dynamic, traefikOptions{})
		tr.waitRouter("r0")
		trs = append(trs, tr)
	}
	c := client("127.0.0.1")
	send := func(client string, n int) (ok, limited int, slowest time.Duration) {
		t.Helper()
		for i := 0; i < n; i++ {
			at := time.Now()
			res := getHost(t, c, trs[i%3].web, "shop.test", map[string]string{"X-Client": client})
			if d := time.Since(at); d > slowest {
				slowest = d
			}
			switch res.StatusCode {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
				if res.Header.Get("Retry-After") == "" {
					t.Errorf("429 without Retry-After")
				}
			default:
				t.Fatalf("request %d of %s: status %d", i, client, res.StatusCode)
			}
		}
		return ok, limited, slowest
	}

	// One token a minute, burst 10: 30 requests over three replicas admit 10
	// (per replica, without Redis, they would admit 30).
	if ok, limited, _ := send("alice", 30); ok != 10 || limited != 20 {
		t.Fatalf("shared: %d admitted, %d limited over three replicas, want 10 and 20", ok, limited)
	}

	// Redis stopped: each replica decides alone, without waiting for it.
	if err := rd.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ok, limited, slowest := send("bob", 60)
	if ok != 30 || limited != 30 || slowest > 2*time.Second {
		t.Errorf("Redis stopped: %d admitted, %d limited, slowest %v; want 10 per replica, none slower than about readTimeout", ok, limited, slowest)
	}
	if err := rd.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Back to one limit once each replica's backoff (5 s at most) has passed.
	waitFor(t, 15*time.Second, "the replicas to share the limit again", func() bool {
		ok, _, _ := send(fmt.Sprintf("carol-%d", time.Now().UnixNano()), 30)
		return ok == 10
	})

	// Redis killed: the same, never a 5xx.
	_ = rd.cmd.Process.Kill()
	if ok, _, slowest := send("dave", 30); ok != 30 || slowest > 2*time.Second {
		t.Errorf("Redis killed: %d admitted of 30 (10 per replica), slowest %v", ok, slowest)
	}
	for _, tr := range trs {
		if !strings.Contains(tr.logs.String(), "rate-limit store (Redis) failed") {
			t.Errorf("a replica did not log the store failure")
		}
	}
}
