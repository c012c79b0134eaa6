// Package api serves holdfast's HTTP/JSON API (see CONTRACT.md) with
// fasthttp. It validates input, turns requests into allocator commands,
// proposes them through a Node and renders results; writes and
// linearizable reads that reach a follower are forwarded to the leader.
package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/raftstore"
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
	// same Idempotency-Key: the write may have committed).
	RequestTimeout time.Duration
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

	clientsMu sync.Mutex
	clients   map[string]*fasthttp.HostClient
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
	s := &Server{
		cfg:     cfg,
		node:    cfg.Node,
		alloc:   cfg.Alloc,
		carts:   cfg.Carts,
		log:     cfg.Logger,
		clients: make(map[string]*fasthttp.HostClient),
	}
	s.metrics = newMetrics(cfg.Registry, cfg.Alloc)
	s.promH = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	s.srv = &fasthttp.Server{
		Handler:                      s.Handle,
		ErrorHandler:                 s.handleParseError,
		Name:                         "holdfast",
		MaxRequestBodySize:           MaxBodyBytes,
		ReadTimeout:                  15 * time.Second,
		WriteTimeout:                 15 * time.Second,
		IdleTimeout:                  60 * time.Second,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		Logger:                       fasthttpLogger{cfg.Logger},
	}
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
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

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

func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	if e.Status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	writeJSON(ctx, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// route is a matched endpoint: its name labels metrics.
type route struct {
	name  string
	write bool // proposes; followers forward it
	h     func(*fasthttp.RequestCtx, []string) *apiError
}

// Handle is the fasthttp handler for the whole API.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	ctx.Response.Header.Set("X-Holdfast-Node", s.node.ID())
	rt, args, e := s.match(ctx)
	name := "unmatched"
	if rt != nil {
		name = rt.name
		if e == nil {
			if s.shouldForward(ctx, rt) {
				e = s.forward(ctx)
			} else {
				e = rt.h(ctx, args)
			}
		}
	}
	if e != nil {
		writeError(ctx, e)
	}
	s.metrics.observe(name, ctx.Response.StatusCode(), time.Since(start))
}

// match finds the route for the request. Path segments are split on the
// raw path, then unescaped, so a pool id containing "/" works when escaped.
func (s *Server) match(ctx *fasthttp.RequestCtx) (*route, []string, *apiError) {
	raw := string(ctx.Request.URI().PathOriginal())
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	parts := strings.Split(strings.Trim(raw, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, nil, badRequest("bad path escape")
		}
		parts[i] = u
	}
	m := string(ctx.Method())
	var rt *route
	var args []string
	notAllowed := func(allowed string) (*route, []string, *apiError) {
		ctx.Response.Header.Set("Allow", allowed)
		return &route{name: "method_not_allowed"}, nil, &apiError{Status: fasthttp.StatusMethodNotAllowed, Code: codeMethodNotAllowed, Message: "method not allowed; use " + allowed}
	}
	switch {
	case len(parts) == 1 && parts[0] == "metrics":
		if m != "GET" {
			return notAllowed("GET")
		}
		rt = &route{name: "metrics", h: s.metricsHandler}
	case len(parts) < 2 || parts[0] != "v1":
	case len(parts) == 2 && parts[1] == "health":
		if m != "GET" {
			return notAllowed("GET")
		}
		rt = &route{name: "health", h: s.health}
	case len(parts) == 2 && parts[1] == "cluster":
		if m != "GET" {
			return notAllowed("GET")
		}
		rt = &route{name: "cluster", h: s.cluster}
	case len(parts) == 2 && parts[1] == "pools":
		if m != "GET" {
			return notAllowed("GET")
		}
		rt = &route{name: "list_pools", h: s.listPools}
	case len(parts) == 3 && parts[1] == "pools":
		args = parts[2:]
		switch m {
		case "GET":
			rt = &route{name: "get_pool", h: s.getPool}
		case "PUT":
			rt = &route{name: "put_pool", write: true, h: s.putPool}
		default:
			return notAllowed("GET, PUT")
		}
	case len(parts) == 4 && parts[1] == "pools" && parts[3] == "adjust":
		if m != "POST" {
			return notAllowed("POST")
		}
		args = parts[2:3]
		rt = &route{name: "adjust_pool", write: true, h: s.adjustPool}
	case len(parts) == 2 && parts[1] == "reservations":
		if m != "POST" {
			return notAllowed("POST")
		}
		rt = &route{name: "reserve", write: true, h: s.reserve}
	case len(parts) == 3 && parts[1] == "reservations":
		if m != "GET" {
			return notAllowed("GET")
		}
		args = parts[2:]
		rt = &route{name: "get_reservation", h: s.getReservation}
	case len(parts) == 4 && parts[1] == "reservations":
		args = parts[2:]
		switch parts[3] {
		case "confirm":
			rt = &route{name: "confirm", write: true, h: s.confirm}
		case "release":
			rt = &route{name: "release", write: true, h: s.release}
		case "extend":
			rt = &route{name: "extend", write: true, h: s.extend}
		}
		// Only an existing endpoint can refuse a method; an unknown
		// action is 404 whatever the method.
		if rt != nil && m != "POST" {
			return notAllowed("POST")
		}
	}
	if rt == nil && s.carts != nil {
		rt, args = s.matchCarts(parts, m)
		if rt != nil && rt.h == nil {
			return notAllowed(rt.name)
		}
	}
	if rt == nil {
		return &route{name: "unmatched"}, nil, notFound("no such endpoint")
	}
	return rt, args, nil
}

