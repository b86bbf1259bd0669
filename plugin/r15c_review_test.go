package plugin

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Hostile review of issue 15's change 992c70c (the give-back of unspent
// lease tokens, the pool's handoff). Each test fails on 992c70c and shows
// one defect; TestR15cPoolWaiterWaitsTwiceReadTimeout fails on 1942c0a too
// (older than this change). They fail compiled, with -race and under Yaegi.

// TestR15cGiveBackAfterRefillOverfills: gcraScript subtracts back*interval
// from whatever tat is stored, floored at now. Tokens taken long enough ago
// have already come back with time (the bucket refilled: tat fell behind now
// and was floored there), so giving them back again frees tokens that never
// existed. Sequence with a burst of 10, one token per 10 ms: replica A takes
// 5 and never spends them; 60 ms later the bucket is full; replica B takes
// the whole burst (10); A then gives back its 5 and takes them at once. 15
// tokens in about a millisecond, against burst + T/interval = 10.
func TestR15cGiveBackAfterRefillOverfills(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	const intervalUs = 10000                   // 10 ms
	g := newGCRACall(intervalUs, 9*intervalUs) // burst 10
	// A leases 5 and keeps them (a lease never spent).
	rA, err := c.takeGCRA(g, "r15c:", "k", 5, 0, 0)
	if err != nil || rA.granted != 5 {
		t.Fatalf("A's lease: %d, %v", rA.granted, err)
	}
	time.Sleep(6 * intervalUs * time.Microsecond) // the bucket is full again: A's 5 came back with time
	start := time.Now()
	rB, err := c.takeGCRA(g, "r15c:", "k", 10, 0, 0) // B: the whole burst
	gotB := rB.granted
	if err != nil {
		t.Fatal(err)
	}
	rA2, err := c.takeGCRA(g, "r15c:", "k", 10, 5, rA.tatUs) // A gives back its 5 with its next call
	gotA := rA2.granted
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	admitted := gotB + gotA
	bound := 10 + int64(el/(intervalUs*time.Microsecond))
	t.Logf("B took %d, then A (giving back 5) took %d, in %v; bound %d", gotB, gotA, el, bound)
	if admitted > bound {
		t.Errorf("%d tokens handed out in %v, above burst + T/interval = %d: the give-back freed tokens the refill had already returned", admitted, el, bound)
	}
}

// TestR15cBoundAcrossReplicasWithGiveBack: the same through the plugin,
// with real replicas (average 100/s, burst 64: lease 16, life 160 ms). A
// client sends two requests to each of four replicas A1..A4 (each then holds
// 15 unspent tokens), pauses until the leases end and the bucket is full,
// sends one request to each (the new lease replaces the old one: 15 each go
// to unspent), then bursts on replica B until refused, then on A1..A4 until
// refused. Each A gives back its 15 to a bucket B has emptied.
func TestR15cBoundAcrossReplicasWithGiveBack(t *testing.T) {
	srv := newTestRedis(t, false)
	cfg := sharedConfig(srv.addr(), 100, "1s", 64)
	ls := replicas(t, 5, "r15c-giveback@file", cfg)
	if ls[0].shared.lease != 16 || ls[0].shared.life != int64(160*time.Millisecond) {
		t.Fatalf("lease %d, life %v; want 16, 160ms", ls[0].shared.lease, time.Duration(ls[0].shared.life))
	}
	as, b := ls[:4], ls[4]
	const client = "mallory"
	for i, a := range as {
		for j := 0; j < 2; j++ {
			if code, _ := sharedRequest(a, client); code != http.StatusOK {
				t.Fatalf("A%d request %d: %d", i+1, j, code)
			}
		}
		time.Sleep(200 * time.Millisecond) // its lease ends, the bucket refills
	}
	start := time.Now()
	admitted := 0
	for i, a := range as {
		if code, _ := sharedRequest(a, client); code != http.StatusOK {
			t.Fatalf("A%d after the pause: %d", i+1, code)
		}
		admitted++
	}
	drain := func(l *limiter) int {
		n := 0
		for n < 10000 {
			if code, _ := sharedRequest(l, client); code != http.StatusOK {
				return n
			}
			n++
		}
		return n
	}
	byB := drain(b)
	admitted += byB
	var byA []int
	for _, a := range as {
		n := drain(a)
		byA = append(byA, n)
		admitted += n
	}
	el := time.Since(start)
	returned := atomic.LoadUint64(&b.shared.counters.returned) // the middleware's counters: one for all five here
	bound := 64 + int(el/(10*time.Millisecond))
	t.Logf("admitted %d in %v (B %d, then A %v), %d tokens given back; bound burst + T/interval = %d", admitted, el, byB, byA, returned, bound)
	if admitted > bound {
		t.Errorf("%d requests admitted across replicas in %v, above burst + T/interval = %d", admitted, el, bound)
	}
}

