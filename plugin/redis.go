package plugin

import (
	"bufio"
	"crypto/sha1" // Redis names a script by its SHA1; no security rests on it
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file is a small Redis client for the shared rate limit (issue 15): RESP2
// over net and crypto/tls, a bounded pool, pipelining, EVALSHA with a fallback
// to EVAL, and the GCRA script that takes tokens on Redis's own clock. It uses
// the standard library only, so that Traefik's Yaegi interpreter runs it.

// Defaults of redisOptions, the same as the config contract's.
const (
	redisDefaultEndpoint     = "localhost:6379"
	redisDefaultDialTimeout  = 5 * time.Second
	redisDefaultReadTimeout  = 3 * time.Second
	redisDefaultWriteTimeout = 3 * time.Second
	// redisPoolPerProc times GOMAXPROCS is the default pool size.
	redisPoolPerProc = 10
)

// Bounds on what a server may make us read, so a broken or hostile server
// cannot make the client allocate without limit.
const (
	redisMaxBulk  = 1 << 20 // bytes in one bulk string
	redisMaxArray = 1024    // elements in one array
	redisMaxDepth = 8       // nesting of arrays
	redisReadBuf  = 4096    // the bufio buffer, and so the longest line (+, -, :, $, * header)
)

var (
	errRedisPoolTimeout = errors.New("redis: no free connection in the pool within the read timeout")
	errRedisClosed      = errors.New("redis: client closed")
	// errRedisServer is wrapped by every error reply of the server
	// ("redis: NOSCRIPT ...", "redis: WRONGPASS ..."), so that callers tell
	// the server's answer from an I/O error with errors.Is. After an error
	// reply the connection is still in step and is kept.
	//
	// It is a compiled error, not a type of ours: under Yaegi, a plain string
	// passes the type assertion of a named string type (v.(redisError) holds
	// for "OK"), and an interpreted struct type that travels as an error is
	// wrapped, fails its type assertion, or panics in reflect.Set.
	errRedisServer = errors.New("redis")
)

// redisOptions are the parsed settings of the client. Zero values take the
// defaults of the config contract (see newRedisClient).
type redisOptions struct {
	// Endpoints are host:port addresses. The client connects to one at a
	// time (see redisClient.dial). Default: localhost:6379, as in Traefik.
	Endpoints []string
	// Username and Password are sent with AUTH on every new connection:
	// "AUTH username password" (an ACL user), or "AUTH password" when
	// Username is empty (requirepass). No AUTH when both are empty.
	Username, Password string
	// DB is selected on every new connection when it is not 0.
	DB int
	// DialTimeout bounds the TCP connect, the TLS handshake included.
	// Default 5s.
	DialTimeout time.Duration
	// ReadTimeout bounds a round trip, from the write of the commands to
	// the last byte of their replies, and, separately, the wait for a free
	// connection of the pool. A round trip slower than this fails. So a call
	// takes at most ReadTimeout (the wait) + DialTimeout (when it needs a new
	// connection) + ReadTimeout, and twice that when a stale connection is
	// retried (see redisClient). Default 3s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the write of a call's commands. Default 3s.
	WriteTimeout time.Duration
	// PoolSize bounds the open connections. Default 10 x GOMAXPROCS.
	PoolSize int
	// TLS, when not nil, makes every connection TLS (see redisTLSConfig).
	// An empty ServerName is taken from the endpoint's host.
	TLS *tls.Config
}

// redisServerError is the error of an error reply.
func redisServerError(reply string) error {
	return fmt.Errorf("%w: %s", errRedisServer, reply)
}

// replyError returns the error of an error reply, nil for other replies.
// (Under Yaegi, v.(error) on a nil interface panics instead of failing.)
func replyError(v interface{}) error {
	if v == nil {
		return nil
	}
	e, _ := v.(error)
	return e
}

// isRedisServerError tells whether err is an error reply with this code
// (the reply's first word: NOSCRIPT, WRONGPASS, ERR).
func isRedisServerError(err error, code string) bool {
	return errors.Is(err, errRedisServer) && strings.HasPrefix(err.Error(), "redis: "+code+" ")
}

// redisConn is one connection of the pool.
type redisConn struct {
	nc   net.Conn
	br   *bufio.Reader
	wbuf []byte // the commands of a call, encoded; reused
	used bool   // it has served a call, so it may have gone stale in the pool
}

// redisClient is a bounded pool of Redis connections. It is safe for
// concurrent use.
//
// The pool counts its open connections (open, dialing included) and keeps
// the idle ones on a stack, under a mutex: a caller takes an idle
// connection, or dials while fewer than PoolSize are open, or waits at most
// ReadTimeout for one (getWait). A connection given back, or a place freed,
// while callers wait goes to one of them directly (handoff), so a newcomer
// cannot take it first and a waiter never starves. So no more than PoolSize
// connections are ever open, and connections are made only when needed (the
// constructor does no I/O). A mutex, not channels: under Yaegi a select
// costs about a hundred allocations, and every call takes and gives back a
// connection (measured: 113 allocations a get and put with channels, 7 with
// the mutex).
type redisClient struct {
	opts   redisOptions
	init   [][]string // AUTH and SELECT, sent in one write on each new connection
	next   int32      // index of the endpoint to dial first: the last that answered
	closed int32

	mu      sync.Mutex
	idle    []*redisConn    // the idle connections, reused before any dial, the last given back first
	open    int             // connections open or being dialed (or handed to a waiter to dial), at most PoolSize
	waiting int             // callers in getWait not yet handed a connection or a place
	handoff chan *redisConn // to a waiter: a connection, or nil for a place to dial (capacity PoolSize)
	done    chan struct{}   // closed by close: waiters give up
}

// newRedisClient returns a client for opts. It does no I/O: connections are
// made by the first calls that need them. Defaults: endpoints localhost:6379;
// timeouts 5s (dial), 3s (read), 3s (write); PoolSize 10 x GOMAXPROCS, the
// default of go-redis, so the pool is as large as that of Traefik's own
// rateLimit.redis with poolSize 0.
func newRedisClient(opts redisOptions) *redisClient {
	if len(opts.Endpoints) == 0 {
		opts.Endpoints = []string{redisDefaultEndpoint}
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = redisDefaultDialTimeout
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = redisDefaultReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = redisDefaultWriteTimeout
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = redisPoolPerProc * runtime.GOMAXPROCS(0)
	}
	c := &redisClient{opts: opts, handoff: make(chan *redisConn, opts.PoolSize), done: make(chan struct{})}
	switch {
	case opts.Username != "":
		c.init = append(c.init, []string{"AUTH", opts.Username, opts.Password})
	case opts.Password != "":
		c.init = append(c.init, []string{"AUTH", opts.Password})
	}
	if opts.DB != 0 {
		c.init = append(c.init, []string{"SELECT", strconv.Itoa(opts.DB)})
	}
	return c
}

// close closes the idle connections, and makes the busy ones close when they
// are given back, and the callers waiting for one give up. Calls after close
// fail with errRedisClosed.
func (c *redisClient) close() {
	if !atomic.CompareAndSwapInt32(&c.closed, 0, 1) {
		return
	}
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.open -= len(idle)
	c.mu.Unlock()
	close(c.done)
	for _, cn := range idle {
		_ = cn.nc.Close()
	}
}

// do sends one command and returns its reply: a string (simple or bulk), an
// int64, nil (a nil bulk string or array), or an []interface{} of these. An
// error reply is returned as the error, wrapping errRedisServer.
func (c *redisClient) do(args ...string) (interface{}, error) {
	replies, err := c.exec([][]string{args})
	if err != nil {
		return nil, err
	}
	if e := replyError(replies[0]); e != nil {
		return nil, e
	}
	return replies[0], nil
}

// pipeline sends cmds in one write and returns their replies, in order. An
// error reply is an error value (wrapping errRedisServer) among the replies;
// the error is an I/O or protocol error, and then no reply is returned.
func (c *redisClient) pipeline(cmds [][]string) ([]interface{}, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	return c.exec(cmds)
}

// exec runs cmds on a pooled connection, tried once more on a new one when
// the pooled connection turns out stale (see redisClient and finish).
func (c *redisClient) exec(cmds [][]string) ([]interface{}, error) {
	deadline := time.Now().Add(c.opts.ReadTimeout) // the whole call, the wait for a connection included
	for attempt := 0; ; attempt++ {
		cn, err := c.get(attempt > 0, deadline)
		if err != nil {
			return nil, err
		}
		replies, stale, err := c.roundTrip(cn, cmds, deadline)
		if c.finish(cn, attempt, stale, err) {
			return replies, err
		}
	}
}

// finish gives cn back after a call's attempt that ended with err, and
// reports whether the call is over: it succeeded, or it failed and is not
// tried again. Only a first attempt on a connection that had served calls
// before (it sat in the pool) and that failed stale (before any byte of a
// reply) is tried again, on a new connection (see redisClient). A
// connection whose attempt failed is discarded.
func (c *redisClient) finish(cn *redisConn, attempt int, stale bool, err error) bool {
	if err == nil {
		cn.used = true
		c.put(cn)
		return true
	}
	c.discard(cn)
	return attempt > 0 || !stale || !cn.used
}

// get returns an idle connection, or dials one while fewer than PoolSize
// are open, waiting at most ReadTimeout for either (getWait). Idle
// connections are reused first, so a pool opens only as many connections as
// calls run at once. With fresh, an idle connection is closed and a new one
// dialed in its place. The common case, an idle connection, is this
// function (under Yaegi a call costs about 30 allocations); the rest is
// getSlow's.
func (c *redisClient) get(fresh bool, deadline time.Time) (*redisConn, error) {
	if atomic.LoadInt32(&c.closed) != 0 {
		return nil, errRedisClosed
	}
	c.mu.Lock()
	if k := len(c.idle); k > 0 && !fresh {
		cn := c.idle[k-1]
		c.idle[k-1] = nil
		c.idle = c.idle[:k-1]
		c.mu.Unlock()
		return cn, nil
	}
	c.mu.Unlock()
	return c.getSlow(fresh, deadline)
}

// getSlow is get when no idle connection is at hand, or with fresh.
func (c *redisClient) getSlow(fresh bool, deadline time.Time) (*redisConn, error) {
	c.mu.Lock()
	if atomic.LoadInt32(&c.closed) != 0 { // under the lock: close serves only the waiters it sees
		c.mu.Unlock()
		return nil, errRedisClosed
	}
	cn, ok := c.take()
	if !ok {
		c.waiting++
		c.mu.Unlock()
		return c.getWait(fresh, deadline)
	}
	c.mu.Unlock()
	return c.ready(cn, fresh, deadline)
}

// take, with c.mu held, pops an idle connection (ok, cn set), or counts a
// connection to dial (ok, cn nil), or reports that PoolSize are busy.
func (c *redisClient) take() (cn *redisConn, ok bool) {
	if k := len(c.idle); k > 0 {
		cn = c.idle[k-1]
		c.idle[k-1] = nil
		c.idle = c.idle[:k-1]
		return cn, true
	}
	if c.open < c.opts.PoolSize {
		c.open++
		return nil, true
	}
	return nil, false
}

// ready makes what take (or a handoff) gave a connection to use: an idle
// one as it is (or, with fresh, closed and replaced), else a new one dialed.
// A failed dial, or a closed client, frees its place.
func (c *redisClient) ready(cn *redisConn, fresh bool, deadline time.Time) (*redisConn, error) {
	if atomic.LoadInt32(&c.closed) != 0 {
		if cn != nil {
			_ = cn.nc.Close()
		}
		c.release()
		return nil, errRedisClosed
	}
	if cn != nil {
		if !fresh {
			return cn, nil
		}
		_ = cn.nc.Close()
	}
	cn, err := c.dial(deadline)
	if err != nil {
		c.release()
		return nil, err
	}
	return cn, nil
}

// getWait is get when PoolSize connections are busy (counted in waiting):
// it waits at most ReadTimeout for a connection or a place handed to it. A
// waiter that gives up (its time is over, or the client closed) while no
// waiter is left uncounted was counted out by a handoff already on its way:
// it takes that one, so that no handoff is left behind.
func (c *redisClient) getWait(fresh bool, deadline time.Time) (*redisConn, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	giveUp := errRedisPoolTimeout
	select {
	case got := <-c.handoff:
		return c.ready(got, fresh, deadline)
	case <-timer.C:
	case <-c.done:
		giveUp = errRedisClosed
	}
	c.mu.Lock()
	if c.waiting > 0 {
		c.waiting--
		c.mu.Unlock()
		return nil, giveUp
	}
	c.mu.Unlock()
	return c.ready(<-c.handoff, fresh, deadline) // after close, ready frees the place
}

// put gives back a healthy connection: to a waiting caller, or idle; after
// close, it closes it.
func (c *redisClient) put(cn *redisConn) {
	c.mu.Lock()
	if atomic.LoadInt32(&c.closed) != 0 {
		c.mu.Unlock()
		_ = cn.nc.Close()
		c.release()
		return
	}
	if c.waiting > 0 {
		c.waiting--
		c.mu.Unlock()
		c.handoff <- cn
		return
	}
	c.idle = append(c.idle, cn)
	c.mu.Unlock()
}

// discard closes a connection and frees its place.
func (c *redisClient) discard(cn *redisConn) {
	_ = cn.nc.Close()
	c.release()
}

// release frees the place of a connection that is closed or was never
// dialed: to a waiting caller, who dials in it, or for anyone.
func (c *redisClient) release() {
	c.mu.Lock()
	if c.waiting > 0 && atomic.LoadInt32(&c.closed) == 0 {
		c.waiting--
		c.mu.Unlock()
		c.handoff <- nil // the place stays counted in open, for the waiter
		return
	}
	c.open--
	c.mu.Unlock()
}

// dial connects to an endpoint, starting with the last one that answered
// (the first endpoint at the start) and trying each of the others in turn
// when it cannot connect. So the client stays on one endpoint until it
// fails. The server's refusal of AUTH or SELECT is a configuration error
// and is returned at once, without trying other endpoints.
func (c *redisClient) dial(deadline time.Time) (*redisConn, error) {
	n := len(c.opts.Endpoints)
	first := int(atomic.LoadInt32(&c.next))
	var errs []error
	for i := 0; i < n; i++ {
		idx := (first + i) % n
		cn, refused, err := c.dialEndpoint(c.opts.Endpoints[idx], deadline)
		if err == nil {
			atomic.StoreInt32(&c.next, int32(idx))
			return cn, nil
		}
		if refused {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// dialEndpoint connects to addr within DialTimeout (TLS handshake included)
// and sends AUTH and SELECT, pipelined. refused reports that the server
// answered AUTH or SELECT with an error.
func (c *redisClient) dialEndpoint(addr string, deadline time.Time) (cn *redisConn, refused bool, err error) {
	netDialer := &net.Dialer{Timeout: c.opts.DialTimeout}
	var nc net.Conn
	if c.opts.TLS != nil {
		tlsDialer := &tls.Dialer{NetDialer: netDialer, Config: c.opts.TLS}
		nc, err = tlsDialer.Dial("tcp", addr)
	} else {
		nc, err = netDialer.Dial("tcp", addr)
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis %s: %w", addr, err)
	}
	cn = &redisConn{nc: nc, br: bufio.NewReaderSize(nc, redisReadBuf)}
	if len(c.init) == 0 {
		return cn, false, nil
	}
	replies, _, err := c.roundTrip(cn, c.init, deadline)
	if err != nil {
		_ = nc.Close()
		return nil, false, fmt.Errorf("redis %s: %s: %w", addr, c.init[0][0], err)
	}
	for i, r := range replies {
		if e := replyError(r); e != nil {
			_ = nc.Close()
			return nil, true, fmt.Errorf("redis %s: %s: %w", addr, c.init[i][0], e)
		}
	}
	return cn, false, nil
}

// roundTrip writes cmds and reads one reply for each. stale reports a failure
// before any byte of a reply: a write error, or an orderly close.
func (c *redisClient) roundTrip(cn *redisConn, cmds [][]string, deadline time.Time) (replies []interface{}, stale bool, err error) {
	buf := cn.wbuf[:0]
	for _, cmd := range cmds {
		buf = appendRedisCommand(buf, cmd)
	}
	cn.wbuf = buf
	if stale, err = c.send(cn, buf, deadline); err != nil {
		return nil, stale, err
	}
	replies = make([]interface{}, len(cmds))
	for i := range replies {
		replies[i], err = readRedisReply(cn.br, 0)
		if err != nil {
			return nil, i == 0 && errors.Is(err, io.EOF), err
		}
	}
	return replies, false, nil
}

// send sets cn's deadlines for a call (WriteTimeout to write; the call's
// deadline, its start plus ReadTimeout, to read the replies) and writes buf.
// stale reports a write that failed other than by its deadline.
func (c *redisClient) send(cn *redisConn, buf []byte, deadline time.Time) (stale bool, err error) {
	if err = cn.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout)); err != nil {
		return true, err
	}
	if err = cn.nc.SetReadDeadline(deadline); err != nil {
		return true, err
	}
	if _, err = cn.nc.Write(buf); err != nil {
		return !errors.Is(err, os.ErrDeadlineExceeded), err
	}
	return false, nil
}

// appendRedisCommand appends args as a RESP array of bulk strings.
func appendRedisCommand(b []byte, args []string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = appendRedisBulk(b, a)
	}
	return b
}

// appendRedisBulk appends a as a RESP bulk string.
func appendRedisBulk(b []byte, a string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(a)), 10)
	b = append(b, '\r', '\n')
	b = append(b, a...)
	return append(b, '\r', '\n')
}

