package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// httpNodes is the HTTP client of a target: one fasthttp.HostClient per
// node, requests spread over the nodes round-robin. It is shared by the
// holdfast target and the no-op ceiling, so both pay the same client costs.
//
// Requests sent with route toLeader (holdfast's writes and linearizable
// reads) are counted, and the X-Holdfast-Via header of their answers says
// whether a follower forwarded them. With leaderAware, they also go
// straight to the leader once it is known (see learn): the node ids of the
// cluster are mapped to the listed addresses once (setIDs, from each
// node's GET /v1/cluster), and every answer to such a request names the
// leader in X-Holdfast-Node (a forwarded answer carries the leader's id
// there and the follower's in X-Holdfast-Via). A 503 or a transport error
// from the presumed leader forgets it: requests go round-robin again (a
// follower forwards them) until an answer names the leader again.
type httpNodes struct {
	clients []*fasthttp.HostClient
	addrs   []string
	next    atomic.Uint64
	timeout time.Duration
	retries int

	scheme string // http or https
	// authorization is the Authorization header sent with every request
	// ("" for none).
	authorization string

	leaderAware bool
	// ids maps a node id to its index in clients; nil until setIDs.
	ids atomic.Pointer[map[string]int]
	// leader is the known leader's index + 1 (0: unknown).
	leader atomic.Int32
	stats  routeCounters
}

// route says where a request may go.
type route uint8

const (
	// anyNode: any node can answer (stale reads): round-robin.
	anyNode route = iota
	// toLeader: the leader answers (writes, linearizable reads); a
	// follower forwards it.
	toLeader
)

// routeCounters count the requests sent with route toLeader.
type routeCounters struct {
	writes, writesForwarded atomic.Int64
	reads, readsForwarded   atomic.Int64
	direct                  atomic.Int64 // sent to the known leader
	learned, forgotten      atomic.Int64
}

// RouteStats is how a holdfast target's requests that the leader must
// answer were routed: how many went through a follower (answers carrying
// X-Holdfast-Via), how many were sent straight to the known leader, how
// often the client learned a (new) leader and how often it forgot one
// after a 503 or a transport error.
type RouteStats struct {
	LeaderAware        bool    `json:"leader_aware"`
	Writes             int64   `json:"writes"`
	WritesForwarded    int64   `json:"writes_forwarded"`
	ForwardedShare     float64 `json:"forwarded_share"`
	LinearizableReads  int64   `json:"linearizable_reads"`
	ReadsForwarded     int64   `json:"linearizable_reads_forwarded"`
	ReadForwardedShare float64 `json:"linearizable_read_forwarded_share"`
	SentToLeader       int64   `json:"sent_to_leader"`
	LeaderLearned      int64   `json:"leader_learned"`
	LeaderForgotten    int64   `json:"leader_forgotten"`
}

func (h *httpNodes) routeStats() RouteStats {
	c := &h.stats
	return RouteStats{LeaderAware: h.leaderAware,
		Writes: c.writes.Load(), WritesForwarded: c.writesForwarded.Load(),
		LinearizableReads: c.reads.Load(), ReadsForwarded: c.readsForwarded.Load(),
		SentToLeader: c.direct.Load(), LeaderLearned: c.learned.Load(), LeaderForgotten: c.forgotten.Load()}
}

// sub is s minus an earlier snapshot, with the shares filled in.
func (s RouteStats) sub(before RouteStats) RouteStats {
	d := RouteStats{LeaderAware: s.LeaderAware,
		Writes: s.Writes - before.Writes, WritesForwarded: s.WritesForwarded - before.WritesForwarded,
		LinearizableReads: s.LinearizableReads - before.LinearizableReads, ReadsForwarded: s.ReadsForwarded - before.ReadsForwarded,
		SentToLeader:  s.SentToLeader - before.SentToLeader,
		LeaderLearned: s.LeaderLearned - before.LeaderLearned, LeaderForgotten: s.LeaderForgotten - before.LeaderForgotten}
	if d.Writes > 0 {
		d.ForwardedShare = float64(d.WritesForwarded) / float64(d.Writes)
	}
	if d.LinearizableReads > 0 {
		d.ReadForwardedShare = float64(d.ReadsForwarded) / float64(d.LinearizableReads)
	}
	return d
}

