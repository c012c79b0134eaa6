package bench

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Noop is the ceiling: a fasthttp server that answers every request with
// 200 and "{}", which the harness starts itself on loopback and hits with
// the same client as a holdfast target, one request per operation. Every
// reserve is granted and every pool is in stock; it keeps no state, so
// its Ledger is ErrNoLedger and the correctness checks are n/a.
type Noop struct {
	addr  string
	nodes *httpNodes
	srv   *fasthttp.Server
	ln    net.Listener
	seq   atomic.Uint64
}

// OpenNoop opens "noop://" (a server on a free loopback port) or
// "noop://host:port" (a server listening there).
func OpenNoop(rawURL string, opts TargetOptions) (Target, error) {
	rest, ok := strings.CutPrefix(rawURL, "noop://")
	if !ok {
		return nil, fmt.Errorf("target %q: want noop:// or noop://host:port", rawURL)
	}
	addr := strings.TrimSuffix(rest, "/")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("noop target: %w", err)
	}
	n := &Noop{addr: ln.Addr().String(), ln: ln}
	n.srv = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusOK)
			ctx.SetContentType("application/json")
			ctx.SetBodyString("{}")
		},
		Name:                  "noop",
		NoDefaultServerHeader: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           60 * time.Second,
	}
	go n.srv.Serve(ln) //nolint:errcheck // ends with Close
	n.nodes = newHTTPNodes([]string{n.addr}, opts)
	return n, nil
}

// Name implements Target.
func (n *Noop) Name() string { return "noop" }

// Addr is where the no-op server listens.
func (n *Noop) Addr() string { return n.addr }

// Close implements Target: it stops the server.
func (n *Noop) Close() error {
	n.nodes.close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return n.srv.ShutdownWithContext(ctx)
}

func (n *Noop) call(ctx context.Context, method, path string, body []byte, key string) error {
	st, _, err := n.nodes.do(ctx, method, path, body, key)
	if err == nil && st != 200 {
		err = fmt.Errorf("noop: HTTP %d", st)
	}
	return err
}

// Setup implements Target: one PUT per pool.
func (n *Noop) Setup(ctx context.Context, pools []PoolSpec) error {
	return parallel(ctx, len(pools), 64, func(i int) error {
		return n.call(ctx, "PUT", "/v1/pools/"+url.PathEscape(pools[i].ID), poolBody(pools[i]), "")
	})
}

// Reserve implements Target: always granted.
func (n *Noop) Reserve(ctx context.Context, r ReserveRequest) (Hold, error) {
	b := make([]byte, 0, 128)
	b = append(b, `{"buyer":`...)
	b = strconv.AppendQuote(b, r.Buyer)
	b = append(b, `,"lines":[{"pool":`...)
	b = strconv.AppendQuote(b, r.Pool)
	b = append(b, `,"qty":`...)
	b = strconv.AppendInt(b, max(r.Qty, 1), 10)
	b = append(b, `}]}`...)
	if err := n.call(ctx, "POST", "/v1/reservations", b, r.IdemKey); err != nil {
		return Hold{Outcome: Failed}, err
	}
	return Hold{ID: "n_" + strconv.FormatUint(n.seq.Add(1), 16), Outcome: OK}, nil
}

// Confirm implements Target.
func (n *Noop) Confirm(ctx context.Context, h Hold) (Outcome, error) {
	if err := n.call(ctx, "POST", "/v1/reservations/"+h.ID+"/confirm", nil, "confirm-"+h.ID); err != nil {
		return Failed, err
	}
	return OK, nil
}

// Release implements Target.
func (n *Noop) Release(ctx context.Context, h Hold) (Outcome, error) {
	if err := n.call(ctx, "POST", "/v1/reservations/"+h.ID+"/release", nil, "release-"+h.ID); err != nil {
		return Failed, err
	}
	return OK, nil
}

// InStock implements Target: always in stock.
func (n *Noop) InStock(ctx context.Context, pool string) (bool, error) {
	if err := n.call(ctx, "GET", "/v1/pools/"+url.PathEscape(pool), nil, ""); err != nil {
		return false, err
	}
	return true, nil
}

// Ledger implements Target: there is no state.
func (n *Noop) Ledger(context.Context, []string, []string) (Ledger, error) {
	return Ledger{}, ErrNoLedger
}
