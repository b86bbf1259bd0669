package plugin

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests run against a real redis-server (Debian's 7.0, ACL and TLS
// capable). They start and stop it with os.StartProcess and /bin/kill rather
// than os/exec and syscall, which Yaegi offers only with -unrestricted and
// -syscall.

const redisServerBin = "/usr/bin/redis-server"

// testRedis is a redis-server on a loopback port, stopped in Cleanup.
type testRedis struct {
	t       testing.TB
	port    int
	args    []string
	logPath string
	proc    *os.Process
	exited  chan struct{}
	stopped bool // SIGSTOPped: Cleanup sends SIGCONT
}

// newTestRedis starts redis-server on a free port (the TLS port when tlsPort
// is set) with no persistence, plus extra arguments.
func newTestRedis(t testing.TB, tlsPort bool, extra ...string) *testRedis {
	t.Helper()
	if _, err := os.Stat(redisServerBin); err != nil {
		t.Skipf("redis-server not found at %s (apt-get install --no-install-recommends redis-server): %v", redisServerBin, err)
	}
	dir := t.TempDir()
	s := &testRedis{t: t, port: freeLoopbackPort(t), logPath: filepath.Join(dir, "redis.log")}
	port := strconv.Itoa(s.port)
	if tlsPort {
		s.args = []string{"--port", "0", "--tls-port", port}
	} else {
		s.args = []string{"--port", port}
	}
	s.args = append(s.args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	s.args = append(s.args, extra...)
	s.start()
	t.Cleanup(func() {
		if s.stopped {
			s.signal("CONT")
		}
		s.kill()
		if t.Failed() {
			logText, _ := os.ReadFile(s.logPath)
			t.Logf("redis-server log:\n%s", logText)
		}
	})
	return s
}

func (s *testRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start runs the server (again, on the same port) and waits until it accepts.
func (s *testRedis) start() {
	s.t.Helper()
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logFile.Close()
	argv := append([]string{redisServerBin}, s.args...)
	proc, err := os.StartProcess(redisServerBin, argv, &os.ProcAttr{Files: []*os.File{nil, logFile, logFile}})
	if err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_, _ = proc.Wait()
		close(exited)
	}()
	s.proc, s.exited = proc, exited
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", s.addr(), 100*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		if isClosed(exited) || time.Now().After(deadline) {
			logText, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("redis-server %v did not start: %v\n%s", s.args, err, logText)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *testRedis) kill() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// signal sends SIGname (STOP, CONT) with /bin/kill.
func (s *testRedis) signal(name string) {
	s.t.Helper()
	p, err := os.StartProcess("/bin/kill", []string{"kill", "-" + name, strconv.Itoa(s.proc.Pid)}, &os.ProcAttr{})
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil || !st.Success() {
		s.t.Fatalf("kill -%s: %v %v", name, st, err)
	}
}

func isClosed(ch chan struct{}) bool {
	closed := false
	select {
	case <-ch:
		closed = true
	default:
		closed = false
	}
	return closed
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testRedisClient is a client closed in Cleanup.
func testRedisClient(t testing.TB, opts redisOptions) *redisClient {
	t.Helper()
	c := newRedisClient(opts)
	t.Cleanup(c.close)
	return c
}

func mustDo(t testing.TB, c *redisClient, args ...string) interface{} {
	t.Helper()
	v, err := c.do(args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

// redisInfoField reads one field of INFO.
func redisInfoField(t testing.TB, c *redisClient, section, field string) string {
	t.Helper()
	info, _ := mustDo(t, c, "INFO", section).(string)
	for _, line := range strings.Split(info, "\r\n") {
		if strings.HasPrefix(line, field+":") {
			return strings.TrimPrefix(line, field+":")
		}
	}
	t.Fatalf("INFO %s has no %s:\n%s", section, field, info)
	return ""
}

func TestRedisDoAndPipeline(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	if v := mustDo(t, c, "SET", "k", "v"); v != "OK" {
		t.Fatalf("SET: %#v", v)
	}
	if v := mustDo(t, c, "GET", "k"); v != "v" {
		t.Fatalf("GET: %#v", v)
	}
	_, err := c.do("INCR", "k")
	if !isRedisServerError(err, "ERR") {
		t.Fatalf("INCR on a string: want an error reply, got %T %v", err, err)
	}
	replies, err := c.pipeline([][]string{
		{"DEL", "n"}, {"INCR", "n"}, {"INCRBY", "n", "41"}, {"INCR", "k"}, {"GET", "n"}, {"GET", "missing"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// An error reply is an error among the replies.
	want := "[i:0,i:1,i:42,e:ERR value is not an integer or out of range,s:42,nil]"
	if got := redisReplyText(replies); got != want {
		t.Fatalf("pipeline replies: %s, want %s", got, want)
	}
	// A long pipeline in one write, and a value with CRLF and binary bytes.
	val := "a\r\nb\x00c"
	var cmds [][]string
	for i := 0; i < 300; i++ {
		cmds = append(cmds, []string{"SET", "p" + strconv.Itoa(i), val})
	}
	cmds = append(cmds, []string{"GET", "p299"})
	replies, err = c.pipeline(cmds)
	if err != nil || len(replies) != 301 || replies[300] != val {
		t.Fatalf("long pipeline: %v, %d replies", err, len(replies))
	}
	if replies, err = c.pipeline(nil); replies != nil || err != nil {
		t.Fatalf("empty pipeline: %v %v", replies, err)
	}
}

func TestRedisReplyTypesFromServer(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	mustDo(t, c, "RPUSH", "list", "a", "", "c")
	mustDo(t, c, "SET", "empty", "")
	tests := []struct {
		desc string
		cmd  []string
		want string
	}{
		{desc: "simple string", cmd: []string{"PING"}, want: "s:PONG"},
		{desc: "integer", cmd: []string{"LLEN", "list"}, want: "i:3"},
		{desc: "negative integer", cmd: []string{"TTL", "missing"}, want: "i:-2"},
		{desc: "bulk string", cmd: []string{"ECHO", "héllo"}, want: "s:héllo"},
		{desc: "empty bulk string", cmd: []string{"GET", "empty"}, want: "s:"},
		{desc: "nil bulk string", cmd: []string{"GET", "missing"}, want: "nil"},
		{desc: "array with empty element", cmd: []string{"LRANGE", "list", "0", "-1"}, want: "[s:a,s:,s:c]"},
		{desc: "empty array", cmd: []string{"LRANGE", "missing", "0", "-1"}, want: "[]"},
		{desc: "array with nil", cmd: []string{"MGET", "empty", "missing"}, want: "[s:,nil]"},
		{desc: "nil array", cmd: []string{"BLPOP", "missing", "0.01"}, want: "nil"},
		{desc: "nested arrays from a script", cmd: []string{"EVAL", "return {1, {2, 'x', {}}, 'y'}", "0"}, want: "[i:1,[i:2,s:x,[]],s:y]"},
		{desc: "error in an array", cmd: []string{"EVAL", "return {1, redis.error_reply('boom')}", "0"}, want: "[i:1,e:ERR boom]"},
	}
	for _, test := range tests {
		got, err := c.do(test.cmd...)
		if err != nil {
			t.Errorf("%s: %v", test.desc, err)
			continue
		}
		if text := redisReplyText(got); text != test.want {
			t.Errorf("%s: got %s, want %s", test.desc, text, test.want)
		}
	}
	_, err := c.do("NOSUCHCOMMAND")
	if !isRedisServerError(err, "ERR") || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("error reply: got %T %v", err, err)
	}
}

// redisReplyText renders a reply for comparison: s:string, i:integer,
// e:error reply, nil, [elements]. (Under Yaegi, a type switch's case error
// does not match a *fmt.wrapError, hence replyError first.)
func redisReplyText(v interface{}) string {
	if e := replyError(v); e != nil {
		if !errors.Is(e, errRedisServer) {
			return "unexpected error " + e.Error()
		}
		return "e:" + strings.TrimPrefix(e.Error(), "redis: ")
	}
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return "s:" + x
	case int64:
		return "i:" + strconv.FormatInt(x, 10)
	case []interface{}:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = redisReplyText(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprintf("unexpected %T", v)
}

// TestRedisReplyParser reads canned replies: every RESP2 type and the
// malformed ones, without a server.
func TestRedisReplyParser(t *testing.T) {
	tests := []struct {
		desc    string
		in      string
		want    string
		wantErr string
	}{
		{desc: "simple string", in: "+OK\r\n", want: "s:OK"},
		{desc: "empty simple string", in: "+\r\n", want: "s:"},
		{desc: "error", in: "-NOSCRIPT No matching script\r\n", want: "e:NOSCRIPT No matching script"},
		{desc: "integer", in: ":-42\r\n", want: "i:-42"},
		{desc: "bulk", in: "$5\r\na\r\nbc\r\n", want: "s:a\r\nbc"},
		{desc: "empty bulk", in: "$0\r\n\r\n", want: "s:"},
		{desc: "nil bulk", in: "$-1\r\n", want: "nil"},
		{desc: "nil array", in: "*-1\r\n", want: "nil"},
		{desc: "empty array", in: "*0\r\n", want: "[]"},
		{desc: "nested", in: "*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n-ERR e\r\n", want: "[i:1,[s:x,nil],e:ERR e]"},
		{desc: "unknown type", in: "?what\r\n", wantErr: "unexpected reply type"},
		{desc: "RESP3 null", in: "_\r\n", wantErr: "unexpected reply type"},
		{desc: "LF only", in: "+OK\n", wantErr: "malformed line"},
		{desc: "bad integer", in: ":12a\r\n", wantErr: "bad integer"},
		{desc: "huge bulk", in: "$999999999999\r\n", wantErr: "out of bounds"},
		{desc: "bulk over the bound", in: "$1048577\r\n", wantErr: "out of bounds"},
		{desc: "negative bulk", in: "$-2\r\n", wantErr: "out of bounds"},
		{desc: "huge array", in: "*99999999\r\n", wantErr: "out of bounds"},
		{desc: "deep nesting", in: strings.Repeat("*1\r\n", 20) + ":1\r\n", wantErr: "nested too deep"},
		{desc: "bulk without CRLF", in: "$3\r\nabcXY", wantErr: "not terminated"},
		{desc: "short bulk", in: "$10\r\nabc", wantErr: "unexpected EOF"},
		{desc: "short array", in: "*2\r\n:1\r\n", wantErr: "EOF"},
		{desc: "cut line", in: "+OK", wantErr: "unexpected EOF"},
		{desc: "line too long", in: "+" + strings.Repeat("a", 2*redisReadBuf) + "\r\n", wantErr: "line too long"},
	}
	for _, test := range tests {
		got, err := readRedisReply(bufio.NewReaderSize(strings.NewReader(test.in), redisReadBuf), 0)
		if test.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), test.wantErr) {
				t.Errorf("%s: got %#v, %v; want error %q", test.desc, got, err, test.wantErr)
			}
			continue
		}
		if text := redisReplyText(got); err != nil || text != test.want {
			t.Errorf("%s: got %s, %v; want %s", test.desc, text, err, test.want)
		}
	}
	if _, err := readRedisReply(bufio.NewReader(strings.NewReader("")), 0); !errors.Is(err, io.EOF) {
		t.Errorf("no bytes at all: %v, want io.EOF", err)
	}
}

func TestRedisCommandEncoding(t *testing.T) {
	got := string(appendRedisCommand(nil, []string{"SET", "k", "", "a\r\nb"}))
	if want := "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedisAuthACLUser(t *testing.T) {
	srv := newTestRedis(t, false, "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all")
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, Username: "alice", Password: "s3cret"})
	if v := mustDo(t, c, "ACL", "WHOAMI"); v != "alice" {
		t.Fatalf("ACL WHOAMI: %#v", v)
	}
	for _, opts := range []redisOptions{
		{Username: "alice", Password: "wrong"},
		{Username: "bob", Password: "s3cret"},
	} {
		opts.Endpoints = []string{srv.addr()}
		bad := testRedisClient(t, opts)
		start := time.Now()
		_, err := bad.do("PING")
		if err == nil || !strings.Contains(err.Error(), "AUTH: redis: WRONGPASS") || !errors.Is(err, errRedisServer) {
			t.Errorf("%s/%s: want a WRONGPASS error, got %v", opts.Username, opts.Password, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("the refused AUTH took %v", el)
		}
	}
}

func TestRedisAuthRequirepass(t *testing.T) {
	srv := newTestRedis(t, false, "--requirepass", "pw")
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, Password: "pw"})
	if v := mustDo(t, c, "ACL", "WHOAMI"); v != "default" {
		t.Fatalf("ACL WHOAMI: %#v", v)
	}
	bad := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, Password: "nope"})
	if _, err := bad.do("PING"); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("wrong password: %v", err)
	}
	none := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	_, err := none.do("PING")
	if !isRedisServerError(err, "NOAUTH") {
		t.Errorf("no password: want NOAUTH, got %v", err)
	}
}