// note is the routing in one line, for a target's notes.
func (s RouteStats) note() string {
	mode := "round-robin client (every request to the next node; followers forward)"
	if s.LeaderAware {
		mode = "leader-aware client (writes and linearizable reads to the leader, learned from X-Holdfast-Node; stale and cart reads round-robin)"
	}
	reads := ""
	if s.LinearizableReads > 0 {
		reads = fmt.Sprintf(", %d of %d linearizable reads (%.1f%%)", s.ReadsForwarded, s.LinearizableReads, 100*s.ReadForwardedShare)
	}
	return fmt.Sprintf("%s: %d of %d writes forwarded by a follower (%.1f%%)%s; sent straight to the leader %d; leader learned %d times, forgotten after a 503 or transport error %d times",
		mode, s.WritesForwarded, s.Writes, 100*s.ForwardedShare, reads, s.SentToLeader, s.LeaderLearned, s.LeaderForgotten)
}

// setIDs installs the node id -> client index map.
func (h *httpNodes) setIDs(ids map[string]int) { h.ids.Store(&ids) }

// setLeader makes the node with this id the known leader, if it is one of
// the listed nodes.
func (h *httpNodes) setLeader(id []byte) {
	m := h.ids.Load()
	if m == nil || len(id) == 0 {
		return
	}
	i, ok := (*m)[string(id)]
	if !ok {
		return // a leader the target URL does not list: stay round-robin
	}
	if old := h.leader.Swap(int32(i + 1)); old != int32(i+1) {
		h.stats.learned.Add(1)
	}
}

// forget drops the known leader if it is still the node at index i.
func (h *httpNodes) forget(i int) {
	if h.leader.CompareAndSwap(int32(i+1), 0) {
		h.stats.forgotten.Add(1)
	}
}

// learn counts an answer to a toLeader request and, when leader-aware,
// learns the leader from it.
func (h *httpNodes) learn(method string, resp *fasthttp.Response) {
	via := len(resp.Header.Peek("X-Holdfast-Via")) > 0
	if method == fasthttp.MethodGet {
		h.stats.reads.Add(1)
		if via {
			h.stats.readsForwarded.Add(1)
		}
	} else {
		h.stats.writes.Add(1)
		if via {
			h.stats.writesForwarded.Add(1)
		}
	}
	if h.leaderAware && resp.StatusCode() != fasthttp.StatusServiceUnavailable {
		// Answered or forwarded, X-Holdfast-Node names the node whose
		// state answered: the leader.
		h.setLeader(resp.Header.Peek("X-Holdfast-Node"))
	}
}

// Client defaults when TargetOptions leaves them zero.
const (
	defaultConns   = 512
	defaultTimeout = 10 * time.Second
	defaultRetries = 3
)