// readRedisReply reads one RESP2 reply. An error reply is returned as a
// value (an error wrapping errRedisServer), not as the error. Bulk strings
// longer than redisMaxBulk, arrays longer than redisMaxArray or nested deeper
// than redisMaxDepth, and lines longer than redisReadBuf are protocol errors,
// so no reply makes the client allocate much more than the bytes it sent.
func readRedisReply(br *bufio.Reader, depth int) (interface{}, error) {
	// The rare paths are in functions of their own: Yaegi allocates every
	// variable and temporary of a function on every call, run or not.
	line, err := br.ReadSlice('\n')
	n := len(line)
	if err != nil || n < 3 || line[n-2] != '\r' {
		return nil, redisLineError(line, err)
	}
	switch line[0] {
	case '+':
		return string(line[1 : n-2]), nil
	case '-':
		return redisServerError(string(line[1 : n-2])), nil
	case ':':
		return redisIntReply(line[1 : n-2])
	case '$':
		return readRedisBulk(br, line[1:n-2])
	case '*':
		return readRedisArray(br, line[1:n-2], depth)
	}
	return nil, fmt.Errorf("redis protocol: unexpected reply type %q", line[0])
}

// redisLineError is the error of a line that ReadSlice could not read whole
// or that does not end in CRLF.
func redisLineError(line []byte, err error) error {
	switch {
	case err == nil:
		return fmt.Errorf("redis protocol: malformed line %.32q", line)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return io.ErrUnexpectedEOF
	case errors.Is(err, bufio.ErrBufferFull):
		return errors.New("redis protocol: line too long")
	}
	return err
}