func TestRedisSelectDB(t *testing.T) {
	srv := newTestRedis(t, false)
	db3 := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, DB: 3})
	db0 := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	mustDo(t, db3, "SET", "k", "in3")
	if v := mustDo(t, db0, "GET", "k"); v != nil {
		t.Errorf("db 0 sees %#v", v)
	}
	if v := mustDo(t, db3, "GET", "k"); v != "in3" {
		t.Errorf("db 3: %#v", v)
	}
	if info, _ := mustDo(t, db3, "CLIENT", "INFO").(string); !strings.Contains(info, " db=3 ") {
		t.Errorf("CLIENT INFO: %s", info)
	}
	bad := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, DB: 99})
	if _, err := bad.do("PING"); err == nil || !strings.Contains(err.Error(), "SELECT: redis: ERR DB index is out of range") {
		t.Errorf("db 99: %v", err)
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM, and the same as files.
type testPKI struct {
	caPEM, serverCert, serverKey, clientCert, clientKey string
	dir                                                 string
}

func (p *testPKI) file(name string) string { return filepath.Join(p.dir, name) }

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edgecanary test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), dir: t.TempDir()}
	p.serverCert, p.serverKey = issueTestCert(t, caCert, caKey, 2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issueTestCert(t, caCert, caKey, 3, "client", x509.ExtKeyUsageClientAuth)
	files := map[string]string{
		"ca.pem": p.caPEM, "server.pem": p.serverCert, "server-key.pem": p.serverKey,
		"client.pem": p.clientCert, "client-key.pem": p.clientKey,
	}
	for name, content := range files {
		if err := os.WriteFile(p.file(name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func issueTestCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func TestRedisTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := newTestRedis(t, true,
		"--tls-cert-file", pki.file("server.pem"), "--tls-key-file", pki.file("server-key.pem"),
		"--tls-ca-cert-file", pki.file("ca.pem"), "--tls-auth-clients", "yes",
		"--requirepass", "pw")
	otherPKI := newTestPKI(t)
	tests := []struct {
		desc               string
		ca, cert, key      string
		insecureSkipVerify bool
		wantErr            string
	}{
		{desc: "files", ca: pki.file("ca.pem"), cert: pki.file("client.pem"), key: pki.file("client-key.pem")},
		{desc: "PEM contents", ca: pki.caPEM, cert: pki.clientCert, key: pki.clientKey},
		{desc: "insecureSkipVerify without CA", cert: pki.clientCert, key: pki.clientKey, insecureSkipVerify: true},
		{desc: "server signed by another CA", ca: otherPKI.caPEM, cert: pki.clientCert, key: pki.clientKey, wantErr: "certificate signed by unknown authority"},
		{desc: "no client certificate", ca: pki.caPEM, wantErr: "AUTH: "},
		{desc: "client certificate of another CA", ca: pki.caPEM, cert: otherPKI.clientCert, key: otherPKI.clientKey, wantErr: "AUTH: "},
	}
	for _, test := range tests {
		cfg, err := redisTLSConfig("rateLimit.redis", test.ca, test.cert, test.key, test.insecureSkipVerify)
		if err != nil {
			t.Fatalf("%s: %v", test.desc, err)
		}
		c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, Password: "pw", TLS: cfg, ReadTimeout: time.Second})
		v, err := c.do("PING")
		if test.wantErr == "" {
			if err != nil || v != "PONG" {
				t.Errorf("%s: %#v %v", test.desc, v, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), test.wantErr) {
			t.Errorf("%s: got %#v %v, want an error with %q", test.desc, v, err, test.wantErr)
		}
	}
}

func TestRedisTLSConfigErrors(t *testing.T) {
	pki := newTestPKI(t)
	tests := []struct {
		desc          string
		ca, cert, key string
		wantErr       string
	}{
		{desc: "missing CA file", ca: "/nonexistent/ca.pem", wantErr: "rateLimit.redis.tls.ca: reading file:"},
		{desc: "CA without certificate", ca: "-----BEGIN NOTHING-----", wantErr: "rateLimit.redis.tls.ca: no PEM certificate found"},
		{desc: "cert without key", cert: pki.clientCert, wantErr: "rateLimit.redis.tls.key: must be set with tls.cert"},
		{desc: "key without cert", key: pki.clientKey, wantErr: "rateLimit.redis.tls.cert: must be set with tls.key"},
		{desc: "missing cert file", cert: "/nonexistent/c.pem", key: pki.clientKey, wantErr: "rateLimit.redis.tls.cert: reading file:"},
		{desc: "missing key file", cert: pki.clientCert, key: "/nonexistent/k.pem", wantErr: "rateLimit.redis.tls.key: reading file:"},
		{desc: "key of another certificate", cert: pki.clientCert, key: pki.serverKey, wantErr: "rateLimit.redis.tls.cert, key:"},
	}
	for _, test := range tests {
		_, err := redisTLSConfig("rateLimit.redis", test.ca, test.cert, test.key, false)
		if err == nil || !strings.HasPrefix(err.Error(), test.wantErr) {
			t.Errorf("%s: got %v, want %q", test.desc, err, test.wantErr)
		}
	}
	cfg, err := redisTLSConfig("rateLimit.redis", "", "", "", false)
	if err != nil || cfg.RootCAs != nil || len(cfg.Certificates) != 0 || cfg.InsecureSkipVerify {
		t.Errorf("empty settings: system roots, no client certificate; got %+v %v", cfg, err)
	}
}

func TestRedisEvalFallsBackOnNoscript(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	s := newRedisScript("return {KEYS[1], ARGV[1], ARGV[2]}")
	if s.sha != mustDo(t, c, "SCRIPT", "LOAD", s.src) {
		t.Fatalf("sha %s differs from the server's", s.sha)
	}
	mustDo(t, c, "SCRIPT", "FLUSH")

	evalCalls := func() string { return redisInfoField(t, c, "commandstats", "cmdstat_eval") }
	for i := 0; i < 3; i++ {
		got, err := c.eval(s, []string{"k"}, []string{"a", "b"})
		if err != nil || redisReplyText(got) != "[s:k,s:a,s:b]" {
			t.Fatalf("eval %d: %#v %v", i, got, err)
		}
		// The first call met NOSCRIPT and loaded the script with EVAL; the
		// next ones ran it with EVALSHA.
		if calls := evalCalls(); !strings.HasPrefix(calls, "calls=1,") {
			t.Fatalf("after eval %d: cmdstat_eval %s, want calls=1", i, calls)
		}
	}
	if v := mustDo(t, c, "SCRIPT", "EXISTS", s.sha); redisReplyText(v) != "[i:1]" {
		t.Errorf("SCRIPT EXISTS: %#v", v)
	}
	// A script error is returned as it is, not retried with EVAL.
	bad := newRedisScript("return redis.error_reply('ERR from the script')")
	if _, err := c.eval(bad, nil, nil); !isRedisServerError(err, "ERR") || err.Error() != "redis: ERR from the script" {
		t.Errorf("script error: %v", err)
	}
}

func TestRedisPoolBound(t *testing.T) {
	srv := newTestRedis(t, false)
	observer := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1})
	connsBefore, _ := strconv.Atoi(redisInfoField(t, observer, "stats", "total_connections_received"))
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 2, ReadTimeout: 2 * time.Second})
	const callers = 10
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Each call holds its connection for 30ms.
			v, err := c.do("BLPOP", "nothing"+strconv.Itoa(i), "0.03")
			if err == nil && v != nil {
				err = fmt.Errorf("BLPOP: %#v", v)
			}
			errs <- err
		}(i)
	}
	maxClients := 0
	for i := 0; i < 5; i++ {
		list, _ := mustDo(t, observer, "CLIENT", "LIST").(string)
		if n := strings.Count(list, "\n"); n > maxClients {
			maxClients = n
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	connsAfter, _ := strconv.Atoi(redisInfoField(t, observer, "stats", "total_connections_received"))
	if opened := connsAfter - connsBefore; opened != 2 {
		t.Errorf("the pool opened %d connections, want 2", opened)
	}
	if maxClients > 3 {
		t.Errorf("CLIENT LIST saw %d clients, want at most 2 and the observer", maxClients)
	}
}

func TestRedisPoolWaitIsBounded(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1, ReadTimeout: 200 * time.Millisecond})
	mustDo(t, c, "PING")
	held, err := c.get(false, time.Now().Add(c.opts.ReadTimeout))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.do("PING")
	el := time.Since(start)
	if !errors.Is(err, errRedisPoolTimeout) || el < 150*time.Millisecond || el > time.Second {
		t.Errorf("with the pool exhausted: %v after %v, want errRedisPoolTimeout after ~200ms", err, el)
	}
	c.put(held)
	mustDo(t, c, "PING")
	c.close()
	if _, err := c.do("PING"); !errors.Is(err, errRedisClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestRedisStoppedServerTimesOut(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, ReadTimeout: 200 * time.Millisecond, PoolSize: 2})
	mustDo(t, c, "PING")
	srv.signal("STOP")
	srv.stopped = true
	// The pooled connection, then a new one (the kernel still accepts it).
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, err := c.do("PING")
		el := time.Since(start)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("call %d on a stopped server: %v, want a timeout", i, err)
		}
		if el < 150*time.Millisecond || el > 1500*time.Millisecond {
			t.Errorf("call %d on a stopped server failed after %v, want ~200ms", i, el)
		}
	}
	srv.signal("CONT")
	srv.stopped = false
	if v, err := c.do("PING"); err != nil || v != "PONG" {
		t.Errorf("after SIGCONT: %#v %v", v, err)
	}
}

