// Package api serves holdfast's HTTP/JSON API (see CONTRACT.md) with
// fasthttp. It validates input, turns requests into allocator commands,
// proposes them through a Node and renders results; writes and
// linearizable reads that reach a follower are forwarded to the leader.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/raftstore"
	"github.com/holdfast/holdfast/ui"
)

// Node is the replication layer as the API needs it; *raftstore.Node
// implements it.
type Node interface {
	ID() string
	Propose(ctx context.Context, cmd []byte) (any, error)
	ReadBarrier(ctx context.Context) error
	NowMs() int64
	IsLeader() bool
	Leader() (id, apiAddr string, ok bool)
	Status() raftstore.Status
	Err() error
	// Consistent runs read with applies paused, passing the applied index
	// (GET /v1/cluster?state_hash=1).
	Consistent(read func(appliedIndex uint64))
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	Node  Node
	Alloc *allocator.Machine // local replica, read directly
	Carts Carts              // local replica's carts, read directly
	// Registry serves /metrics and receives the API's metrics; nil makes
	// a private one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// RequestTimeout bounds how long a request waits for replication;
	// default 10s. Past it the answer is 503 unavailable (retry with the
	// same Idempotency-Key: the write may have committed). Requests share
	// deadlines (see deadlines), so a wait may last up to 1% (at most
	// 10 ms) longer, never shorter.
	RequestTimeout time.Duration
	// Auth checks bearer tokens against the roles routes require (see
	// routeRole); nil serves every request without a token.
	Auth Authenticator
	// ForwardTLS, when set, makes forwarding to the leader speak HTTPS
	// with it (the nodes' API is served over TLS); nil: plain HTTP.
	ForwardTLS *tls.Config
	// Limits bounds request time, connections, header size and relaying
	// (limits.go); zero fields take the defaults documented there.
	Limits Limits
	// DisableFastRefusals sends every reservation request through the log;
	// by default the leader answers the ones its state certainly refuses
	// without a log entry (see refusals). For comparisons and tests.
	DisableFastRefusals bool
}

// MaxBodyBytes is the largest request body accepted (contract: 1 MiB).
const MaxBodyBytes = 1 << 20

// Server is the HTTP API of one node.
type Server struct {
	cfg     Config
	node    Node
	alloc   *allocator.Machine
	carts   Carts
	log     *slog.Logger
	metrics *metrics
	promH   fasthttp.RequestHandler
	srv     *fasthttp.Server
	rt      routes
	ops     *ops // membership, backups, drain (cluster.go)
	dl      deadlines
	authz   *authz
	fast    *refusals // nil: every reservation goes through the log

	clientsMu sync.Mutex
	clients   map[string]*fasthttp.HostClient

	relayToken []byte // marks requests this node relayed (limits.go)
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cfg.Limits = cfg.Limits.withDefaults()
	s := &Server{
		cfg:     cfg,
		node:    cfg.Node,
		alloc:   cfg.Alloc,
		carts:   cfg.Carts,
		log:     cfg.Logger,
		clients: make(map[string]*fasthttp.HostClient),

		relayToken: newRelayToken(),
	}
	s.metrics = newMetrics(cfg.Registry, cfg.Alloc)
	if cfg.Alloc != nil && !cfg.DisableFastRefusals {
		s.fast = newRefusals(cfg.Node, cfg.Alloc, cfg.Logger, cfg.RequestTimeout)
	}
	s.authz = newAuthz(cfg)
	s.rt = s.newRoutes()
	s.ops = s.newOps()
	s.dl = deadlines{timeout: cfg.RequestTimeout, slack: min(cfg.RequestTimeout/100, 10*time.Millisecond)}
	s.promH = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	s.srv = s.newHTTPServer(cfg.Limits)
	return s
}

// fasthttpLogger sends fasthttp's own messages (connections it could not
// serve: unreadable requests, bodies over the limit) to the configured
// logger instead of the standard library's, at debug level: they are
// client errors, already answered in the contract's format.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}