func readRedisBulk(br *bufio.Reader, header []byte) (interface{}, error) {
	n, err := redisInt(header)
	if err != nil || n == -1 {
		return nil, err
	}
	if n < 0 || n > redisMaxBulk {
		return nil, fmt.Errorf("redis protocol: bulk string length %d out of bounds", n)
	}
	buf := make([]byte, n+2)
	if _, err = io.ReadFull(br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if buf[n] != '\r' || buf[n+1] != '\n' {
		return nil, errors.New("redis protocol: bulk string not terminated by CRLF")
	}
	return string(buf[:n]), nil
}

func readRedisArray(br *bufio.Reader, header []byte, depth int) (interface{}, error) {
	n, err := redisInt(header)
	if err != nil || n == -1 {
		return nil, err
	}
	if n < 0 || n > redisMaxArray {
		return nil, fmt.Errorf("redis protocol: array length %d out of bounds", n)
	}
	if depth >= redisMaxDepth {
		return nil, errors.New("redis protocol: arrays nested too deep")
	}
	arr := make([]interface{}, n)
	for i := range arr {
		arr[i], err = readRedisReply(br, depth+1)
		if err != nil {
			return nil, err
		}
	}
	return arr, nil
}

// redisIntReply is an integer reply, as an int64 in an interface.
func redisIntReply(b []byte) (interface{}, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return nil, redisIntError(b)
	}
	return n, nil
}

