package plugin

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestRev21BoundAtAReloadKeepsALiveClientOpen: Traefik cancels the previous
// configuration's context, then calls New for each router of the next one
// (routerfactory.go), so every eviction at the bound of limiters happens
// while the middlewares not yet rebuilt look removed (their context done).
// evictLimiter then takes the oldest of them, a middleware still configured
// whose handlers serve until Traefik switches, and closes its Redis client
// at once. TestLimitersBoundKeepsALiveClientOpen calls New with the previous
// context still live, an order Traefik never uses.
func TestRev21BoundAtAReloadKeepsALiveClientOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 4097 limiters")
	}
	srv := newTestRedis(t, false)
	const name = "rev21-bound-live@file"
	first, reload := context.WithCancel(context.Background())
	defer reload()
	l, err := newLimiter(first, name, sharedConfig(srv.addr(), 10, "1s", 10))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxLimiters-1; i++ {
		if _, err := newLimiter(first, fmt.Sprintf("rev21-bound-filler-%d@file", i), rlConfig(10, "1s", 1)); err != nil {
			t.Fatal(err)
		}
	}
	// The next configuration: a new middleware's New comes before name's.
	reload()
	second, done := context.WithCancel(context.Background())
	defer done()
	if _, err := newLimiter(second, "rev21-bound-new@file", rlConfig(10, "1s", 1)); err != nil {
		t.Fatal(err)
	}
	if limiterKept(name, l) {
		t.Fatal("the oldest limiter was not the one dropped at the bound")
	}
	if atomic.LoadInt32(&l.shared.client.closed) != 0 {
		t.Fatal("making room at the bound during a reload closed the Redis client of a middleware still configured, whose handlers serve until Traefik switches")
	}
	if code, _ := sharedRequest(l, "alice"); code != http.StatusOK {
		t.Fatalf("a request the configuration still serving sends through its limiter: %d", code)
	}
}