// Serve serves the API on ln until Shutdown.
// Accept errors that may pass (out of file descriptors) are retried and
// connections beyond Limits.MaxConns refused (see serveListener).
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(s.serveListener(ln)) }

// Shutdown stops accepting connections and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

// handleParseError answers requests fasthttp could not read, in the
// contract's error format.
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.Set("X-Holdfast-Node", s.node.ID())
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Code: codePayloadTooLarge, Message: "request body over 1 MiB"})
		return
	}
	// fasthttp's error text quotes the raw request buffer (every header):
	// log it, do not echo it.
	s.log.Debug("unreadable request", "remote", ctx.RemoteAddr().String(), "err", err)
	writeError(ctx, badRequest("unreadable HTTP request"))
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding failed"}}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// writeError answers with the contract's error object, as json.Marshal
// of struct{Error *apiError `json:"error"`} would render it.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	if e.Status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	bp := bufPool.Get().(*[]byte)
	b, ok := appendError((*bp)[:0], e)
	status := e.Status
	if !ok {
		status, b = fasthttp.StatusInternalServerError, append(b[:0], encodingFailed...)
	}
	writeBody(ctx, status, bp, b)
}

// route is an endpoint: its name labels metrics. Routes are built once,
// in New.
type route struct {
	name  string
	write bool // proposes; followers forward it
	h     func(*fasthttp.RequestCtx, []string) *apiError
	obs   *routeMetrics
	need  auth.Role // the role a token needs (routeRole)
}

// routes are the Server's endpoints, plus the pseudo-routes that label
// requests matching none.
type routes struct {
	metrics, health, cluster                              *route
	listPools, getPool, putPool, adjustPool               *route
	reserve, getReservation, confirm, release, extend     *route
	createCart, getCart, addLine, merge, review, checkout *route
	setLine, deleteLine, getCheckout, confirmCheckout     *route
	unmatched, methodNotAllowed                           *route
	ui                                                    *route // the dashboard (package ui)
}

func (s *Server) newRoutes() routes {
	r := func(name string, write bool, h func(*fasthttp.RequestCtx, []string) *apiError) *route {
		return &route{name: name, write: write, h: h, obs: s.metrics.route(name), need: routeRole(name)}
	}
	return routes{
		metrics:          r("metrics", false, s.metricsHandler),
		health:           r("health", false, s.health),
		cluster:          r("cluster", false, s.cluster),
		listPools:        r("list_pools", false, s.listPools),
		getPool:          r("get_pool", false, s.getPool),
		putPool:          r("put_pool", true, s.putPool),
		adjustPool:       r("adjust_pool", true, s.adjustPool),
		reserve:          r("reserve", true, s.reserve),
		getReservation:   r("get_reservation", false, s.getReservation),
		confirm:          r("confirm", true, s.confirm),
		release:          r("release", true, s.release),
		extend:           r("extend", true, s.extend),
		createCart:       r("create_cart", true, s.createCart),
		getCart:          r("get_cart", false, s.getCart),
		addLine:          r("add_line", true, s.addLine),
		merge:            r("merge", true, s.mergeCarts),
		review:           r("review", true, s.reviewCart),
		checkout:         r("checkout", true, s.startCheckout),
		setLine:          r("set_line", true, s.setLineQty),
		deleteLine:       r("delete_line", true, s.deleteLine),
		getCheckout:      r("get_checkout", false, s.getCheckout),
		confirmCheckout:  r("confirm_checkout", true, s.confirmCheckout),
		unmatched:        r("unmatched", false, nil),
		ui:               r("ui", false, uiRoute(ui.Handler())),
		methodNotAllowed: r("method_not_allowed", false, nil),
	}
}