// redisInt is the length of a bulk string or an array.
func redisInt(b []byte) (int64, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, redisIntError(b)
	}
	return n, nil
}

func redisIntError(b []byte) error {
	return fmt.Errorf("redis protocol: bad integer %.32q", b)
}

// redisScript is a Lua script and its SHA1, by which EVALSHA names it.
type redisScript struct {
	src string
	sha string
}

func newRedisScript(src string) *redisScript {
	sum := sha1.Sum([]byte(src))
	return &redisScript{src: src, sha: hex.EncodeToString(sum[:])}
}

// gcraScript takes up to n tokens from the bucket KEYS[1], atomically, on
// Redis's own clock (TIME), which every replica shares, after giving back up
// to b tokens taken earlier and never spent. ARGV: the interval I
// (microseconds per token), the tolerance τ = I*(burst-1) (microseconds),
// n >= 1, b >= 0, and u, the bucket's tat right after the call that took
// those b tokens. The key holds the bucket's theoretical arrival time, tat,
// in microseconds; a missing key is a full bucket. With now from TIME:
//
//	returned  = clamp(floor((u - now) / I), 0, b), 0 for a missing key
//	tat       = the later of (stored tat - returned*I) and now
//	granted   = clamp(floor((τ + I - (tat - now)) / I), 0, n)
//	tat'      = tat + granted*I, stored when it changed
//	remaining = floor((τ + I - (tat' - now)) / I), at least 0
//	wait      = tat' - τ - now, at least 0
//
// So k tokens are admitted when tat + k*I - now <= τ + I: a full bucket gives
// burst at once, then one per I. remaining is what a next call could take at
// now; wait is the time until one more token can be taken (0 when remaining
// > 0, at most I while TIME goes forward).
//
// A token given back is one whose slot is still ahead of now: the b tokens
// were the last of their call's slots, which end at u, and a slot now past
// came back with time already (giving it back again would hand it out twice).
// Taking a slot still ahead of now out of tat leaves tat where it would be
// had the token never been taken, and the grants made meanwhile were made
// against a later tat: the tokens spent still conform to the same GCRA.
//
// The key expires at tat' rounded up to the millisecond, the time the bucket
// is full again, so Redis holds no idle state. It is set with PEXPIREAT
// rather than a relative PEXPIRE: Redis compares expiry times with the
// script's start time, in milliseconds, which may be up to a millisecond
// behind TIME, and a relative TTL could drop the key before tat'. Numbers are
// written with %d, because Lua's tostring would round a 16-digit timestamp.
// replicate_commands lets Redis 3.2 to 4 write after TIME; from Redis 5 on it
// is the default and the call does nothing. It returns {granted, wait,
// remaining, now, tat', returned}.
const gcraScript = `
redis.replicate_commands()
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local back = tonumber(ARGV[4]) or 0
local backUntil = tonumber(ARGV[5]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = now
local returned = 0
local stored = tonumber(redis.call('GET', key))
if stored then
  if back > 0 then
    returned = math.floor((backUntil - now) / interval)
    if returned > back then
      returned = back
    end
    if returned < 0 then
      returned = 0
    end
    stored = stored - returned * interval
  end
  if stored > now then
    tat = stored
  end
end
local granted = math.floor((tolerance + interval - (tat - now)) / interval)
if granted > n then
  granted = n
end
if granted < 0 then
  granted = 0
end
if granted > 0 or returned > 0 then
  tat = tat + granted * interval
  redis.call('SET', key, string.format('%d', tat))
  redis.call('PEXPIREAT', key, string.format('%d', math.ceil(tat / 1000)))
end
local remaining = math.floor((tolerance + interval - (tat - now)) / interval)
if remaining < 0 then
  remaining = 0
end
local wait = tat - tolerance - now
if wait < 0 then
  wait = 0
end
return {granted, wait, remaining, now, tat, returned}
`

