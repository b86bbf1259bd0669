package stage

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortNeverTwice: ports handed out in one process are distinct, free
// when handed out, and below the ephemeral range. (500 random picks among
// 12,000 ports repeat one with a probability above 0.9999.)
func TestFreePortNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 500; i++ {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		if p < portLow || p >= portHigh {
			t.Fatalf("port %d outside [%d, %d)", p, portLow, portHigh)
		}
		seen[p] = true
	}
}

// TestFreePortSkipsABoundPort: a port some server holds is not handed out.
func TestFreePortSkipsABoundPort(t *testing.T) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for p := portLow; p < portLow+2000; p++ {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			held = append(held, l)
		}
	}
	for i := 0; i < 300; i++ {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < portLow+2000 {
			for _, l := range held {
				if l.Addr().(*net.TCPAddr).Port == p {
					t.Fatalf("port %d is bound and was handed out", p)
				}
			}
		}
	}
}
