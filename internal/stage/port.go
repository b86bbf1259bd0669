package stage

import (
	"errors"
	"math/rand"
	"net"
	"strconv"
	"sync"
)

// The ports FreePort picks from: below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768 and up by default), so that no
// outgoing connection, and no server that binds ":0", is given the port
// between FreePort's check and the caller's bind ("address already in use",
// seen with a busy suite).
const (
	portLow  = 20000
	portHigh = 32000
)

// handedOut holds the ports FreePort has returned in this process: two
// servers started at the same time cannot be given the same port.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// FreePort returns a TCP port on 127.0.0.1 that is free now, that this
// process has not been given before, and that is outside the kernel's
// ephemeral range (see portLow). Only another process that binds the same
// range can still take it before the caller does.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for i := 0; i < 200; i++ {
		port := portLow + rand.Intn(portHigh-portLow)
		if handedOut.m[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut.m[port] = true
		return port, nil
	}
	return 0, errors.New("no free port between 20000 and 32000 on 127.0.0.1")
}