// Handle is the fasthttp handler for the whole API.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	ctx.Response.Header.Set("X-Holdfast-Node", s.node.ID())
	rt, args, e := s.match(ctx)
	if ae := s.authz.check(ctx, rt); ae != nil {
		e = ae // before routing errors: no token, no hints
	}
	if e == nil {
		e = s.ops.enter(ctx, rt) // 503 once draining
	}
	if e == nil {
		if rt.write && s.node.Err() != nil {
			// A node whose storage failed acknowledges no write, not even
			// by forwarding it: it says so and the client retries on
			// another node (found by chaos/TestChaosDiskFull).
			e = unavailable("storage failed on this node; retry on another node")
		} else if s.shouldForward(ctx, rt) {
			e = s.forward(ctx)
		} else {
			e = rt.h(ctx, args)
		}
		s.ops.exit()
	}
	if e != nil {
		writeError(ctx, e)
	}
	rt.obs.observe(ctx.Response.StatusCode(), time.Since(start))
}

// maxPathParts is the most path segments a route has
// (/v1/carts/{id}/lines/{line}).
const maxPathParts = 5

// pathParts are a request path's segments, unescaped: slices of the raw
// path (or, for an escaped segment, of its unescaped copy), so matching
// allocates nothing; only a route's arguments become strings.
type pathParts [][]byte

// is reports whether segment i is s.
func (p pathParts) is(i int, s string) bool { return string(p[i]) == s }

// splitPath splits the raw path (query cut, slashes trimmed at both ends)
// on "/" into parts, unescaping each. It returns nil parts when there are
// more than fit (no route has that many), after still checking every
// escape.
func splitPath(raw []byte, parts pathParts) (pathParts, *apiError) {
	if i := bytes.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	raw = bytes.Trim(raw, "/")
	tooMany := false
	for {
		seg, rest, more := bytes.Cut(raw, []byte{'/'})
		if bytes.IndexByte(seg, '%') >= 0 {
			u, err := url.PathUnescape(string(seg))
			if err != nil {
				return nil, badRequest("bad path escape")
			}
			seg = []byte(u)
		}
		if len(parts) < cap(parts) {
			parts = append(parts, seg)
		} else {
			tooMany = true
		}
		if !more {
			break
		}
		raw = rest
	}
	if tooMany {
		return nil, nil
	}
	return parts, nil
}