var redisGCRA = newRedisScript(gcraScript)

// gcraCall is the EVALSHA of gcraScript for one limiter's interval and
// tolerance, encoded once (newGCRACall): a store call then only adds the
// key and n.
//
// A store call is the rate limit's one network round trip. Through the
// generic do it cost a Yaegi plugin 1,016 allocations and 230 µs (measured:
// the argument slices, the encoding loop of appends, the recursive reader
// and its interface values, the pool's selects). takeGCRA writes the command
// as one string concatenation (18 allocations under Yaegi where the appends
// took 77) and reads the one reply shape the script returns with
// readGCRAReply, in one function: under Yaegi every function call (about 30
// allocations), variable, append and boxed value allocates. That took a
// call to 560 allocations; the call's deadline and the give-back arguments
// (see gcraScript) brought it to 675.
type gcraCall struct {
	head string // the array header, EVALSHA, the SHA and numkeys 1
	tail string // the interval and the tolerance
	// interval and tolerance, for the EVAL of a server without the script
	interval, tolerance string
	// The bounds of a reply: remaining at most maxRemaining (τ/I + 1), and
	// wait at most maxWaitUs. A wait is at most I while Redis's clock goes
	// forward; maxWaitUs is τ + I and a day more, for a failover to a
	// server whose clock is behind, and keeps now + wait far from overflow.
	maxRemaining, maxWaitUs int64
}

