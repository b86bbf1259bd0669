package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Hostile review of issue 15's change 00f1de7..dfd61bf. Each test fails on
// dfd61bf and shows one defect.

// r15bServer is a fake Redis that reads whole RESP commands and answers each
// with reply(cmd) (cmd[0] upper-cased). It counts the commands by name.
type r15bServer struct {
	ln     net.Listener
	mu     sync.Mutex
	counts map[string]int
}

func r15bFakeRedis(t *testing.T, reply func(cmd []string) string) *r15bServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &r15bServer{ln: ln, counts: map[string]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func(cn net.Conn) {
				defer cn.Close()
				br := bufio.NewReader(cn)
				for {
					cmd, err := r15bReadCommand(br)
					if err != nil {
						return
					}
					cmd[0] = strings.ToUpper(cmd[0])
					s.mu.Lock()
					s.counts[cmd[0]]++
					s.mu.Unlock()
					if _, err := io.WriteString(cn, reply(cmd)); err != nil {
						return
					}
				}
			}(conn)
		}
	}()
	return s
}

func (s *r15bServer) addr() string { return s.ln.Addr().String() }

func (s *r15bServer) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[name]
}

func r15bReadCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array header %q", line)
	}
	cmd := make([]string, n)
	for i := range cmd {
		h, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(h[1:]))
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		cmd[i] = string(buf[:size])
	}
	return cmd, nil
}

// TestR15bNoscriptFallbackReplyIsNotRangeChecked: takeGCRA checks the
// script's reply (granted within 0..n, wait and remaining not negative) only
// when EVALSHA answered; after NOSCRIPT the EVAL's reply goes back through
// gcraReply unchecked. A server that says NOSCRIPT and then grants a million
// tokens for n = 1 gives this replica a lease of a million (far past the
// bound), and leaseStep's q then indexes byQ (length burst+1) past its end:
// a panic on the request path of every generated D path with the RateLimit
// fields on.
func TestR15bNoscriptFallbackReplyIsNotRangeChecked(t *testing.T) {
	srv := r15bFakeRedis(t, func(cmd []string) string {
		switch cmd[0] {
		case "EVALSHA":
			return "-NOSCRIPT No matching script. Please use EVAL.\r\n"
		case "EVAL":
			return "*4\r\n:1000000\r\n:0\r\n:0\r\n:1700000000000000\r\n"
		}
		return "+OK\r\n"
	})
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, ReadTimeout: time.Second})
	r, err := c.takeGCRA(newGCRACall(25000, 750000), "r15b:", "k", 1, 0, 0)
	granted := r.granted
	if err == nil {
		t.Errorf("takeGCRA(n=1) after NOSCRIPT: granted %d, no error; the EVALSHA path rejects a reply out of range", granted)
	}

	// The same server behind the generated path with the limiter shared
	// through Redis and the RateLimit fields on.
	cfg := CreateConfig()
	cfg.Versions = map[string]VersionConfig{"stable": {Weight: 100}}
	cfg.RateLimit = rlConfig(40, "1s", 40) // interval 25ms, window 1s: byQ covers q 0..40
	cfg.RateLimit.Headers = true
	cfg.RateLimit.Redis = defaultRedisConfig()
	cfg.RateLimit.Redis.Endpoints = []string{srv.addr()}
	h := reviewCanary(t, stableNext, cfg, "LD", true)
	var panics, ok int
	for i := 0; i < 3; i++ {
		func() {
			defer func() {
				if p := recover(); p != nil {
					panics++
					if panics == 1 {
						t.Errorf("request %d panicked on the request path: %v", i, p)
					}
				}
			}()
			req := httptest.NewRequest(http.MethodGet, "http://shop.test/", nil)
			req.RemoteAddr = "192.0.2.7:4000"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code == http.StatusOK {
				ok++
			}
		}()
	}
	t.Logf("3 requests: %d panics, %d admitted", panics, ok)
}