// match finds the route for the request. Path segments are split on the
// raw path, then unescaped, so a pool id containing "/" works when escaped.
// The route is never nil; with an error it labels the request's metrics.
func (s *Server) match(ctx *fasthttp.RequestCtx) (*route, []string, *apiError) {
	var buf [maxPathParts][]byte
	parts, e := splitPath(ctx.Request.URI().PathOriginal(), buf[:0])
	if e != nil {
		return s.rt.unmatched, nil, e
	}
	m := ctx.Method()
	method := func(want string) bool { return string(m) == want }
	var rt *route
	nargs := 0 // the route's arguments: parts[2], then parts[4]
	notAllowed := func(allowed string) (*route, []string, *apiError) {
		ctx.Response.Header.Set("Allow", allowed)
		return s.rt.methodNotAllowed, nil, &apiError{Status: fasthttp.StatusMethodNotAllowed, Code: codeMethodNotAllowed, Message: "method not allowed; use " + allowed}
	}
	switch {
	case len(parts) >= 1 && parts.is(0, "ui"):
		rt = s.rt.ui // GET and HEAD only: see uiRoute
	case len(parts) == 1 && parts.is(0, "metrics"):
		if !method("GET") {
			return notAllowed("GET")
		}
		rt = s.rt.metrics
	case len(parts) < 2 || !parts.is(0, "v1"):
	case len(parts) == 2 && parts.is(1, "health"):
		if !method("GET") {
			return notAllowed("GET")
		}
		rt = s.rt.health
	case len(parts) == 2 && parts.is(1, "backup"), len(parts) > 2 && parts.is(1, "cluster"):
		return s.matchOps(ctx, parts)
	case len(parts) == 2 && parts.is(1, "cluster"):
		if !method("GET") {
			return notAllowed("GET")
		}
		rt = s.rt.cluster
	case len(parts) == 2 && parts.is(1, "pools"):
		if !method("GET") {
			return notAllowed("GET")
		}
		rt = s.rt.listPools
	case len(parts) == 3 && parts.is(1, "pools"):
		nargs = 1
		switch {
		case method("GET"):
			rt = s.rt.getPool
		case method("PUT"):
			rt = s.rt.putPool
		default:
			return notAllowed("GET, PUT")
		}
	case len(parts) == 4 && parts.is(1, "pools") && parts.is(3, "adjust"):
		if !method("POST") {
			return notAllowed("POST")
		}
		nargs = 1
		rt = s.rt.adjustPool
	case len(parts) == 2 && parts.is(1, "reservations"):
		if !method("POST") {
			return notAllowed("POST")
		}
		rt = s.rt.reserve
	case len(parts) == 3 && parts.is(1, "reservations"):
		if !method("GET") {
			return notAllowed("GET")
		}
		nargs = 1
		rt = s.rt.getReservation
	case len(parts) == 4 && parts.is(1, "reservations"):
		nargs = 1
		switch string(parts[3]) {
		case "confirm":
			rt = s.rt.confirm
		case "release":
			rt = s.rt.release
		case "extend":
			rt = s.rt.extend
		}
		// Only an existing endpoint can refuse a method; an unknown
		// action is 404 whatever the method.
		if rt != nil && !method("POST") {
			return notAllowed("POST")
		}
	}
	if rt == nil && s.carts != nil {
		var allow string
		rt, allow, nargs = s.matchCarts(parts, method)
		if allow != "" {
			return notAllowed(allow)
		}
	}
	if rt == nil {
		return s.rt.unmatched, nil, notFound("no such endpoint")
	}
	switch nargs {
	case 1:
		return rt, []string{string(parts[2])}, nil
	case 2:
		return rt, []string{string(parts[2]), string(parts[4])}, nil
	}
	return rt, nil, nil
}

// matchCarts routes /v1/carts and /v1/checkouts: the route and how many
// arguments it takes (parts[2], then parts[4]), or, for a known path with
// the wrong method, the methods to allow.
func (s *Server) matchCarts(parts pathParts, method func(string) bool) (rt *route, allow string, nargs int) {
	only := func(m string, rt *route, nargs int) (*route, string, int) {
		if !method(m) {
			return nil, m, 0
		}
		return rt, "", nargs
	}
	switch {
	case len(parts) == 2 && parts.is(1, "carts"):
		return only("POST", s.rt.createCart, 0)
	case len(parts) == 3 && parts.is(1, "carts"):
		return only("GET", s.rt.getCart, 1)
	case len(parts) == 4 && parts.is(1, "carts"):
		switch string(parts[3]) {
		case "lines":
			return only("POST", s.rt.addLine, 1)
		case "merge":
			return only("POST", s.rt.merge, 1)
		case "review":
			return only("POST", s.rt.review, 1)
		case "checkout":
			return only("POST", s.rt.checkout, 1)
		}
	case len(parts) == 5 && parts.is(1, "carts") && parts.is(3, "lines"):
		switch {
		case method("PATCH"):
			return s.rt.setLine, "", 2
		case method("DELETE"):
			return s.rt.deleteLine, "", 2
		}
		return nil, "PATCH, DELETE", 0
	case len(parts) == 3 && parts.is(1, "checkouts"):
		return only("GET", s.rt.getCheckout, 1)
	case len(parts) == 4 && parts.is(1, "checkouts") && parts.is(3, "confirm"):
		return only("POST", s.rt.confirmCheckout, 1)
	}
	return nil, "", 0
}

// ---- consistency, forwarding and proposing ----

