package api_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/raftstore"
)

// logNode is a one-node log in memory: Propose applies the command to its
// allocator at the node's clock, once the gate is open; ReadBarrier
// succeeds at once (it is the leader and applies synchronously).
type logNode struct {
	m     *allocator.Machine
	nowMs int64
	gate  chan struct{} // Propose waits until it is closed

	mu      sync.Mutex
	kinds   []allocator.Kind // of every command proposed
	refused []allocator.Refusal
}

func newLogNode(m *allocator.Machine, nowMs int64, open bool) *logNode {
	n := &logNode{m: m, nowMs: nowMs, gate: make(chan struct{})}
	if open {
		close(n.gate)
	}
	return n
}

func (n *logNode) ID() string { return "n1" }
func (n *logNode) Propose(ctx context.Context, b []byte) (any, error) {
	select {
	case <-n.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c, err := allocator.DecodeCommand(b)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.kinds = append(n.kinds, c.Kind)
	n.refused = append(n.refused, c.Refusals...)
	return n.m.Apply(n.nowMs, []allocator.Command{c}, nil)[0], nil
}
func (n *logNode) ReadBarrier(context.Context) error     { return nil }
func (n *logNode) NowMs() int64                          { return n.nowMs }
func (n *logNode) IsLeader() bool                        { return true }
func (n *logNode) Leader() (id, apiAddr string, ok bool) { return "n1", "", true }
func (n *logNode) Status() raftstore.Status              { return raftstore.Status{ID: "n1"} }
func (n *logNode) Consistent(read func(uint64))          { read(n.Status().AppliedIndex) }
func (n *logNode) Err() error                            { return nil }
func (n *logNode) proposed() ([]allocator.Kind, []allocator.Refusal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]allocator.Kind(nil), n.kinds...), append([]allocator.Refusal(nil), n.refused...)
}

const fastT0 = int64(1_800_000_000_000)

// soldOutMachine has pool "p" (2 units, limit 1, both held by a and b)
// and pool "q" (10 units, limit 2).
func soldOutMachine(t *testing.T) *allocator.Machine {
	t.Helper()
	m := allocator.New(allocator.Config{})
	p := allocator.DefaultPoolConfig(2)
	p.PerBuyerLimit = 1
	q := allocator.DefaultPoolConfig(10)
	q.PerBuyerLimit = 2
	for _, c := range []allocator.Command{
		{Kind: allocator.KindPutPool, Pool: "p", Config: p},
		{Kind: allocator.KindPutPool, Pool: "q", Config: q},
		{Kind: allocator.KindReserve, Buyer: "a", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}},
		{Kind: allocator.KindReserve, Buyer: "b", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}},
	} {
		if r := m.Apply(fastT0, []allocator.Command{c}, nil)[0]; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return m
}

func post(srv *api.Server, path, body string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI(path)
	req.Header.SetContentType("application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBodyString(body)
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, nil, nil)
	srv.Handle(ctx)
	return ctx
}