// TestR15bPoolWaiterAfterCloseWaitsReadTimeout: close() wakes no caller
// waiting for a connection, and a connection given back after close (put)
// frees its place without a signal. A caller that waits when the client is
// closed (a reload replaced the limiter) stays until ReadTimeout and fails
// with errRedisPoolTimeout, not errRedisClosed; and when a connection is
// discarded instead, the woken waiter dials a new connection on the closed
// client.
func TestR15bPoolWaiterAfterCloseWaitsReadTimeout(t *testing.T) {
	srv := newTestRedis(t, false)
	for _, giveBack := range []string{"put", "discard"} {
		c := newRedisClient(redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1, ReadTimeout: 2 * time.Second})
		held, err := c.get(false, time.Now().Add(c.opts.ReadTimeout))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			cn   *redisConn
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			cn, err := c.get(false, time.Now().Add(c.opts.ReadTimeout))
			done <- result{cn, err, time.Since(start)}
		}()
		for { // the caller waits in getWait
			c.mu.Lock()
			w := c.waiting
			c.mu.Unlock()
			if w == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		c.close()
		time.Sleep(20 * time.Millisecond)
		if giveBack == "put" {
			c.put(held)
		} else {
			c.discard(held)
		}
		r := <-done
		if r.cn != nil {
			c.put(r.cn)
		}
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		t.Logf("%s after close: the waiter got conn=%v err=%v after %v; open %d", giveBack, r.cn != nil, r.err, r.took, open)
		if !errors.Is(r.err, errRedisClosed) || r.took > 500*time.Millisecond {
			t.Errorf("%s after close: the waiting caller got (conn %v, %v) after %v; want errRedisClosed at once", giveBack, r.cn != nil, r.err, r.took)
		}
	}
}

// TestR15bPoolWaitersStarveUnderLoad: with a small pool and callers that
// keep calling, a caller that has to wait may never get a connection: put
// gives the connection back to the idle stack and only signals the
// waiter, and whoever calls get first (the caller that just gave it back,
// calling again) takes it from the stack before the woken waiter runs. The
// waiter times out after ReadTimeout (a store error, then the backoff for
// every key) while the pool serves others. (The channel pool handed a
// connection to a waiting receiver directly.) Measured with 16 callers on
// a pool of 1: 17 to 40 calls of ~13,000 time out after 300 ms compiled;
// in Yaegi the slowest call takes 240 to 290 ms (28 ms before).
func TestR15bPoolWaitersStarveUnderLoad(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1, ReadTimeout: 300 * time.Millisecond})
	g := newGCRACall(1, 1000000000)
	var calls, timeouts int64
	var maxTook int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(1500 * time.Millisecond)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				start := time.Now()
				_, err := c.takeGCRA(g, "r15b:starve:", strconv.Itoa(i), 1, 0, 0)
				took := int64(time.Since(start))
				atomic.AddInt64(&calls, 1)
				if errors.Is(err, errRedisPoolTimeout) {
					atomic.AddInt64(&timeouts, 1)
				} else if err != nil {
					t.Error(err)
					return
				}
				for {
					m := atomic.LoadInt64(&maxTook)
					if took <= m || atomic.CompareAndSwapInt64(&maxTook, m, took) {
						break
					}
				}
			}
		}(i)
	}
	wg.Wait()
	t.Logf("%d calls, %d pool timeouts (300ms each), slowest call %v", calls, timeouts, time.Duration(maxTook))
	if timeouts > 0 {
		t.Errorf("%d of %d calls waited the whole readTimeout for a pool of 1 that served the others meanwhile", timeouts, calls)
	}
	// The channel pool of 00f1de7, same test: slowest 9 ms compiled, 28 ms
	// in Yaegi, no timeout.
	if maxTook > int64(150*time.Millisecond) {
		t.Errorf("slowest call %v, with 16 callers of calls of well under a millisecond", time.Duration(maxTook))
	}
}

// TestR15bNoscriptSendsEvalshaTwice: takeGCRA meets NOSCRIPT (a restart,
// SCRIPT FLUSH, a failover) and hands over to eval, which sends the same
// EVALSHA again, meets NOSCRIPT again, and only then sends EVAL: three
// round trips where two do, on every call that meets the missing script.
// Measured on the real redis-server with INFO commandstats.
func TestR15bNoscriptSendsEvalshaTwice(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1})
	mustDo(t, c, "SCRIPT", "FLUSH")
	mustDo(t, c, "CONFIG", "RESETSTAT")
	if _, err := c.takeGCRA(newGCRACall(1000, 9000), "r15b:", "noscript", 1, 0, 0); err != nil {
		t.Fatal(err)
	}
	stat := func(name string) string {
		info, _ := mustDo(t, c, "INFO", "commandstats").(string)
		for _, line := range strings.Split(info, "\r\n") {
			if strings.HasPrefix(line, "cmdstat_"+name+":") {
				return line
			}
		}
		return "cmdstat_" + name + ": none"
	}
	evalsha, eval := stat("evalsha"), stat("eval")
	t.Logf("one takeGCRA after SCRIPT FLUSH: %s; %s", evalsha, eval)
	if !strings.Contains(evalsha, ":calls=1,") {
		t.Errorf("one store call after SCRIPT FLUSH sent EVALSHA more than once: %s", evalsha)
	}
}

