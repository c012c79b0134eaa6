package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeCluster is three HTTP nodes that answer like holdfast's routing: a
// follower "forwards" a write (answers with the leader's id in
// X-Holdfast-Node and its own in X-Holdfast-Via), the leader answers it
// itself.
type fakeCluster struct {
	mu     sync.Mutex
	ids    []string
	addrs  []string
	leader string
	hits   map[string]int // writes received, by node
	fail   map[string]int // the next n writes to this node answer 503
	srvs   []*fasthttp.Server
}

func newFakeCluster(t *testing.T) *fakeCluster {
	t.Helper()
	fc := &fakeCluster{ids: []string{"n1", "n2", "n3"}, leader: "n2", hits: map[string]int{}, fail: map[string]int{}}
	for _, id := range fc.ids {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fc.addrs = append(fc.addrs, ln.Addr().String())
		srv := &fasthttp.Server{Handler: fc.handler(id)}
		fc.srvs = append(fc.srvs, srv)
		go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	}
	t.Cleanup(func() {
		for _, s := range fc.srvs {
			_ = s.Shutdown()
		}
	})
	return fc
}

func (fc *fakeCluster) handler(id string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		ctx.Response.Header.Set("X-Holdfast-Node", id)
		ctx.SetContentType("application/json")
		path := string(ctx.Path())
		switch {
		case path == "/v1/cluster":
			// Only the leader's own api_addr is known to the others, as in
			// holdfast: discovery must use each node's own id.
			fmt.Fprintf(ctx, `{"id":%q,"leader":%q,"commit_index":7,"applied_index":7,"members":[{"id":"n1"},{"id":"n2"},{"id":"n3"}]}`, id, fc.leader)
		case ctx.IsPost():
			fc.hits[id]++
			if fc.fail[id] > 0 {
				fc.fail[id]--
				ctx.SetStatusCode(503)
				ctx.SetBodyString(`{"error":{"code":"unavailable","message":"no leader"}}`)
				return
			}
			if id != fc.leader {
				ctx.Response.Header.Set("X-Holdfast-Node", fc.leader)
				ctx.Response.Header.Set("X-Holdfast-Via", id)
			}
			ctx.SetStatusCode(201)
			ctx.SetBodyString(`{"id":"r_1","state":"active","expires_at":"2030-01-01T00:00:00.000Z"}`)
		case ctx.IsPut():
			ctx.SetStatusCode(201)
			ctx.SetBodyString(`{}`)
		default: // stale reads
			ctx.SetBodyString(`{"claim":"soft_claim"}`)
		}
	}
}

func (fc *fakeCluster) takeHits() map[string]int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	h := fc.hits
	fc.hits = map[string]int{}
	return h
}

func (fc *fakeCluster) set(f func()) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	f()
}

func openFake(t *testing.T, fc *fakeCluster, aware bool) *Holdfast {
	t.Helper()
	tg, err := OpenHoldfast("http://"+strings.Join(fc.addrs, ","), TargetOptions{Conns: 8, Timeout: 2 * time.Second, Retries: 3, LeaderAware: aware})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	h := tg.(*Holdfast)
	if err := h.Setup(context.Background(), []PoolSpec{{ID: "p", OnHand: 10}}); err != nil {
		t.Fatal(err)
	}
	return h
}

func reserveN(t *testing.T, h *Holdfast, n int) {
	t.Helper()
	for i := range n {
		hd, err := h.Reserve(context.Background(), ReserveRequest{Buyer: "b", Pool: "p", Qty: 1, IdemKey: fmt.Sprint("k", i)})
		if err != nil || hd.Outcome != OK {
			t.Fatalf("reserve %d: %+v %v", i, hd, err)
		}
	}
}

func TestLeaderAwareRouting(t *testing.T) {
	fc := newFakeCluster(t)
	h := openFake(t, fc, true)
	if !strings.Contains(h.DiscoveryNote(), `leader "n2"`) || !strings.Contains(h.DiscoveryNote(), "3 of 3") {
		t.Fatalf("discovery: %s", h.DiscoveryNote())
	}
	fc.takeHits()
	before := h.RouteStats()

	// The leader is known from discovery: every write goes to it.
	reserveN(t, h, 30)
	if hits := fc.takeHits(); hits["n2"] != 30 {
		t.Fatalf("writes by node %v: want all 30 on the leader n2", hits)
	}
	if s := h.RouteStats().sub(before); s.Writes != 30 || s.WritesForwarded != 0 || s.SentToLeader != 30 {
		t.Fatalf("stats %+v", s)
	}

	// Leadership moves to n3 and n2 answers 503 once: the client forgets
	// n2, goes round-robin, and learns n3 from the next answer.
	fc.set(func() { fc.leader = "n3"; fc.fail["n2"] = 1 })
	before = h.RouteStats()
	reserveN(t, h, 30)
	hits := fc.takeHits()
	s := h.RouteStats().sub(before)
	if hits["n3"] < 28 || s.LeaderForgotten != 1 || s.LeaderLearned != 1 || s.WritesForwarded > 1 {
		t.Fatalf("after the move: writes by node %v, stats %+v", hits, s)
	}

	// Stale reads stay spread over every node.
	for range 30 {
		if _, err := h.InStock(context.Background(), "p"); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.RouteStats().sub(before); s.LinearizableReads != 0 {
		t.Fatalf("stale reads counted as linearizable: %+v", s)
	}
}

func TestRoundRobinRouting(t *testing.T) {
	fc := newFakeCluster(t)
	h := openFake(t, fc, false)
	fc.takeHits()
	before := h.RouteStats()
	reserveN(t, h, 30)
	hits := fc.takeHits()
	s := h.RouteStats().sub(before)
	if hits["n1"] != 10 || hits["n2"] != 10 || hits["n3"] != 10 {
		t.Fatalf("writes by node %v: want 10 each", hits)
	}
	if s.LeaderAware || s.Writes != 30 || s.WritesForwarded != 20 || s.SentToLeader != 0 || s.ForwardedShare < 0.66 || s.ForwardedShare > 0.67 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(s.note(), "round-robin") || !strings.Contains(s.note(), "20 of 30 writes forwarded") {
		t.Fatalf("note %q", s.note())
	}
}

func TestFindMaxSummary(t *testing.T) {
	fm := func(max float64) *FindMax {
		return &FindMax{Share: 0.5, MaxPerSec: max, AtInFlight: 64, Rate: max / 2, Stopped: "x",
			Steps: []RampStep{{InFlight: 64, Ops: 10, PerSec: max, P99: 3}}}
	}
	rep := &Report{Scenario: "drop", Settings: map[string]string{}, Targets: []*TargetReport{
		{Target: "holdfast", FindMax: fm(20000), Total: OpReport{P99: 12.5}, Ops: []OpReport{{Op: "reserve"}}},
		{Target: "redis-always", FindMax: fm(40000), Total: OpReport{P99: 1.5}, Ops: []OpReport{{Op: "reserve"}}},
		{Target: "noop", FindMax: fm(50000), Total: OpReport{P99: 0.5}, Ops: []OpReport{{Op: "reserve"}}},
	}}
	var b bytes.Buffer
	rep.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"holdfast x max", "p99 @50%", "0.50", "0.40", "12.50 ms", "max 20000 ops/s at 64 in flight"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}