func withDefaults(o TargetOptions) TargetOptions {
	if o.Conns <= 0 {
		o.Conns = defaultConns
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	return o
}

// parseNodes splits "scheme://host:port[,host:port...]" into addresses.
func parseNodes(rawURL, scheme string) ([]string, error) {
	rest, ok := strings.CutPrefix(rawURL, scheme+"://")
	if !ok {
		return nil, fmt.Errorf("target %q: want %s://host:port[,host:port...]", rawURL, scheme)
	}
	rest, _, _ = strings.Cut(rest, "/")
	var addrs []string
	for _, a := range strings.Split(rest, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if !strings.Contains(a, ":") {
				return nil, fmt.Errorf("target %q: node %q has no port", rawURL, a)
			}
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

func newHTTPNodes(addrs []string, o TargetOptions) *httpNodes {
	o = withDefaults(o)
	h := &httpNodes{addrs: addrs, scheme: "http", timeout: o.Timeout, retries: o.Retries, leaderAware: o.LeaderAware}
	for _, a := range addrs {
		h.clients = append(h.clients, &fasthttp.HostClient{
			Addr:                      a,
			MaxConns:                  o.Conns,
			MaxConnWaitTimeout:        o.Timeout,
			ReadTimeout:               o.Timeout,
			WriteTimeout:              o.Timeout,
			MaxIdemponentCallAttempts: 1, // retries are ours, with idempotency keys
			MaxIdleConnDuration:       30 * time.Second,
		})
	}
	return h
}

// useTLS makes every node's client speak https with cfg (nil: the
// system's roots).
func (h *httpNodes) useTLS(cfg *tls.Config) {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	h.scheme = "https"
	for _, c := range h.clients {
		c.IsTLS, c.TLSConfig = true, cfg
	}
}

func (h *httpNodes) close() {
	for _, c := range h.clients {
		c.CloseIdleConnections()
	}
}

// errUnavailable is a 503 that stayed 503 after the retries.
var errUnavailable = errors.New("unavailable (503) after retries")

// do sends one request to the next node (round-robin) and returns the
// status and a copy of the body; see send.
func (h *httpNodes) do(ctx context.Context, method, path string, body []byte, idemKey string) (int, []byte, error) {
	return h.send(ctx, anyNode, -1, method, path, body, idemKey)
}

// doLeader sends a request the leader must answer: to the leader when it
// is known and the client is leader-aware, else round-robin.
func (h *httpNodes) doLeader(ctx context.Context, method, path string, body []byte, idemKey string) (int, []byte, error) {
	return h.send(ctx, toLeader, -1, method, path, body, idemKey)
}

// doAt sends a request to the node at index i, without retries.
func (h *httpNodes) doAt(ctx context.Context, i int, method, path string) (int, []byte, error) {
	return h.send(ctx, anyNode, i, method, path, nil, "")
}

// send sends one request and returns the status and a copy of the body.
// The node is the one at index at (when at >= 0; no retries), or the
// leader (rt toLeader, leader-aware, leader known), or the next one
// round-robin. A 503 or a transport error is retried (on the next node,
// with a short backoff) up to h.retries times when the request is safe to
// repeat: a GET, a PUT, or a POST carrying an idempotency key.
func (h *httpNodes) send(ctx context.Context, rt route, at int, method, path string, body []byte, idemKey string) (int, []byte, error) {
	deadline := time.Now().Add(h.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	retryable := method == fasthttp.MethodGet || method == fasthttp.MethodPut || idemKey != ""
	backoff := 10 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		i, toKnownLeader := at, false
		if i < 0 && rt == toLeader && h.leaderAware {
			if l := h.leader.Load(); l > 0 {
				i, toKnownLeader = int(l-1), true
				h.stats.direct.Add(1)
			}
		}
		if i < 0 {
			i = int(h.next.Add(1) % uint64(len(h.clients)))
		}
		c := h.clients[i]
		req.Reset()
		resp.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI(h.scheme + "://" + c.Addr + path)
		if h.authorization != "" {
			req.Header.Set("Authorization", h.authorization)
		}
		if body != nil {
			req.Header.SetContentType("application/json")
			req.SetBodyRaw(body)
		}
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		err := c.DoDeadline(req, resp, deadline)
		status := 0
		if err == nil {
			status = resp.StatusCode()
			if rt == toLeader {
				h.learn(method, resp)
			}
			if status != fasthttp.StatusServiceUnavailable {
				return status, append([]byte(nil), resp.Body()...), nil
			}
			lastErr = errUnavailable
		} else {
			lastErr = err
		}
		if toKnownLeader {
			h.forget(i) // round-robin until an answer names the leader again
		}
		if at >= 0 || !retryable || attempt >= h.retries || time.Now().Add(backoff).After(deadline) {
			if status != 0 {
				return status, append([]byte(nil), resp.Body()...), lastErr
			}
			return 0, nil, lastErr
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, nil, ctx.Err()
		case <-t.C:
		}
		backoff *= 2
	}
}