func TestRedisKilledServerRecovers(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, ReadTimeout: 2 * time.Second})
	mustDo(t, c, "PING")
	srv.kill()
	start := time.Now()
	_, err := c.do("PING")
	if el := time.Since(start); err == nil || el > 500*time.Millisecond {
		t.Errorf("killed server: %v after %v, want an error at once", err, el)
	}
	srv.start()
	if v, err := c.do("PING"); err != nil || v != "PONG" {
		t.Errorf("after the restart: %#v %v", v, err)
	}
}

func TestRedisStaleConnIsRetriedOnce(t *testing.T) {
	srv := newTestRedis(t, false)
	observer := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1})
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 3})
	// Three idle connections in the pool, named.
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := c.pipeline([][]string{{"CLIENT", "SETNAME", "victim"}, {"BLPOP", "none" + strconv.Itoa(i), "0.05"}}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	// The server closes all of them while they are idle.
	if n := mustDo(t, observer, "CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal"); n != int64(3) {
		t.Fatalf("CLIENT KILL: %#v, want 3", n)
	}
	// Each call fails on a stale connection once and runs on a new one.
	for i := 0; i < 3; i++ {
		if v, err := c.do("CLIENT", "GETNAME"); err != nil || v != nil {
			t.Errorf("call %d after the idle close: %#v %v, want it run on a new connection (no name)", i, v, err)
		}
	}
}