// r15cDropProxy forwards TCP to a real Redis. While armed, it forwards one
// command, lets Redis run it, reads the reply and closes the client's
// connection without passing the reply on: the link broke after the server
// ran the command (a proxy or load balancer in front of Redis, a CLIENT KILL
// in the same event-loop turn).
type r15cDropProxy struct {
	ln    net.Listener
	armed int32
	drops int32
}

func r15cNewDropProxy(t *testing.T, backend string) *r15cDropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &r15cDropProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			cl, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(cl, backend)
		}
	}()
	return p
}

func (p *r15cDropProxy) serve(cl net.Conn, backend string) {
	defer cl.Close()
	be, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer be.Close()
	// The reply's bytes as read from Redis, passed on as they are: one
	// command is in flight at a time, so they are exactly its reply.
	var raw bytes.Buffer
	cbr, bbr := bufio.NewReader(cl), bufio.NewReader(io.TeeReader(be, &raw))
	for {
		cmd, err := r15bReadCommand(cbr)
		if err != nil {
			return
		}
		if _, err := be.Write(appendRedisCommand(nil, cmd)); err != nil {
			return
		}
		raw.Reset()
		if _, err := readRedisReply(bbr, 0); err != nil {
			return
		}
		if atomic.CompareAndSwapInt32(&p.armed, 1, 0) {
			atomic.AddInt32(&p.drops, 1)
			return // ran, reply lost: an orderly close before any byte
		}
		if _, err := cl.Write(raw.Bytes()); err != nil {
			return
		}
	}
}

// TestR15cRetryGivesBackTwice: a call on a pooled connection that meets an
// orderly close before any byte of the reply is sent again on a new
// connection (the stale retry). The commit says of it: a server that ran the
// command "would run it twice: for the rate limit, one request counted
// twice". With back > 0 it is no longer the safe side: the second run gives
// the same tokens back again. Burst 10, no refill: take all 10, then one
// call taking 1 and giving back 4 should leave 3; the dropped reply and the
// retry leave 6.
func TestR15cRetryGivesBackTwice(t *testing.T) {
	srv := newTestRedis(t, false)
	p := r15cNewDropProxy(t, srv.addr())
	c := testRedisClient(t, redisOptions{Endpoints: []string{p.ln.Addr().String()}, PoolSize: 1, ReadTimeout: time.Second})
	g := newGCRACall(1000000000, 9000000000) // a burst of 10, one token a second more
	r0, err := c.takeGCRA(g, "r15c:", "twice", 10, 0, 0)
	if err != nil || r0.granted != 10 {
		t.Fatalf("the burst: %d, %v", r0.granted, err)
	}
	atomic.StoreInt32(&p.armed, 1)
	r1, err := c.takeGCRA(g, "r15c:", "twice", 1, 4, r0.tatUs)
	granted, remaining := r1.granted, r1.remaining
	if atomic.LoadInt32(&p.drops) != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", p.drops)
	}
	t.Logf("take 1 giving back 4, the first reply lost: %d granted, %d left, %v", granted, remaining, err)
	if err == nil && remaining > 3 {
		t.Errorf("%d tokens left after taking 1 and giving back 4 of an empty bucket, want at most 3: the retry gave the 4 back twice", remaining)
	}
}

// TestR15cPoolWaiterWaitsTwiceReadTimeout: with Redis paused (SIGSTOP) and
// PoolSize 1, two clients' first requests arrive together. The first takes
// the place, its call times out after readTimeout, and the freed place is
// handed to the second, which has already waited that long and now dials
// and waits readTimeout again for its own call: 2 x readTimeout for one
// request, where the issue allows readTimeout.
func TestR15cPoolWaiterWaitsTwiceReadTimeout(t *testing.T) {
	srv := newTestRedis(t, false)
	cfg := sharedConfig(srv.addr(), 1, "1h", 3)
	cfg.Redis.ReadTimeout = "300ms"
	cfg.Redis.PoolSize = 1
	cfg.Redis.OnError = "allow"
	l := replicas(t, 1, "r15c-pool@file", cfg)[0]
	srv.signal("STOP")
	srv.stopped = true
	var wg sync.WaitGroup
	took := make([]time.Duration, 2)
	for i := range took {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			at := time.Now()
			sharedRequest(l, "client"+strconv.Itoa(i))
			took[i] = time.Since(at)
		}(i)
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	srv.signal("CONT")
	srv.stopped = false
	t.Logf("the two requests took %v", took)
	for i, d := range took {
		if d > 450*time.Millisecond {
			t.Errorf("request %d waited %v for the store, readTimeout 300ms", i, d)
		}
	}
}