func (s *Server) stale(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.QueryArgs().Peek("consistency")) == "stale"
}

// shouldForward: writes and linearizable reads go to the leader. Health,
// cluster, metrics and stale reads are answered locally.
func (s *Server) shouldForward(ctx *fasthttp.RequestCtx, rt *route) bool {
	switch rt.name {
	case "health", "cluster", "metrics", "backup", "cluster_members", "ui":
		return false
	}
	if !rt.write && s.stale(ctx) {
		return false
	}
	if rt.name == "get_cart" && string(ctx.QueryArgs().Peek("consistency")) != "linearizable" {
		return false // a cart page is answered locally unless it asks
	}
	return !s.node.IsLeader()
}

const forwardedHeader = "X-Holdfast-Forwarded-By"

// forward relays the request to the leader and its answer back. The
// leader's X-Holdfast-Node names the node whose state answered; the
// follower adds X-Holdfast-Via with its own id.
func (s *Server) forward(ctx *fasthttp.RequestCtx) *apiError {
	if s.relayedHere(&ctx.Request) {
		return unavailable("no leader (the request came back to a node that relayed it)")
	}
	_, addr, ok := s.node.Leader()
	if !ok {
		return unavailable("no leader known; retry")
	}
	c := s.client(addr)
	req := &ctx.Request
	s.markRelayed(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := c.DoTimeout(req, resp, s.cfg.RequestTimeout); err != nil {
		return unavailable("forwarding to the leader failed: " + err.Error())
	}
	resp.CopyTo(&ctx.Response)
	ctx.Response.Header.Set("X-Holdfast-Via", s.node.ID())
	return nil
}

func (s *Server) client(addr string) *fasthttp.HostClient {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	c := s.clients[addr]
	if c == nil {
		c = s.newForwardClient(addr)
		s.clients[addr] = c
	}
	return c
}

// idempotency reads the Idempotency-Key header and hashes the request; the
// hash covers method, path and body, so a key reused elsewhere mismatches.
func idempotency(ctx *fasthttp.RequestCtx, c *allocator.Command) *apiError {
	key := ctx.Request.Header.Peek("Idempotency-Key")
	if len(key) == 0 {
		return nil
	}
	if !allocator.ValidID(string(key)) {
		return badRequest("Idempotency-Key must be 1 to 128 bytes of [A-Za-z0-9._:@/-]")
	}
	h := sha256.New()
	h.Write(ctx.Method())
	h.Write([]byte{' '})
	h.Write(ctx.Path()) // decoded: a%2Fb and a%2fb are one request
	h.Write([]byte{'?'})
	h.Write(ctx.URI().QueryString()) // DELETE carries its line_version there
	h.Write([]byte{'\n'})
	h.Write(ctx.Request.Body())
	var sum [sha256.Size]byte
	copy(c.ReqHash[:], h.Sum(sum[:0]))
	c.IdemKey = string(key)
	return nil
}

// propose replicates a command and returns the allocator's result.
func (s *Server) propose(ctx *fasthttp.RequestCtx, c *allocator.Command) (allocator.Result, *apiError) {
	if e := idempotency(ctx, c); e != nil {
		return allocator.Result{}, e
	}
	return s.replicateCommand(c)
}

// replicateCommand replicates a command whose idempotency key, if any, is
// set and returns the allocator's result.
func (s *Server) replicateCommand(c *allocator.Command) (allocator.Result, *apiError) {
	res, e := s.replicate(c.AppendEncode(commandBuf(c)))
	if e != nil {
		return allocator.Result{}, e
	}
	r, ok := res.(allocator.Result)
	if !ok {
		return allocator.Result{}, &apiError{Status: fasthttp.StatusInternalServerError, Code: "internal", Message: "unexpected state machine result"}
	}
	return r, nil
}

// commandBuf returns an empty buffer with room for c's encoding, so that
// AppendEncode allocates once instead of growing from nothing. It cannot
// be pooled: a proposal that times out may still be read later.
func commandBuf(c *allocator.Command) []byte {
	n := 48 + len(c.IdemKey) + allocator.HashLen + len(c.Buyer) + len(c.Pool)
	if c.Kind == allocator.KindPutPool {
		n += 160 + len(c.Config.Draw.Seed) // a dozen varints
	}
	for i := range c.Lines {
		n += 12 + len(c.Lines[i].Pool)
	}
	return make([]byte, 0, n)
}

// replicate proposes an encoded command and waits for its result, at
// most RequestTimeout.
func (s *Server) replicate(cmd []byte) (any, *apiError) {
	res, err := s.node.Propose(s.dl.get(), cmd)
	if err != nil {
		return nil, s.replicationError(err)
	}
	return res, nil
}

func (s *Server) replicationError(err error) *apiError {
	switch {
	case errors.Is(err, raftstore.ErrNotLeader):
		return unavailable("leadership changed; retry")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, raftstore.ErrTimeout), errors.Is(err, raftstore.ErrIndeterminate):
		return unavailable("outcome unknown: " + err.Error() + "; retry with the same Idempotency-Key")
	case errors.Is(err, raftstore.ErrClosed):
		return unavailable("node shutting down")
	}
	s.log.Error("replication failed", "err", err)
	return unavailable("replication failed: " + err.Error())
}

