package api_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/raftstore"
)

// follower returns a node of the cluster that is not the leader.
func follower(t testing.TB, nodes []*testNode) *testNode {
	t.Helper()
	leader := waitLeader(t, nodes, 10*time.Second)
	for _, n := range nodes {
		if n != leader {
			return n
		}
	}
	t.Fatal("no follower")
	return nil
}

// TestRelayHeadersFromClientsIgnored is the regression test for a client
// that sent X-Holdfast-Forwarded-By to a follower and got 503 "already
// forwarded": what a client puts in the relay headers must not change
// how its request is relayed.
func TestRelayHeadersFromClientsIgnored(t *testing.T) {
	nodes := startCluster(t, 3)
	f := follower(t, nodes)
	for i, hs := range [][]string{
		{"X-Holdfast-Forwarded-By", "n1"},
		{"X-Holdfast-Forwarded-By", f.id},
		{"X-Holdfast-Relay", "0123456789abcdef0123456789abcdef"},
		{"X-Holdfast-Relay", strings.Repeat("junk,", 100) + "junk", "X-Holdfast-Forwarded-By", "n2"},
	} {
		pool := fmt.Sprintf("relay-%d", i)
		r := f.call(t, "PUT", "/v1/pools/"+pool, `{"on_hand": 5}`, hs...)
		if r.status != 201 {
			t.Fatalf("headers %q: status %d: %s", hs, r.status, r.body)
		}
		if via := r.header.Get("X-Holdfast-Via"); via != f.id {
			t.Fatalf("headers %q: X-Holdfast-Via %q, want %q", hs, via, f.id)
		}
		r = f.call(t, "GET", "/v1/pools/"+pool, "", hs...) // a linearizable read is relayed too
		if r.status != 200 {
			t.Fatalf("headers %q: read: status %d: %s", hs, r.status, r.body)
		}
		r = f.call(t, "GET", "/v1/backup", "", hs...) // streamed from the leader
		if r.status != 200 || r.header.Get("X-Holdfast-Via") != f.id {
			t.Fatalf("headers %q: backup: status %d via %q: %.200s", hs, r.status, r.header.Get("X-Holdfast-Via"), r.body)
		}
	}
}

// pointingNode is a follower that believes another node leads.
type pointingNode struct {
	id, leaderID, leaderAddr string
}

func (n *pointingNode) ID() string { return n.id }
func (n *pointingNode) Propose(context.Context, []byte) (any, error) {
	return nil, raftstore.ErrNotLeader
}
func (n *pointingNode) ReadBarrier(context.Context) error { return raftstore.ErrNotLeader }
func (n *pointingNode) NowMs() int64                      { return 0 }
func (n *pointingNode) IsLeader() bool                    { return false }
func (n *pointingNode) Leader() (id, apiAddr string, ok bool) {
	return n.leaderID, n.leaderAddr, true
}
func (n *pointingNode) Status() raftstore.Status     { return raftstore.Status{ID: n.id} }
func (n *pointingNode) Consistent(read func(uint64)) { read(n.Status().AppliedIndex) }
func (n *pointingNode) Err() error                   { return nil }

// TestRelayLoopStops: two nodes that each believe the other leads (a
// moment during an election) relay a request round once; when it comes
// back to a node that relayed it, that node answers 503 unavailable
// rather than relaying it again.
func TestRelayLoopStops(t *testing.T) {
	var hits [2]atomic.Int64
	nodes := [2]*pointingNode{{id: "a", leaderID: "b"}, {id: "b", leaderID: "a"}}
	var addrs [2]string
	for i, n := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		srv := api.New(api.Config{Node: n, Registry: prometheus.NewRegistry(), Logger: quietLogger(), RequestTimeout: 5 * time.Second})
		h := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			hits[i].Add(1)
			srv.Handle(ctx)
		}}
		go h.Serve(ln)
		t.Cleanup(func() { h.Shutdown() })
	}
	nodes[0].leaderAddr, nodes[1].leaderAddr = addrs[1], addrs[0]

	r := do(t, "POST", "http://"+addrs[0]+"/v1/pools/p/adjust", `{"delta": 1}`)
	if r.status != 503 || r.errCode() != "unavailable" || !strings.Contains(string(r.body), "came back") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if a, b := hits[0].Load(), hits[1].Load(); a != 2 || b != 1 {
		t.Fatalf("the request reached a %d and b %d times, want 2 and 1", a, b)
	}
}

// TestRelayBurstWaitsForConnections is the regression test for a burst
// of relayed requests beyond the follower's connections to the leader
// (ForwardMaxConns): they wait up to ForwardConnWait for a connection
// instead of failing at once with 503.
func TestRelayBurstWaitsForConnections(t *testing.T) {
	nodes := startCluster(t, 3)
	f := follower(t, nodes)
	addr := hostileServer(t, f, api.Limits{ForwardMaxConns: 2, ForwardConnWait: 5 * time.Second})
	const burst = 64
	var wg sync.WaitGroup
	failures := make(chan string, burst)
	for i := range burst {
		wg.Go(func() {
			r := do(t, "PUT", fmt.Sprintf("http://%s/v1/pools/burst-%d", addr, i), `{"on_hand": 1}`)
			if r.status != 201 {
				failures <- fmt.Sprintf("%d %s", r.status, r.body)
			}
		})
	}
	wg.Wait()
	close(failures)
	var all []string
	for f := range failures {
		all = append(all, f)
	}
	if len(all) > 0 {
		t.Fatalf("%d of %d relayed writes failed: %v", len(all), burst, all[:min(len(all), 3)])
	}
}
