package api_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/raftstore"
)

// failedFollower is a follower whose storage failed (a full disk): its
// leader is healthy and would acknowledge anything forwarded to it.
type failedFollower struct{ leaderAddr string }

func (n *failedFollower) ID() string { return "f" }
func (n *failedFollower) Propose(context.Context, []byte) (any, error) {
	return nil, raftstore.ErrNotLeader
}
func (n *failedFollower) ReadBarrier(context.Context) error { return raftstore.ErrNotLeader }
func (n *failedFollower) NowMs() int64                      { return 0 }
func (n *failedFollower) IsLeader() bool                    { return false }
func (n *failedFollower) Leader() (id, apiAddr string, ok bool) {
	return "l", n.leaderAddr, true
}
func (n *failedFollower) Status() raftstore.Status     { return raftstore.Status{ID: "f"} }
func (n *failedFollower) Consistent(read func(uint64)) { read(n.Status().AppliedIndex) }
func (n *failedFollower) Err() error {
	return errors.New("logstore: storage failed, writes refused: write: no space left on device")
}

// TestFailedStorageAcknowledgesNoWrite is the regression test for a bug
// chaos/TestChaosDiskFull found: a follower whose disk filled failed its
// health check but still forwarded writes to the leader and answered 201,
// so a client kept being served "successfully" by a node that cannot
// store anything. Writes must get 503 (retry elsewhere) and never reach
// the leader from there.
func TestFailedStorageAcknowledgesNoWrite(t *testing.T) {
	var forwarded atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leader := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		forwarded.Add(1)
		ctx.SetStatusCode(201)
		ctx.SetBodyString(`{"id":"r_1","state":"active"}`)
	}}
	go leader.Serve(ln)
	defer leader.Shutdown()

	srv := api.New(api.Config{Node: &failedFollower{leaderAddr: ln.Addr().String()}, Registry: prometheus.NewRegistry(), Logger: quietLogger()})
	for _, w := range []struct{ method, path, body string }{
		{"POST", "/v1/reservations", `{"buyer":"u-1","lines":[{"pool":"p","qty":1}]}`},
		{"POST", "/v1/reservations/r_1/confirm", ``},
		{"PUT", "/v1/pools/p", `{"on_hand":10}`},
	} {
		ctx := handleWithHost(srv, w.method, w.path, w.body)
		if ctx.Response.StatusCode() != 503 {
			t.Errorf("%s %s on a node with failed storage: %d %s (want 503)", w.method, w.path, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	if ctx := handleWithHost(srv, "GET", "/v1/health", ""); ctx.Response.StatusCode() != 503 {
		t.Errorf("health on a node with failed storage: %d", ctx.Response.StatusCode())
	}
	if n := forwarded.Load(); n != 0 {
		t.Errorf("%d writes were forwarded to the leader from a node with failed storage", n)
	}
}

// handleWithHost serves one request in process, with a Host header so
// that forwarding it would work.
func handleWithHost(srv *api.Server, method, path, body string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost("127.0.0.1")
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	srv.Handle(ctx)
	return ctx
}