// deadlines hands out the contexts that bound replication waits. A
// context per request (context.WithTimeout: a timer started and stopped,
// a cancel context and its channel) is a measurable share of a
// reservation's CPU; instead, requests starting within slack of each other
// share one context whose deadline is timeout+slack after the first of
// them started. Every request so gets at least timeout, and at most
// timeout+slack. Shared contexts are never cancelled early: each ends
// at its deadline, by its own timer.
type deadlines struct {
	timeout, slack time.Duration
	cur            atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx        context.Context
	cancel     context.CancelFunc // runs at the deadline anyway; kept for form
	reuseUntil time.Time          // later requests take a new context
}

// get returns a context that expires between timeout and timeout+slack
// from now.
func (d *deadlines) get() context.Context {
	now := time.Now()
	if c := d.cur.Load(); c != nil && now.Before(c.reuseUntil) {
		return c.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d.timeout+d.slack))
	// Racing requests may each make one; the last stored is shared.
	d.cur.Store(&sharedDeadline{ctx: ctx, cancel: cancel, reuseUntil: now.Add(d.slack)})
	return ctx
}

// readBarrier prepares a local read: linearizable unless ?consistency=stale.
// It returns the as_of time and the consistency name.
func (s *Server) readBarrier(ctx *fasthttp.RequestCtx) (int64, string, *apiError) {
	if s.stale(ctx) {
		return s.alloc.ClockMs(), "stale", nil
	}
	if c := string(ctx.QueryArgs().Peek("consistency")); c != "" && c != "linearizable" {
		return 0, "", badRequest(`consistency must be "linearizable" or "stale"`)
	}
	if err := s.node.ReadBarrier(s.dl.get()); err != nil {
		return 0, "", s.replicationError(err)
	}
	return s.node.NowMs(), "linearizable", nil
}

func resultError(r *allocator.Result) *apiError {
	var details any
	switch {
	case len(r.Err.Lines) > 0:
		details = linesDetails(r.Err.Lines)
	case r.Reservation != nil:
		details = reservationDetails{r.Reservation}
	}
	return fromDomain(r.Err, details)
}

// ---- handlers ----

func (s *Server) health(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	if err := s.node.Err(); err != nil {
		return unavailable("storage failed: " + err.Error())
	}
	id, _, ok := s.node.Leader()
	if !ok && !s.node.IsLeader() {
		return unavailable("no leader known")
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "node": s.node.ID(), "leader": id})
	return nil
}