func newGCRACall(intervalUs, toleranceUs int64) *gcraCall {
	g := &gcraCall{interval: strconv.FormatInt(intervalUs, 10), tolerance: strconv.FormatInt(toleranceUs, 10),
		maxRemaining: toleranceUs/intervalUs + 1, maxWaitUs: toleranceUs + intervalUs + int64(24*time.Hour/time.Microsecond)}
	g.head = "*9\r\n" + string(appendRedisCommand(nil, []string{"EVALSHA", redisGCRA.sha, "1"})[4:])
	g.tail = string(appendRedisBulk(appendRedisBulk(nil, g.interval), g.tolerance))
	return g
}

// gcraNothingBack is the last two arguments of a call that gives nothing
// back: b = 0, u = 0.
const gcraNothingBack = "$1\r\n0\r\n$1\r\n0\r\n"

// gcraTake is what one call of gcraScript did (see gcraScript): the tokens
// granted, the wait in microseconds until one more can be taken, the tokens
// left, Redis's clock and the bucket's tat after the call (microseconds),
// and the tokens it took back.
type gcraTake struct {
	granted, waitUs, remaining, nowUs, tatUs, returned int64
}

// takeGCRA runs gcraScript (see there for the formulas) with g's settings
// on the key prefix+key: it takes up to n tokens, giving back first up to
// back tokens taken by a call that left the bucket's tat at backUntil and
// never spent. When the server does not have the script
// (NOSCRIPT: a restart, SCRIPT FLUSH, a failover), it sends EVAL, which also
// caches it. A reply out of the script's range is an error: a server that
// lies never grants more than n tokens, nor makes a wait or a remaining
// count that the request path cannot use.
//
// The whole call waits at most ReadTimeout, from its start to its reply,
// for a connection from the pool included. A call on a stale connection is
// sent again (see redisClient) without giving anything back: giving back is
// not idempotent, and the first try may have run.
func (c *redisClient) takeGCRA(g *gcraCall, prefix, key string, n, back, backUntil int64) (r gcraTake, err error) {
	deadline := time.Now().Add(c.opts.ReadTimeout)
	ns := strconv.FormatInt(n, 10)
	base := g.head + "$" + strconv.Itoa(len(prefix)+len(key)) + "\r\n" + prefix + key + "\r\n" + g.tail + "$" + strconv.Itoa(len(ns)) + "\r\n" + ns + "\r\n"
	cmd := base + gcraNothingBack
	if back > 0 {
		cmd = base + string(appendRedisBulk(appendRedisBulk(nil, strconv.FormatInt(back, 10)), strconv.FormatInt(backUntil, 10)))
	}
	var serverErr error
	for attempt := 0; ; attempt++ {
		cn, err := c.get(attempt > 0, deadline)
		if err != nil {
			return gcraTake{}, err
		}
		cn.wbuf = append(cn.wbuf[:0], cmd...)
		stale, err := c.send(cn, cn.wbuf, deadline)
		if err == nil {
			r, serverErr, err = readGCRAReply(cn.br)
			stale = errors.Is(err, io.EOF) // io.EOF only before the reply's first byte
		}
		if c.finish(cn, attempt, stale, err) {
			if err != nil {
				return gcraTake{}, err
			}
			break
		}
		back, backUntil, cmd = 0, 0, base+gcraNothingBack // sent again without giving back
	}
	if serverErr != nil {
		if !isRedisServerError(serverErr, "NOSCRIPT") {
			return gcraTake{}, serverErr
		}
		reply, err := c.do("EVAL", redisGCRA.src, "1", prefix+key, g.interval, g.tolerance, ns, strconv.FormatInt(back, 10), strconv.FormatInt(backUntil, 10))
		if err != nil {
			return gcraTake{}, err
		}
		if r, err = parseGCRAReply(reply); err != nil {
			return gcraTake{}, err
		}
	}
	if r.granted < 0 || r.granted > n || r.waitUs < 0 || r.waitUs > g.maxWaitUs || r.remaining < 0 || r.remaining > g.maxRemaining ||
		r.returned < 0 || r.returned > back {
		return gcraTake{}, fmt.Errorf("redis gcra: reply out of range: granted %d of %d, wait %dµs, remaining %d, returned %d of %d",
			r.granted, n, r.waitUs, r.remaining, r.returned, back)
	}
	return r, nil
}