func TestRedisEndpointFailover(t *testing.T) {
	srv := newTestRedis(t, false)
	dead := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	c := testRedisClient(t, redisOptions{Endpoints: []string{dead, srv.addr()}, DialTimeout: time.Second})
	mustDo(t, c, "PING")
	if c.next != 1 {
		t.Errorf("the client should stay on the endpoint that answered, next=%d", c.next)
	}
	none := testRedisClient(t, redisOptions{Endpoints: []string{dead, dead}})
	if _, err := none.do("PING"); err == nil || strings.Count(err.Error(), "connection refused") != 2 {
		t.Errorf("no endpoint answers: %v, want both errors", err)
	}
}

// fakeRedis is a hostile server: it reads a command and answers reply, then
// closes the connection.
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func(cn net.Conn) {
				defer cn.Close()
				buf := make([]byte, 4096)
				_, _ = cn.Read(buf)
				_, _ = io.WriteString(cn, reply)
			}(conn)
		}
	}()
	return ln.Addr().String()
}

func TestRedisHostileServer(t *testing.T) {
	tests := []struct {
		desc, reply, wantErr string
	}{
		{desc: "garbage", reply: "HTTP/1.1 400 Bad Request\r\n\r\n", wantErr: "unexpected reply type"},
		{desc: "huge bulk length", reply: "$999999999999\r\n", wantErr: "out of bounds"},
		{desc: "huge array length", reply: "*2147483647\r\n", wantErr: "out of bounds"},
		{desc: "closes mid-reply", reply: "$10\r\nabc", wantErr: "unexpected EOF"},
		{desc: "closes mid-array", reply: "*3\r\n:1\r\n", wantErr: "EOF"},
		{desc: "closes without a reply", reply: "", wantErr: "EOF"},
		{desc: "endless line", reply: strings.Repeat("+", 1<<16), wantErr: "line too long"},
		{desc: "deep nesting", reply: strings.Repeat("*1\r\n", 1000), wantErr: "nested too deep"},
	}
	for _, test := range tests {
		c := testRedisClient(t, redisOptions{Endpoints: []string{fakeRedis(t, test.reply)}, ReadTimeout: time.Second})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		v, err := c.do("PING")
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), test.wantErr) {
			t.Errorf("%s: got %#v %v, want an error with %q", test.desc, v, err, test.wantErr)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
			t.Errorf("%s: the call allocated %d bytes", test.desc, alloc)
		}
	}
	c := testRedisClient(t, redisOptions{Endpoints: []string{fakeRedis(t, "+PONG\r\n")}})
	if v, err := c.do("PING"); err != nil || v != "PONG" {
		t.Errorf("the fake server's sane reply: %#v %v", v, err)
	}
}