// matchCarts routes /v1/carts and /v1/checkouts. A known path with the
// wrong method returns a route without handler whose name is the Allow
// value.
func (s *Server) matchCarts(parts []string, m string) (*route, []string) {
	w := func(name string, h func(*fasthttp.RequestCtx, []string) *apiError) *route {
		return &route{name: name, write: true, h: h}
	}
	only := func(method, allow string, rt *route) *route {
		if m != method {
			return &route{name: allow}
		}
		return rt
	}
	switch {
	case len(parts) == 2 && parts[1] == "carts":
		return only("POST", "POST", w("create_cart", s.createCart)), nil
	case len(parts) == 3 && parts[1] == "carts":
		return only("GET", "GET", &route{name: "get_cart", h: s.getCart}), parts[2:]
	case len(parts) == 4 && parts[1] == "carts":
		switch parts[3] {
		case "lines":
			return only("POST", "POST", w("add_line", s.addLine)), parts[2:3]
		case "merge":
			return only("POST", "POST", w("merge", s.mergeCarts)), parts[2:3]
		case "review":
			return only("POST", "POST", w("review", s.reviewCart)), parts[2:3]
		case "checkout":
			return only("POST", "POST", w("checkout", s.startCheckout)), parts[2:3]
		}
	case len(parts) == 5 && parts[1] == "carts" && parts[3] == "lines":
		args := []string{parts[2], parts[4]}
		switch m {
		case "PATCH":
			return w("set_line", s.setLineQty), args
		case "DELETE":
			return w("delete_line", s.deleteLine), args
		}
		return &route{name: "PATCH, DELETE"}, nil
	case len(parts) == 3 && parts[1] == "checkouts":
		return only("GET", "GET", &route{name: "get_checkout", h: s.getCheckout}), parts[2:]
	case len(parts) == 4 && parts[1] == "checkouts" && parts[3] == "confirm":
		return only("POST", "POST", w("confirm_checkout", s.confirmCheckout)), parts[2:3]
	}
	return nil, nil
}

// ---- consistency, forwarding and proposing ----

func (s *Server) stale(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.QueryArgs().Peek("consistency")) == "stale"
}

