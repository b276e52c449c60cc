package keys

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// hostileListener accepts connections on loopback and hands each to serve.
func hostileListener(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return "redis://" + l.Addr().String() + "/0"
}

// TestRedisHostileStore: a store that accepts and never answers, one that answers garbage, and
// one that closes every connection cost each call at most the store timeout and then apply the
// failure mode; nothing panics or hangs.
func TestRedisHostileStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"silent", func(c net.Conn) { _, _ = bufio.NewReader(c).ReadString(0) }},
		{"garbage", func(c net.Conn) {
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
				if _, err := c.Write([]byte("+OK\r\n:7\r\n$-5\r\n\x00\xff garbage\r\n")); err != nil {
					return
				}
			}
		}},
		{"hang-up", func(net.Conn) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := hostileListener(t, tc.serve)
			c, err := NewRedisClient(url, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			var failures atomic.Int64
			open := NewRedis(c, RedisOptions{Timeout: 100 * time.Millisecond, OnFailure: func(error) { failures.Add(1) }})
			closed := NewRedis(c, RedisOptions{Timeout: 100 * time.Millisecond, FailClosed: true})
			start := time.Now()
			for i := 0; i < 5; i++ {
				d := open.Admit("k", Limits{RPM: 3}, t0.Add(time.Duration(i)*time.Second))
				want := Admitted
				if i >= 3 {
					want = RateLimited // the fallback counts
				}
				if d.Verdict != want {
					t.Fatalf("open, call %d: %+v; want verdict %d", i, d, want)
				}
				open.Settle("k", d.Ticket, 1, 0, t0)
				if d := closed.Admit("k", Limits{}, t0); d.Verdict != Unavailable {
					t.Fatalf("closed, call %d: %+v; want unavailable", i, d)
				}
			}
			// Each store fails at most once per storeRetry: two timeouts of 100 ms, not ten.
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("10 calls on a %s store took %v", tc.name, el)
			}
			if failures.Load() == 0 {
				t.Fatal("no failure reported")
			}
		})
	}
}