// TestFastRefusals: the leader answers certain refusals of requests
// without an Idempotency-Key from its state, without waiting for the log,
// byte for byte as the log would, and records them in a batch that leaves
// the state the log path leaves. Keyed requests always go through the log.
func TestFastRefusals(t *testing.T) {
	fastM, slowM := soldOutMachine(t), soldOutMachine(t)
	fastN := newLogNode(fastM, fastT0+10, false) // the log is stuck for now
	slowN := newLogNode(slowM, fastT0+10, true)
	cfg := func(n api.Node, m *allocator.Machine, disable bool) api.Config {
		return api.Config{Node: n, Alloc: m, Registry: prometheus.NewRegistry(), Logger: quietLogger(),
			RequestTimeout: 5 * time.Second, DisableFastRefusals: disable}
	}
	fast := api.New(cfg(fastN, fastM, false))
	slow := api.New(cfg(slowN, slowM, true))

	requests := []string{
		`{"buyer":"c","lines":[{"pool":"p","qty":1}]}`,                               // sold out
		`{"buyer":"a","lines":[{"pool":"p","qty":1}]}`,                               // over the limit
		`{"buyer":"c","lines":[{"pool":"q","qty":2},{"pool":"p","qty":1}]}`,          // q would fit
		`{"buyer":"c","lines":[{"pool":"p","qty":1}],"mode":"partial","ttl_ms":500}`, // nothing fits
		`{"buyer":"d","lines":[{"pool":"q","qty":3}]}`,                               // over q's limit
	}
	var wg sync.WaitGroup
	bodies := make([][]byte, len(requests))
	for i, body := range requests {
		wg.Go(func() {
			done := make(chan *fasthttp.RequestCtx, 1)
			go func() { done <- post(fast, "/v1/reservations", body) }()
			select {
			case ctx := <-done:
				bodies[i] = append([]byte(nil), ctx.Response.Body()...)
				if ctx.Response.StatusCode() != 409 {
					t.Errorf("%s: status %d: %s", body, ctx.Response.StatusCode(), ctx.Response.Body())
				}
			case <-time.After(3 * time.Second):
				t.Errorf("%s: the refusal waited for the log", body)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, body := range requests {
		want := post(slow, "/v1/reservations", body)
		if !bytes.Equal(bodies[i], want.Response.Body()) {
			t.Fatalf("%s:\nfast %s\nlog  %s", body, bodies[i], want.Response.Body())
		}
	}

	// A keyed request waits for the log, even when it is a refusal.
	keyed := make(chan *fasthttp.RequestCtx, 1)
	go func() { keyed <- post(fast, "/v1/reservations", requests[0], "Idempotency-Key", "k-1") }()
	select {
	case ctx := <-keyed:
		t.Fatalf("a keyed refusal was answered without the log: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	case <-time.After(100 * time.Millisecond):
	}

	// The log comes back: the batch records every refusal, the keyed
	// request is answered through the log.
	close(fastN.gate)
	if ctx := <-keyed; ctx.Response.StatusCode() != 409 || !bytes.Equal(ctx.Response.Body(), bodies[0]) {
		t.Fatalf("keyed refusal: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	post(slow, "/v1/reservations", requests[0], "Idempotency-Key", "k-1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		kinds, refused := fastN.proposed()
		if len(refused) == len(requests) {
			var nReserve int
			for _, k := range kinds {
				switch k {
				case allocator.KindReserve:
					nReserve++
				case allocator.KindRefusals:
				default:
					t.Fatalf("unexpected command %v", k)
				}
			}
			if nReserve != 1 {
				t.Fatalf("%d reserves through the log, want the keyed one", nReserve)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refusals recorded, want %d", len(refused), len(requests))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if fastM.StateHash() != slowM.StateHash() {
		t.Fatal("state after recorded refusals differs from the state after the log's refusals")
	}

	// Units come back: the next request is held, through the log.
	for _, m := range []*allocator.Machine{fastM, slowM} {
		m.Apply(fastT0+20, []allocator.Command{{Kind: allocator.KindAdjustPool, Pool: "p", Delta: 5}}, nil)
	}
	held := post(fast, "/v1/reservations", requests[0])
	if held.Response.StatusCode() != 201 {
		t.Fatalf("after a restock: %d %s", held.Response.StatusCode(), held.Response.Body())
	}
	if kinds, _ := fastN.proposed(); kinds[len(kinds)-1] != allocator.KindReserve {
		t.Fatalf("a grant did not go through the log: %v", kinds)
	}
}

// TestFastRefusalsUnderLoad: many concurrent refusals on a real 3-node
// cluster are all answered sold_out, every replica counts every one of them
// in the pool's demand, and the replicas' states stay identical. A loaded
// machine may cost the cluster its leader meanwhile: clients then retry a
// 503 as they should, and the counts may lose a batch (answers given, not
// yet recorded) or count a retried request twice, but never differ
// between replicas.
func TestFastRefusalsUnderLoad(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	wantStatus(t, leader, leader.call(t, "PUT", "/v1/pools/drop", `{"on_hand":1,"per_buyer_limit":1}`), 201)
	wantStatus(t, leader, leader.call(t, "POST", "/v1/reservations", `{"buyer":"w","lines":[{"pool":"drop","qty":1}]}`), 201)
	before := leader.machine.Alloc.Stats().Refused

	const n = 600
	var wg sync.WaitGroup
	var retries atomic.Int64
	errs := make(chan string, n)
	for w := range 24 {
		wg.Go(func() {
			for i := w; i < n; i += 24 {
				var hdr []string
				if i%2 == 0 {
					hdr = []string{"Idempotency-Key", fmt.Sprintf("key-%d", i)}
				}
				r := leader.call(t, "POST", "/v1/reservations", fmt.Sprintf(`{"buyer":"b%d","lines":[{"pool":"drop","qty":1}]}`, i), hdr...)
				for try := 0; r.status == 503 && try < 100; try++ {
					retries.Add(1)
					time.Sleep(20 * time.Millisecond)
					r = leader.call(t, "POST", "/v1/reservations", fmt.Sprintf(`{"buyer":"b%d","lines":[{"pool":"drop","qty":1}]}`, i), hdr...)
				}
				if r.status != 409 || !bytes.Contains(r.body, []byte(`"sold_out"`)) {
					errs <- fmt.Sprintf("%d %s", r.status, r.body)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("a refusal answered %s", e)
	}
	deadline := time.Now().Add(10 * time.Second)
	if retries.Load() == 0 {
		for _, x := range nodes {
			for x.machine.Alloc.Stats().Refused-before != n {
				if time.Now().After(deadline) {
					t.Fatalf("%s counted %d refusals, want %d", x.id, x.machine.Alloc.Stats().Refused-before, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	} else {
		t.Logf("%d retries of 503 answers: the cluster changed leaders under load", retries.Load())
	}
	// Converged: every replica at the same applied index with the same
	// state (batches may still be landing; wait for a quiet moment).
	for {
		idx, h := nodes[0].node.Status().AppliedIndex, nodes[0].machine.Alloc.StateHash()
		same := true
		for _, x := range nodes[1:] {
			same = same && x.node.Status().AppliedIndex == idx && x.machine.Alloc.StateHash() == h
		}
		if same && nodes[0].node.Status().AppliedIndex == idx {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replicas' states did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