// gcraRef is the reference of gcraScript, written as the textbook loop:
// admit one token at a time while the bucket's tat is within tolerance+I of
// now. It returns the new tat.
//
// Its results are plain locals: under Yaegi, a named result incremented in a
// for loop kept its value from the previous call.
func gcraRef(tat, now, interval, tolerance, n int64) (newTat, granted, wait, remaining int64) {
	g, w, r := int64(0), int64(0), int64(0)
	if tat < now {
		tat = now
	}
	for g < n && tat+interval-now <= tolerance+interval {
		tat += interval
		g++
	}
	for t := tat; t+interval-now <= tolerance+interval; t += interval {
		r++
	}
	// The first instant at which the loop above admits one more token.
	if r == 0 {
		w = tat - tolerance - now
	}
	return tat, g, w, r
}

// TestRedisGCRAMatchesReference runs random sequences of takes on the real
// server and replays each on gcraRef at the instant Redis reports: the
// decisions must be equal, exactly.
func TestRedisGCRAMatchesReference(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	seed := time.Now().UnixNano()
	rng := mrand.New(mrand.NewSource(seed))
	t.Logf("seed %d", seed)
	denied, partial := 0, 0
	for round := 0; round < 6; round++ {
		interval := int64(200 + rng.Intn(3000))
		burst := int64(1 + rng.Intn(6))
		tolerance := interval * (burst - 1)
		key := redisBucketKey("gcra@test", interval, tolerance, strconv.Itoa(round))
		var tat int64
		for i := 0; i < 50; i++ {
			n := int64(1 + rng.Intn(4))
			g, w, r, now, err := c.takeTokens(key, interval, tolerance, n)
			if err != nil {
				t.Fatal(err)
			}
			var wantG, wantW, wantR int64
			tat, wantG, wantW, wantR = gcraRef(tat, now, interval, tolerance, n)
			switch {
			case g == 0:
				denied++
			case g < n:
				partial++
			}
			if g != wantG || w != wantW || r != wantR {
				t.Fatalf("seed %d round %d call %d (I=%d burst=%d n=%d): redis gave g=%d wait=%d rem=%d, the reference g=%d wait=%d rem=%d",
					seed, round, i, interval, burst, n, g, w, r, wantG, wantW, wantR)
			}
			time.Sleep(time.Duration(rng.Intn(int(interval*2))) * time.Microsecond)
		}
	}
	// The sequences reached the states that matter.
	if denied == 0 || partial == 0 {
		t.Errorf("seed %d: %d denied, %d partial grants; want some of each", seed, denied, partial)
	}
	t.Logf("%d denied, %d partial grants", denied, partial)
}