// TestR15bLeaseTakesTwiceWhatASteadyClientUses: a client at 70% of its rate
// on one replica takes about twice what it uses from the store. nextLease
// asks for 1.5 lives' worth at the last lease's rate; the refresh starts
// when a quarter of the life is left, and the new lease replaces what is
// left of the old one, which is dropped (counted as spent). So the store
// hands out ~2x the client's rate, the key's shared bucket runs empty
// although the client is at 70% of its limit, and the same client's burst
// on a second replica is then refused: a client below its rate is
// rejected, and the leased counter runs ahead of the admitted requests
// without bound (not "by at most one lease").
func TestR15bLeaseTakesTwiceWhatASteadyClientUses(t *testing.T) {
	srv := newTestRedis(t, false)
	ls := replicas(t, 2, "r15b-waste@file", sharedConfig(srv.addr(), 1000, "1s", 64)) // interval 1ms, lease 16, reserve 20 (life 20ms): the store's burst is 44
	a, b := ls[0], ls[1]
	// Tokens taken and not given back: the rest of replaced leases goes
	// back with the next call (counters.returned).
	net := func() int64 {
		return int64(atomic.LoadUint64(&a.counters.leased)) - int64(atomic.LoadUint64(&a.counters.returned))
	}
	before := net()
	wait := pacer(time.Second / 700) // 70% of the rate
	start := time.Now()
	admitted := 0
	for i := 0; i < 1050; i++ { // 1.5 s
		wait()
		if code, _ := sharedRequest(a, "carol"); code == http.StatusOK {
			admitted++
		}
	}
	time.Sleep(5 * time.Millisecond) // a refresh in flight lands
	leased := int(net() - before)
	// The same client, now at once on the second replica: the store's
	// burst of 44 less the first replica's lease (at most 16) is its due.
	burstOK := 0
	for i := 0; i < 28; i++ {
		if code, _ := sharedRequest(b, "carol"); code == http.StatusOK {
			burstOK++
		}
	}
	t.Logf("replica A: %d admitted at 70%% of the rate in %v, %d tokens leased; then replica B: %d of a burst of 28 admitted",
		admitted, time.Since(start), leased, burstOK)
	// Not asserted: tokens leased less those given back and those admitted.
	// The rest of a lease whose slots time has passed is not given back: it
	// came back with time, and costs no other replica a token (what B's
	// burst below measures).
	if burstOK < 28 {
		t.Errorf("after 1.5 s at 70%% of its rate, the client's burst of 28 on another replica got %d: the bucket was drained by dropped leases", burstOK)
	}
}

// TestR15bHugeWaitOverflows: takeGCRA bounds granted and remaining but
// not wait from above: any 18 digits pass. fetchLease then multiplies the
// microseconds by 1000 and adds now: a wait of 9,223,372,036,854,775 µs
// (which fits in int64 as nanoseconds) makes emptyUntil wrap negative, so
// the key is not known empty and every request makes another store call,
// and the 429's Retry-After wraps negative too.
func TestR15bHugeWaitOverflows(t *testing.T) {
	srv := r15bFakeRedis(t, func(cmd []string) string {
		if cmd[0] == "EVALSHA" {
			return "*4\r\n:0\r\n:9223372036854775\r\n:0\r\n:1700000000000000\r\n"
		}
		return "+OK\r\n"
	})
	l := replicas(t, 1, "r15b-wait@file", sharedConfig(srv.addr(), 1000, "1s", 64))[0]
	var retryAfter []string
	for i := 0; i < 3; i++ {
		code, h := sharedRequest(l, "dave")
		retryAfter = append(retryAfter, fmt.Sprintf("%d %q", code, h.Get("Retry-After")))
	}
	calls := srv.count("EVALSHA")
	t.Logf("3 requests: %v; %d store calls", retryAfter, calls)
	for _, ra := range retryAfter {
		if strings.Contains(ra, `"-`) {
			t.Errorf("a 429 with a negative Retry-After: %s", ra)
			break
		}
	}
	if calls != 1 {
		t.Errorf("%d store calls for 3 requests of a key the store said is empty for ages: want 1", calls)
	}
}