// shouldForward: writes and linearizable reads go to the leader. Health,
// cluster, metrics and stale reads are answered locally.
func (s *Server) shouldForward(ctx *fasthttp.RequestCtx, rt *route) bool {
	switch rt.name {
	case "health", "cluster", "metrics":
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
	if len(ctx.Request.Header.Peek(forwardedHeader)) > 0 {
		return unavailable("no leader (request was already forwarded once)")
	}
	_, addr, ok := s.node.Leader()
	if !ok {
		return unavailable("no leader known; retry")
	}
	c := s.client(addr)
	req := &ctx.Request
	req.Header.Set(forwardedHeader, s.node.ID())
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
		c = &fasthttp.HostClient{Addr: addr, MaxConns: 1024, ReadTimeout: s.cfg.RequestTimeout, WriteTimeout: s.cfg.RequestTimeout}
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
	res, e := s.replicate(c.AppendEncode(nil))
	if e != nil {
		return allocator.Result{}, e
	}
	r, ok := res.(allocator.Result)
	if !ok {
		return allocator.Result{}, &apiError{Status: fasthttp.StatusInternalServerError, Code: "internal", Message: "unexpected state machine result"}
	}
	return r, nil
}

// replicate proposes an encoded command and waits for its result.
func (s *Server) replicate(cmd []byte) (any, *apiError) {
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	res, err := s.node.Propose(cctx, cmd)
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

// readBarrier prepares a local read: linearizable unless ?consistency=stale.
// It returns the as_of time and the consistency name.
func (s *Server) readBarrier(ctx *fasthttp.RequestCtx) (int64, string, *apiError) {
	if s.stale(ctx) {
		return s.alloc.ClockMs(), "stale", nil
	}
	if c := string(ctx.QueryArgs().Peek("consistency")); c != "" && c != "linearizable" {
		return 0, "", badRequest(`consistency must be "linearizable" or "stale"`)
	}
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	if err := s.node.ReadBarrier(cctx); err != nil {
		return 0, "", s.replicationError(err)
	}
	return s.node.NowMs(), "linearizable", nil
}

func resultError(r *allocator.Result) *apiError {
	var details any
	switch {
	case len(r.Err.Lines) > 0:
		details = map[string]any{"lines": linesOut(r.Err.Lines)}
	case r.Reservation != nil:
		details = map[string]any{"reservation": reservationOut(r.Reservation)}
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
	writeJSON(ctx, fasthttp.StatusOK, struct {
		raftstore.Status
		LogClock string `json:"log_clock"`
	}{st, formatTime(st.LogClockMs)})
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
	writeJSON(ctx, status, poolOut(r.Pool, r.Pool.UpdatedAtMs, "linearizable"))
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
	writeJSON(ctx, fasthttp.StatusOK, poolOut(r.Pool, r.Pool.UpdatedAtMs, "linearizable"))
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
	writeJSON(ctx, fasthttp.StatusOK, poolOut(p, asOf, consistency))
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
	var req reserveReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	c := allocator.Command{Kind: allocator.KindReserve, Buyer: req.Buyer, Wait: req.Wait}
	if !allocator.ValidID(req.Buyer) {
		return badRequest("buyer must be 1 to 128 bytes of [A-Za-z0-9._:@/-]")
	}
	if len(req.Lines) == 0 || len(req.Lines) > allocator.MaxLines {
		return badRequest("lines must hold 1 to 100 lines")
	}
	c.Lines = make([]allocator.LineRequest, len(req.Lines))
	for i, l := range req.Lines {
		if !allocator.ValidID(l.Pool) {
			return badRequest("lines[" + strconv.Itoa(i) + "].pool must be a pool id")
		}
		if l.Qty < 1 || l.Qty > allocator.MaxQty {
			return badRequest("lines[" + strconv.Itoa(i) + "].qty must be between 1 and 1000000")
		}
		c.Lines[i] = allocator.LineRequest{Pool: l.Pool, Qty: l.Qty}
	}
	if req.TTLMs != nil {
		if *req.TTLMs < allocator.MinTTLMs || *req.TTLMs > allocator.MaxTTLMs {
			return badRequest("ttl_ms must be between 1 and 2592000000")
		}
		c.TTLMs = *req.TTLMs
	}
	if req.Mode != nil {
		switch *req.Mode {
		case "all_or_nothing":
		case "partial":
			c.Partial = true
		default:
			return badRequest(`mode must be "all_or_nothing" or "partial"`)
		}
	}
	r, e := s.propose(ctx, &c)
	if e != nil {
		return e
	}
	s.metrics.reservation(&r)
	if r.Err != nil {
		return resultError(&r)
	}
	writeJSON(ctx, fasthttp.StatusCreated, reservationOut(r.Reservation))
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
	writeJSON(ctx, fasthttp.StatusOK, reservationOut(v))
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
	writeJSON(ctx, fasthttp.StatusOK, reservationOut(r.Reservation))
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