// readGCRAReply reads gcraScript's reply, an array of six integers of at
// most 18 digits each, the reader of takeGCRA (see gcraCall): one function,
// with no call per element. An error reply is returned as serverErr, read
// whole: the connection stays in step. Any other shape is a protocol error.
// io.EOF means the stream ended before the reply's first byte.
func readGCRAReply(br *bufio.Reader) (r gcraTake, serverErr, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) < 3 || line[len(line)-2] != '\r' {
		return gcraTake{}, nil, redisLineError(line, err)
	}
	if line[0] == '-' {
		return gcraTake{}, redisServerError(string(line[1 : len(line)-2])), nil
	}
	if string(line) != "*6\r\n" {
		return gcraTake{}, nil, fmt.Errorf("redis gcra: unexpected reply %.32q", line)
	}
	var out [6]int64
	for i := range out {
		line, err = br.ReadSlice('\n')
		n := len(line)
		if err != nil || n < 4 || n > 22 || line[0] != ':' || line[n-2] != '\r' {
			break
		}
		digits := line[1 : n-2]
		neg := digits[0] == '-'
		if neg {
			digits = digits[1:]
		}
		v := int64(0)
		for _, d := range digits {
			if d < '0' || d > '9' {
				v = -1
				break
			}
			v = v*10 + int64(d-'0')
		}
		if v < 0 || len(digits) == 0 || len(digits) > 18 {
			return gcraTake{}, nil, redisIntError(line[1 : n-2])
		}
		if neg {
			v = -v
		}
		out[i] = v
		line = nil
	}
	if line != nil || err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // within the array
		} else if err == nil {
			err = fmt.Errorf("redis gcra: unexpected reply %.32q", line)
		}
		return gcraTake{}, nil, err
	}
	return gcraTake{granted: out[0], waitUs: out[1], remaining: out[2], nowUs: out[3], tatUs: out[4], returned: out[5]}, nil, nil
}