func (s *Server) cluster(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	st := s.node.Status()
	out := struct {
		raftstore.Status
		LogClock  string         `json:"log_clock"`
		StateHash *stateHashJSON `json:"state_hash,omitempty"` // ?state_hash=1 (statehash.go)
	}{Status: st, LogClock: formatTime(st.LogClockMs)}
	if wantStateHash(ctx) {
		out.StateHash = s.stateHash()
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
	return nil
}

func (s *Server) metricsHandler(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	s.promH(ctx)
	return nil
}

func poolArg(args []string) (string, *apiError) {
	if !allocator.ValidID(args[0]) {
		return "", badRequest("pool id must be 1 to 128 bytes of [A-Za-z0-9._:@/-]")
	}
	return args[0], nil
}

func (s *Server) putPool(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := poolArg(args)
	if e != nil {
		return e
	}
	var req putPoolReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	cfg, e := req.config()
	if e != nil {
		return e
	}
	r, e := s.propose(ctx, &allocator.Command{Kind: allocator.KindPutPool, Pool: id, Config: cfg})
	if e != nil {
		return e
	}
	if r.Err != nil {
		return resultError(&r)
	}
	status := fasthttp.StatusOK
	if r.Created {
		status = fasthttp.StatusCreated
	}
	// as_of is when the write applied (its updated_at), not the clock now:
	// an idempotent replay must return the first response unchanged.
	writePool(ctx, status, r.Pool, r.Pool.UpdatedAtMs, "linearizable")
	return nil
}

func (s *Server) adjustPool(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := poolArg(args)
	if e != nil {
		return e
	}
	var req adjustReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if req.Delta == nil {
		return badRequest("delta is required")
	}
	if *req.Delta < -allocator.MaxStock || *req.Delta > allocator.MaxStock {
		return badRequest("delta out of range")
	}
	r, e := s.propose(ctx, &allocator.Command{Kind: allocator.KindAdjustPool, Pool: id, Delta: *req.Delta})
	if e != nil {
		return e
	}
	if r.Err != nil {
		return resultError(&r)
	}
	writePool(ctx, fasthttp.StatusOK, r.Pool, r.Pool.UpdatedAtMs, "linearizable")
	return nil
}

func (s *Server) getPool(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := poolArg(args)
	if e != nil {
		return e
	}
	asOf, consistency, e := s.readBarrier(ctx)
	if e != nil {
		return e
	}
	p, err := s.alloc.Pool(id)
	if err != nil {
		return fromDomain(err, nil)
	}
	writePool(ctx, fasthttp.StatusOK, p, asOf, consistency)
	return nil
}

// Pool listing page sizes.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

func (s *Server) listPools(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	limit := defaultListLimit
	if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > maxListLimit {
			return badRequest("limit must be between 1 and 1000")
		}
		limit = n
	}
	after := string(ctx.QueryArgs().Peek("after"))
	if after != "" && !allocator.ValidID(after) {
		return badRequest("after must be a pool id")
	}
	asOf, consistency, e := s.readBarrier(ctx)
	if e != nil {
		return e
	}
	pools, more := s.alloc.Pools(after, limit)
	out := struct {
		Pools     []*poolJSON `json:"pools"`
		HasMore   bool        `json:"has_more"`
		NextAfter *string     `json:"next_after"`
	}{Pools: make([]*poolJSON, len(pools)), HasMore: more}
	for i, p := range pools {
		out.Pools[i] = poolOut(p, asOf, consistency)
	}
	if more && len(pools) > 0 {
		out.NextAfter = &pools[len(pools)-1].ID
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
	return nil
}

func (s *Server) reserve(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	var lineBuf [4]allocator.LineRequest // most requests hold few lines
	req, e := decodeReserve(ctx.Request.Body(), lineBuf[:0])
	if e != nil {
		return e
	}
	c := allocator.Command{Kind: allocator.KindReserve, Buyer: req.Buyer, Wait: req.Wait}
	if !allocator.ValidID(req.Buyer) {
		return badRequest("buyer must be 1 to 128 bytes of [A-Za-z0-9._:@/-]")
	}
	if len(req.Lines) == 0 || len(req.Lines) > allocator.MaxLines {
		return badRequest("lines must hold 1 to 100 lines")
	}
	for i, l := range req.Lines {
		if !allocator.ValidID(l.Pool) {
			return badRequest("lines[" + strconv.Itoa(i) + "].pool must be a pool id")
		}
		if l.Qty < 1 || l.Qty > allocator.MaxQty {
			return badRequest("lines[" + strconv.Itoa(i) + "].qty must be between 1 and 1000000")
		}
	}
	c.Lines = req.Lines
	if e := idempotency(ctx, &c); e != nil {
		return e
	}
	if req.HasTTL {
		if req.TTLMs < allocator.MinTTLMs || req.TTLMs > allocator.MaxTTLMs {
			return badRequest("ttl_ms must be between 1 and 2592000000")
		}
		c.TTLMs = req.TTLMs
	}
	if req.HasMode {
		switch req.Mode {
		case modeAllOrNothing:
		case modePartial:
			c.Partial = true
		default:
			return badRequest(`mode must be "all_or_nothing" or "partial"`)
		}
	}
	r, ok := allocator.Result{}, false
	if s.fast != nil {
		var err error
		if r, ok, err = s.fast.try(s.dl.get(), &c); err != nil {
			return s.replicationError(err)
		}
	}
	if !ok {
		var e *apiError
		if r, e = s.replicateCommand(&c); e != nil {
			return e
		}
	}
	s.metrics.reservation(&r)
	if r.Err != nil {
		return resultError(&r)
	}
	writeReservation(ctx, fasthttp.StatusCreated, r.Reservation)
	return nil
}

func reservationArg(args []string) (uint64, *apiError) {
	id, ok := allocator.ParseReservationID(args[0])
	if !ok {
		return 0, notFound("no reservation " + strconv.Quote(args[0]))
	}
	return id, nil
}

func (s *Server) getReservation(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := reservationArg(args)
	if e != nil {
		return e
	}
	if _, _, e := s.readBarrier(ctx); e != nil {
		return e
	}
	v, err := s.alloc.Reservation(id)
	if err != nil {
		return fromDomain(err, nil)
	}
	writeReservation(ctx, fasthttp.StatusOK, v)
	return nil
}

// transition handles confirm, release and extend.
func (s *Server) transition(ctx *fasthttp.RequestCtx, args []string, c allocator.Command) *apiError {
	id, e := reservationArg(args)
	if e != nil {
		return e
	}
	c.Reservation = id
	r, e := s.propose(ctx, &c)
	if e != nil {
		return e
	}
	if r.Err != nil {
		return resultError(&r)
	}
	writeReservation(ctx, fasthttp.StatusOK, r.Reservation)
	return nil
}

func (s *Server) confirm(ctx *fasthttp.RequestCtx, args []string) *apiError {
	if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
		return e
	}
	return s.transition(ctx, args, allocator.Command{Kind: allocator.KindConfirm})
}

func (s *Server) release(ctx *fasthttp.RequestCtx, args []string) *apiError {
	if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
		return e
	}
	return s.transition(ctx, args, allocator.Command{Kind: allocator.KindRelease})
}

func (s *Server) extend(ctx *fasthttp.RequestCtx, args []string) *apiError {
	var req extendReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if req.TTLMs == nil || *req.TTLMs < allocator.MinTTLMs || *req.TTLMs > allocator.MaxTTLMs {
		return badRequest("ttl_ms is required, between 1 and 2592000000")
	}
	return s.transition(ctx, args, allocator.Command{Kind: allocator.KindExtend, TTLMs: *req.TTLMs})
}