// TestRedisGCRABurstThenRate checks the script on the real clock: a fresh key
// grants burst at once, then about one token per interval, never more than
// burst + T/interval over T.
func TestRedisGCRABurstThenRate(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	const interval, burst = int64(10000), int64(5) // 100/s
	key := redisBucketKey("rate@test", interval, interval*(burst-1), "c")
	g, w, r, start, err := c.takeTokens(key, interval, interval*(burst-1), 100)
	if err != nil {
		t.Fatal(err)
	}
	if g != burst || r != 0 || w <= 0 || w > interval {
		t.Fatalf("fresh key, 100 wanted: granted %d wait %d remaining %d; want %d, (0, %d], 0", g, w, r, burst, interval)
	}
	total, now := g, start
	for now-start < 300000 {
		g, _, _, now, err = c.takeTokens(key, interval, interval*(burst-1), 1)
		if err != nil {
			t.Fatal(err)
		}
		total += g
	}
	elapsed := now - start
	if bound := burst + elapsed/interval; total > bound || total < bound-2 {
		t.Errorf("%d tokens in %dus, want burst + T/I = %d (at most)", total, elapsed, bound)
	}
}

// TestRedisGCRAIsAtomic: concurrent takes on one key grant exactly burst.
func TestRedisGCRAIsAtomic(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 8})
	const interval, burst = int64(3600e6), int64(20) // one token an hour
	key := redisBucketKey("atomic@test", interval, interval*(burst-1), "c")
	var mu sync.Mutex
	var granted int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				g, _, _, _, err := c.takeTokens(key, interval, interval*(burst-1), int64(1+(i+j)%2))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				granted += g
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if granted != burst {
		t.Errorf("granted %d, want burst %d", granted, burst)
	}
}

// TestRedisGCRAKeyExpires: a key lives for its refill time, stores tat
// exactly, and is gone once the bucket is full again.
func TestRedisGCRAKeyExpires(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	const interval, burst = int64(100000), int64(3) // refill: 300ms
	key := redisBucketKey("ttl@test", interval, interval*(burst-1), "c")
	g, _, _, now, err := c.takeTokens(key, interval, interval*(burst-1), burst)
	if err != nil || g != burst {
		t.Fatalf("granted %d, %v", g, err)
	}
	tat := now + burst*interval
	if v := mustDo(t, c, "GET", key); v != strconv.FormatInt(tat, 10) {
		t.Errorf("stored tat %#v, want %d", v, tat)
	}
	if pttl, _ := mustDo(t, c, "PTTL", key).(int64); pttl < 200 || pttl > 301 {
		t.Errorf("PTTL %d ms, want the refill time, 300ms less the time since", pttl)
	}
	deadline := time.Now().Add(3 * time.Second)
	for mustDo(t, c, "EXISTS", key) != int64(0) {
		if time.Now().After(deadline) {
			t.Fatal("the key did not expire")
		}
		time.Sleep(20 * time.Millisecond)
	}
	clock, _ := mustDo(t, c, "TIME").([]interface{})
	sec, _ := strconv.ParseInt(clock[0].(string), 10, 64)
	usec, _ := strconv.ParseInt(clock[1].(string), 10, 64)
	if gone := sec*1e6 + usec; gone < tat {
		t.Errorf("the key was gone %dus before its tat", tat-gone)
	}
	if g, _, _, _, err = c.takeTokens(key, interval, interval*(burst-1), burst); err != nil || g != burst {
		t.Errorf("after expiry: granted %d, %v; want a full bucket", g, err)
	}
}