// parseGCRAReply is gcraScript's reply through the generic reader (the
// EVAL of takeGCRA).
func parseGCRAReply(reply interface{}) (gcraTake, error) {
	arr, ok := reply.([]interface{})
	if !ok || len(arr) != 6 {
		return gcraTake{}, fmt.Errorf("redis gcra: unexpected reply %v", reply)
	}
	var out [6]int64
	for i, v := range arr {
		x, isInt := v.(int64)
		if !isInt {
			return gcraTake{}, fmt.Errorf("redis gcra: unexpected reply %v", reply)
		}
		out[i] = x
	}
	return gcraTake{granted: out[0], waitUs: out[1], remaining: out[2], nowUs: out[3], tatUs: out[4], returned: out[5]}, nil
}

// redisBucketKey is the key of a client's bucket: namespaced by the
// middleware's name and by its limit settings, so that two middlewares, or
// one whose limits changed, never share a bucket. The name is prefixed with
// its length, so that no name and source can be read as another pair.
func redisBucketKey(name string, intervalUs, toleranceUs int64, source string) string {
	return "edgecanary:rl:" + strconv.Itoa(len(name)) + ":" + name + ":" +
		strconv.FormatInt(intervalUs, 10) + ":" + strconv.FormatInt(toleranceUs, 10) + ":" + source
}

// redisTLSConfig builds the client TLS settings from the values of
// rateLimit.redis.tls, with the meaning of Traefik's: ca, cert and key are
// each a file path or PEM content (content when it holds "-----BEGIN").
// ca replaces the system roots; cert and key, a client certificate, go
// together; insecureSkipVerify skips the server's verification. Errors name
// the field.
func redisTLSConfig(field, ca, cert, key string, insecureSkipVerify bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecureSkipVerify}
	if ca != "" {
		pemCA, err := pemOrFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.ca: %w", field, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCA) {
			return nil, fmt.Errorf("%s.tls.ca: no PEM certificate found", field)
		}
		cfg.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		if cert == "" {
			return nil, fmt.Errorf("%s.tls.cert: must be set with tls.key", field)
		}
		return nil, fmt.Errorf("%s.tls.key: must be set with tls.cert", field)
	}
	if cert == "" {
		return cfg, nil
	}
	pemCert, err := pemOrFile(cert)
	if err != nil {
		return nil, fmt.Errorf("%s.tls.cert: %w", field, err)
	}
	pemKey, err := pemOrFile(key)
	if err != nil {
		return nil, fmt.Errorf("%s.tls.key: %w", field, err)
	}
	pair, err := tls.X509KeyPair(pemCert, pemKey)
	if err != nil {
		return nil, fmt.Errorf("%s.tls.cert, key: %w", field, err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, nil
}

// pemOrFile returns s when it is PEM content, else the file it names.
func pemOrFile(s string) ([]byte, error) {
	if strings.Contains(s, "-----BEGIN") {
		return []byte(s), nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("reading file: %w", err)
	}
	return b, nil
}
