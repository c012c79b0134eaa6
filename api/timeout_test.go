package api_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/raftstore"
)

// stuckNode is a leader whose replication never completes: Propose and
// ReadBarrier wait for their context, as raftstore's do, and record when
// they were called and the deadline they got.
type stuckNode struct {
	mu    sync.Mutex
	calls []stuckCall
}

type stuckCall struct {
	at, deadline time.Time
	hasDeadline  bool
	cmd          []byte // nil for ReadBarrier
}

func (n *stuckNode) wait(ctx context.Context, cmd []byte) error {
	d, ok := ctx.Deadline()
	n.mu.Lock()
	n.calls = append(n.calls, stuckCall{at: time.Now(), deadline: d, hasDeadline: ok, cmd: cmd})
	n.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (n *stuckNode) ID() string { return "stuck" }
func (n *stuckNode) Propose(ctx context.Context, cmd []byte) (any, error) {
	return nil, n.wait(ctx, cmd)
}
func (n *stuckNode) ReadBarrier(ctx context.Context) error { return n.wait(ctx, nil) }
func (n *stuckNode) NowMs() int64                          { return 0 }
func (n *stuckNode) IsLeader() bool                        { return true }
func (n *stuckNode) Leader() (id, apiAddr string, ok bool) { return "stuck", "", true }
func (n *stuckNode) Status() raftstore.Status              { return raftstore.Status{ID: "stuck"} }
func (n *stuckNode) Consistent(read func(uint64))          { read(n.Status().AppliedIndex) }
func (n *stuckNode) Err() error                            { return nil }
func (n *stuckNode) callsMade() []stuckCall {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]stuckCall(nil), n.calls...)
}
func handleInProcess(srv *api.Server, method, path, body string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, nil, nil)
	srv.Handle(ctx)
	return ctx
}

// TestRequestTimeout: a write or a linearizable read whose replication
// does not finish is answered 503 unavailable (with Retry-After) once
// RequestTimeout has passed, not before, and not much later; every
// request gets its own full timeout even though requests share deadline
// contexts.
func TestRequestTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	const slack = timeout / 100 // the server's deadline sharing window
	node := &stuckNode{}
	srv := api.New(api.Config{Node: node, Registry: prometheus.NewRegistry(), Logger: quietLogger(), RequestTimeout: timeout})

	type result struct {
		start, end time.Time
		ctx        *fasthttp.RequestCtx
	}
	run := func(method, path, body string) result {
		start := time.Now()
		ctx := handleInProcess(srv, method, path, body)
		return result{start, time.Now(), ctx}
	}
	check := func(what string, r result) {
		t.Helper()
		if got := r.ctx.Response.StatusCode(); got != 503 {
			t.Fatalf("%s: status %d: %s", what, got, r.ctx.Response.Body())
		}
		if _, err := errorShape(503, r.ctx.Response.Body()); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ra := string(r.ctx.Response.Header.Peek("Retry-After")); ra != "1" {
			t.Fatalf("%s: Retry-After %q", what, ra)
		}
		if d := r.end.Sub(r.start); d < timeout || d > timeout+time.Second {
			t.Fatalf("%s: answered after %v, want %v (+ scheduling)", what, d, timeout)
		}
	}

	r := run("POST", "/v1/reservations", `{"buyer":"u","lines":[{"pool":"p","qty":1}]}`)
	check("reserve", r)
	if !strings.Contains(string(r.ctx.Response.Body()), "Idempotency-Key") {
		t.Fatalf("reserve: the message should say to retry with the same key: %s", r.ctx.Response.Body())
	}
	check("linearizable read", run("GET", "/v1/pools/p", ""))
	check("confirm", run("POST", "/v1/reservations/r_1/confirm", ""))

	// Concurrent requests, some sharing a deadline context, some not.
	var wg sync.WaitGroup
	results := make([]result, 40)
	buyer := func(i int) string { return "buyer-" + strconv.Itoa(i) + "-end" }
	for i := range results {
		wg.Go(func() {
			time.Sleep(time.Duration(i%10) * time.Millisecond)
			results[i] = run("POST", "/v1/reservations", `{"buyer":"`+buyer(i)+`","lines":[{"pool":"p","qty":1}]}`)
		})
	}
	wg.Wait()
	for i, r := range results {
		check(buyer(i), r)
	}

	// Every wait had a deadline at least RequestTimeout after its request
	// began and at most the sharing window past RequestTimeout after the
	// wait itself began.
	calls := node.callsMade()
	if len(calls) != 3+len(results) {
		t.Fatalf("%d replication waits, want %d", len(calls), 3+len(results))
	}
	for _, c := range calls {
		if !c.hasDeadline {
			t.Fatal("replication wait without a deadline")
		}
		if d := c.deadline.Sub(c.at); d > timeout+slack {
			t.Fatalf("deadline %v after the wait began, want at most %v", d, timeout+slack)
		}
	}
	for i, r := range results {
		n := 0
		for _, c := range calls {
			if !bytes.Contains(c.cmd, []byte(buyer(i))) {
				continue
			}
			n++
			if d := c.deadline.Sub(r.start); d < timeout {
				t.Fatalf("%s: deadline %v after the request began, want at least %v", buyer(i), d, timeout)
			}
		}
		if n != 1 {
			t.Fatalf("%s: %d proposals", buyer(i), n)
		}
	}
}