func TestRedisTakeTokensRejectsBadArguments(t *testing.T) {
	c := newRedisClient(redisOptions{Endpoints: []string{"127.0.0.1:1"}})
	defer c.close()
	for _, args := range [][3]int64{{0, 0, 1}, {1, -1, 1}, {1, 0, 0}} {
		if _, _, _, _, err := c.takeTokens("k", args[0], args[1], args[2]); err == nil || !strings.Contains(err.Error(), "bad arguments") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestRedisBucketKeyNamespaces(t *testing.T) {
	keys := []string{
		redisBucketKey("shop@file", 1000, 0, "10.0.0.1"),
		redisBucketKey("shop@file", 1000, 1000, "10.0.0.1"),
		redisBucketKey("shop@file", 2000, 0, "10.0.0.1"),
		redisBucketKey("other@file", 1000, 0, "10.0.0.1"),
		redisBucketKey("shop@file:1000", 0, 0, "10.0.0.1"),
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Errorf("two buckets share the key %q", k)
		}
		seen[k] = true
	}
}

func TestRedisClientDefaults(t *testing.T) {
	c := newRedisClient(redisOptions{})
	defer c.close()
	o := c.opts
	if !reflect.DeepEqual(o.Endpoints, []string{"localhost:6379"}) || o.DialTimeout != 5*time.Second ||
		o.ReadTimeout != 3*time.Second || o.WriteTimeout != 3*time.Second || o.PoolSize != 10*runtime.GOMAXPROCS(0) {
		t.Errorf("defaults: %+v", o)
	}
	if c.open != 0 || len(c.idle) != 0 || len(c.init) != 0 {
		t.Errorf("open %d, idle %d, init %v", c.open, len(c.idle), c.init)
	}
	c2 := newRedisClient(redisOptions{Username: "u", Password: "p", DB: 2})
	defer c2.close()
	if want := [][]string{{"AUTH", "u", "p"}, {"SELECT", "2"}}; !reflect.DeepEqual(c2.init, want) {
		t.Errorf("init %v, want %v", c2.init, want)
	}
}

// TestRedisTakeTokensLatency measures one takeTokens round trip on loopback,
// compiled or under Yaegi (where the benchmark below is not run).
func TestRedisTakeTokensLatency(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	const calls = 500
	durations := make([]time.Duration, calls)
	for i := 0; i < calls; i++ {
		start := time.Now()
		if _, _, _, _, err := c.takeTokens("latency", 1, 0, 1); err != nil {
			t.Fatal(err)
		}
		durations[i] = time.Since(start)
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	var sum time.Duration
	for _, d := range durations {
		sum += d
	}
	t.Logf("takeTokens over loopback, %d calls: mean %v, p50 %v, p99 %v", calls, sum/calls, durations[calls/2], durations[calls*99/100])
}

func BenchmarkRedisTakeTokens(b *testing.B) {
	srv := newTestRedis(b, false)
	c := testRedisClient(b, redisOptions{Endpoints: []string{srv.addr()}})
	if _, _, _, _, err := c.takeTokens("bench", 1, 0, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, _, _, err := c.takeTokens("bench", 1, 0, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRedisTakeTokensHostileServer: takeTokens reads the script's reply
// with its own reader (readGCRAReply); every reply that is not six integers
// in range is an error, never a panic or a lease out of bounds.
func TestRedisTakeTokensHostileServer(t *testing.T) {
	tests := []struct {
		desc, reply, wantErr string
	}{
		{desc: "garbage", reply: "HTTP/1.1 400 Bad Request\r\n\r\n", wantErr: "unexpected reply"},
		{desc: "four integers, the script of an older version", reply: "*4\r\n:1\r\n:0\r\n:9\r\n:1\r\n", wantErr: "unexpected reply"},
		{desc: "a bulk string among them", reply: "*6\r\n$1\r\n1\r\n:0\r\n:9\r\n:1\r\n:1\r\n:0\r\n", wantErr: "unexpected reply"},
		{desc: "more granted than asked", reply: "*6\r\n:5\r\n:0\r\n:9\r\n:1\r\n:1\r\n:0\r\n", wantErr: "out of range"},
		{desc: "negative granted", reply: "*6\r\n:-1\r\n:0\r\n:9\r\n:1\r\n:1\r\n:0\r\n", wantErr: "out of range"},
		{desc: "negative remaining", reply: "*6\r\n:1\r\n:0\r\n:-9\r\n:1\r\n:1\r\n:0\r\n", wantErr: "out of range"},
		{desc: "more given back than asked", reply: "*6\r\n:1\r\n:0\r\n:9\r\n:1\r\n:1\r\n:3\r\n", wantErr: "out of range"},
		{desc: "a wait of centuries", reply: "*6\r\n:0\r\n:9223372036854775\r\n:0\r\n:1\r\n:1\r\n:0\r\n", wantErr: "out of range"},
		{desc: "an integer too long", reply: "*6\r\n:1\r\n:0\r\n:9\r\n:99999999999999999999\r\n:1\r\n:0\r\n", wantErr: "unexpected reply"},
		{desc: "not a number", reply: "*6\r\n:1\r\n:x\r\n:9\r\n:1\r\n:1\r\n:0\r\n", wantErr: "bad integer"},
		{desc: "closes mid-array", reply: "*6\r\n:1\r\n", wantErr: "unexpected EOF"},
		{desc: "closes without a reply", reply: "", wantErr: "EOF"},
		{desc: "an error reply", reply: "-BUSY Redis is busy running a script\r\n", wantErr: "redis: BUSY"},
		{desc: "endless line", reply: strings.Repeat(":", 1<<16), wantErr: "line too long"},
	}
	for _, test := range tests {
		c := testRedisClient(t, redisOptions{Endpoints: []string{fakeRedis(t, test.reply)}, ReadTimeout: time.Second})
		g, w, r, _, err := c.takeTokens("k", 10, 100, 2)
		if err == nil || !strings.Contains(err.Error(), test.wantErr) {
			t.Errorf("%s: got %d %d %d %v, want an error with %q", test.desc, g, w, r, err, test.wantErr)
		}
	}
	c := testRedisClient(t, redisOptions{Endpoints: []string{fakeRedis(t, "*6\r\n:2\r\n:0\r\n:7\r\n:-5\r\n:15\r\n:0\r\n")}})
	if g, w, r, now, err := c.takeTokens("k", 10, 100, 2); err != nil || g != 2 || w != 0 || r != 7 || now != -5 {
		t.Errorf("the fake server's sane reply: %d %d %d %d %v", g, w, r, now, err)
	}
}

// TestRedisTakeTokensAfterScriptFlush: a server that lost the script
// (SCRIPT FLUSH, a restart) answers EVALSHA with NOSCRIPT; takeTokens then
// runs it with EVAL, once, and the bucket is the same one.
func TestRedisTakeTokensAfterScriptFlush(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}, PoolSize: 1})
	const interval, tolerance = 1000000000, 9000000000 // a burst of 10, no refill during the test
	if g, _, r, _, err := c.takeTokens("flush", interval, tolerance, 4); err != nil || g != 4 || r != 6 {
		t.Fatalf("first take: %d granted, %d left, %v", g, r, err)
	}
	mustDo(t, c, "SCRIPT", "FLUSH")
	evals := func() string {
		v := redisInfoField(t, c, "commandstats", "cmdstat_eval")
		return v[:strings.IndexByte(v+",", ',')]
	}
	evalsBefore := evals()
	connsBefore := redisInfoField(t, c, "stats", "total_connections_received")
	for i, want := range []int64{4, 2} {
		if g, _, r, _, err := c.takeTokens("flush", interval, tolerance, 2); err != nil || g != 2 || r != want {
			t.Fatalf("take %d after the flush: %d granted, %d left, %v", i, g, r, err)
		}
	}
	// The first take of the test loaded the script with EVAL too.
	if before, after := evalsBefore, evals(); before != "calls=1" || after != "calls=2" {
		t.Errorf("cmdstat_eval %s before the flush and %s after it: want one EVAL after it", before, after)
	}
	if conns := redisInfoField(t, c, "stats", "total_connections_received"); conns != connsBefore {
		t.Errorf("connections received: %s, then %s: the NOSCRIPT reply must leave the connection in step", connsBefore, conns)
	}
}

// TestRedisGCRAGivesBackUnspentTokens: tokens given back with a call (the
// rest of a replaced lease) are the bucket's again, as long as their slots
// are still ahead of Redis's clock, never more than a full bucket.
func TestRedisGCRAGivesBackUnspentTokens(t *testing.T) {
	srv := newTestRedis(t, false)
	c := testRedisClient(t, redisOptions{Endpoints: []string{srv.addr()}})
	g := newGCRACall(1000000000, 9000000000) // a burst of 10, no refill during the test
	until := map[string]int64{}              // the tat after each key's last call
	for _, step := range []struct {
		key                                    string
		n, back                                int64
		wantGranted, wantRemains, wantReturned int64
	}{
		{key: "back", n: 10, wantGranted: 10, wantRemains: 0},
		{key: "back", n: 1, back: 4, wantGranted: 1, wantRemains: 3, wantReturned: 4}, // 4 back, 1 taken
		{key: "back", n: 5, back: 0, wantGranted: 3, wantRemains: 0},                  // only the 3 left
		{key: "back", n: 1, back: 2, wantGranted: 1, wantRemains: 1, wantReturned: 2}, // given back with nothing else left
		{key: "fresh", n: 1, back: 5, wantGranted: 1, wantRemains: 9},                 // a full bucket takes nothing back
	} {
		r, err := c.takeGCRA(g, "gcra:", step.key, step.n, step.back, until[step.key])
		if err != nil || r.granted != step.wantGranted || r.remaining != step.wantRemains || r.returned != step.wantReturned {
			t.Errorf("%s: take %d giving back %d: %d granted, %d left, %d returned, %v; want %d, %d, %d", step.key, step.n, step.back, r.granted, r.remaining, r.returned, err,
				step.wantGranted, step.wantRemains, step.wantReturned)
		}
		until[step.key] = r.tatUs
	}
	// Tokens whose slots time has passed came back with it: giving them
	// back again would hand them out twice.
	fast := newGCRACall(10000, 90000) // a burst of 10, a token every 10 ms
	r, err := c.takeGCRA(fast, "gcra:", "lapsed", 5, 0, 0)
	if err != nil || r.granted != 5 {
		t.Fatalf("lapsed: %+v %v", r, err)
	}
	time.Sleep(80 * time.Millisecond)
	if r2, err := c.takeGCRA(fast, "gcra:", "lapsed", 10, 5, r.tatUs); err != nil || r2.returned != 0 || r2.granted != 10 {
		t.Errorf("lapsed: giving back 5 whose slots have passed: %+v %v; want 0 returned, the 10 of a full bucket", r2, err)
	}
}

// eval, a test helper, runs s with EVALSHA and, when the server does not have it (NOSCRIPT:
// a restart, SCRIPT FLUSH, a failover), with EVAL, which also caches it.
func (c *redisClient) eval(s *redisScript, keys, args []string) (interface{}, error) {
	cmd := make([]string, 0, 3+len(keys)+len(args))
	cmd = append(cmd, "EVALSHA", s.sha, strconv.Itoa(len(keys)))
	cmd = append(cmd, keys...)
	cmd = append(cmd, args...)
	reply, err := c.do(cmd...)
	if !isRedisServerError(err, "NOSCRIPT") {
		return reply, err
	}
	cmd[0], cmd[1] = "EVAL", s.src
	return c.do(cmd...)
}

// takeTokens, a test helper, runs gcraScript on key: it takes up to n tokens and returns how
// many it granted, the wait in microseconds until one more can be taken, the
// tokens left at nowUs, and nowUs, Redis's clock. See gcraScript for the
// formulas. intervalUs must be at least 1, toleranceUs at least 0, n at
// least 1.
func (c *redisClient) takeTokens(key string, intervalUs, toleranceUs, n int64) (granted, waitUs, remaining, nowUs int64, err error) {
	if intervalUs < 1 || toleranceUs < 0 || n < 1 {
		return 0, 0, 0, 0, fmt.Errorf("redis gcra: bad arguments interval=%d tolerance=%d n=%d", intervalUs, toleranceUs, n)
	}
	r, err := c.takeGCRA(newGCRACall(intervalUs, toleranceUs), "", key, n, 0, 0)
	return r.granted, r.waitUs, r.remaining, r.nowUs, err
}
