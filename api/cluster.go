package api

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/raftstore"
)

// Operations endpoints: membership, leadership transfer and backups, plus
// the drain that SIGTERM starts. Their routes live here, apart from the
// data-plane routes of server.go.
//
//	GET    /v1/cluster/members          the configuration (read)
//	POST   /v1/cluster/members          {"id","raft_addr","api_addr"?,"voter"?} add or promote (admin)
//	DELETE /v1/cluster/members/{id}     remove (admin)
//	POST   /v1/cluster/leader           {"id"?} transfer leadership (admin)
//	GET    /v1/backup                   a consistent backup, streamed (admin)

// Operator is what the operations endpoints need from the node;
// *raftstore.Node implements it. A Node without it answers them 404.
type Operator interface {
	Members() ([]raftstore.Member, error)
	AddMember(ctx context.Context, id, raftAddr, apiAddr string, voter bool) error
	RemoveMember(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context, id string) (string, error)
	OpenBackup(ctx context.Context) (*raftstore.BackupStream, error)
}

// backupTimeout bounds taking and streaming one backup.
const backupTimeout = 10 * time.Minute

// ops holds the operations routes and the drain state.
type ops struct {
	members, addMember, removeMember, transferLeader, backup *route

	draining atomic.Bool
	inflight atomic.Int64 // requests admitted and not finished
}

func (s *Server) newOps() *ops {
	r := func(name string, write bool, h func(*fasthttp.RequestCtx, []string) *apiError) *route {
		return &route{name: name, write: write, h: h, obs: s.metrics.route(name), need: routeRole(name)}
	}
	return &ops{
		members:        r("cluster_members", false, s.listMembers),
		addMember:      r("add_member", true, s.addMember),
		removeMember:   r("remove_member", true, s.removeMember),
		transferLeader: r("transfer_leader", true, s.transferLeader),
		backup:         r("backup", false, s.backup),
	}
}

// matchOps routes /v1/cluster/... (beyond GET /v1/cluster) and
// /v1/backup, as match does.
func (s *Server) matchOps(ctx *fasthttp.RequestCtx, parts pathParts) (*route, []string, *apiError) {
	o := s.ops
	m := string(ctx.Method())
	only := func(rt *route, allowed string, args []string) (*route, []string, *apiError) {
		if m != allowed {
			ctx.Response.Header.Set("Allow", allowed)
			return s.rt.methodNotAllowed, nil, &apiError{Status: fasthttp.StatusMethodNotAllowed, Code: codeMethodNotAllowed, Message: "method not allowed; use " + allowed}
		}
		return rt, args, nil
	}
	switch {
	case len(parts) == 2 && parts.is(1, "backup"):
		return only(o.backup, "GET", nil)
	case len(parts) == 3 && parts.is(1, "cluster") && parts.is(2, "members"):
		if m == "GET" {
			return o.members, nil, nil
		}
		if m == "POST" {
			return o.addMember, nil, nil
		}
		return only(nil, "GET, POST", nil)
	case len(parts) == 4 && parts.is(1, "cluster") && parts.is(2, "members"):
		return only(o.removeMember, "DELETE", []string{string(parts[3])})
	case len(parts) == 3 && parts.is(1, "cluster") && parts.is(2, "leader"):
		return only(o.transferLeader, "POST", nil)
	}
	return s.rt.unmatched, nil, notFound("no such endpoint")
}

// ---- drain ----

// drainRefusal is the answer to requests that arrive while draining.
var drainRefusal = &apiError{Status: fasthttp.StatusServiceUnavailable, Code: codeUnavailable, Message: "node shutting down; retry (another node will answer)"}

// enter admits a request, or refuses it with 503 while draining. Metrics
// stay scrapeable. An admitted request must call exit.
// A refusal also closes the connection, so keep-alive clients reconnect.
func (o *ops) enter(ctx *fasthttp.RequestCtx, rt *route) *apiError {
	o.inflight.Add(1)
	if o.draining.Load() && rt.name != "metrics" {
		o.inflight.Add(-1)
		ctx.SetConnectionClose() // the client reconnects, to another node
		return drainRefusal
	}
	return nil
}

func (o *ops) exit() { o.inflight.Add(-1) }

// Drain starts the graceful shutdown of the API: from now on every
// request but /metrics is answered 503 unavailable with Retry-After (health
// included, so load balancers move away), and it waits until the requests
// already admitted have finished, or ctx ends. The listener stays open:
// Shutdown closes it.
func (s *Server) Drain(ctx context.Context) error {
	s.ops.draining.Store(true)
	for s.ops.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return errors.New("api: requests still in flight: " + strconv.FormatInt(s.ops.inflight.Load(), 10))
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// InFlight is the number of requests being handled.
func (s *Server) InFlight() int64 { return s.ops.inflight.Load() }

// ---- handlers ----

func (s *Server) operator() (Operator, *apiError) {
	o, ok := s.node.(Operator)
	if !ok {
		return nil, notFound("this node does not support cluster operations")
	}
	return o, nil
}

// opError maps raftstore's membership and backup errors to the contract.
func (s *Server) opError(err error) *apiError {
	switch {
	case errors.Is(err, raftstore.ErrNoSuchMember):
		return notFound(err.Error())
	case errors.Is(err, raftstore.ErrMemberConflict):
		return &apiError{Status: fasthttp.StatusConflict, Code: allocator.InvalidState.String(), Message: err.Error()}
	}
	return s.replicationError(err)
}

func (s *Server) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
}

// clusterOut renders the cluster as GET /v1/cluster does.
func (s *Server) writeCluster(ctx *fasthttp.RequestCtx, status int) {
	st := s.node.Status()
	writeJSON(ctx, status, struct {
		raftstore.Status
		LogClock string `json:"log_clock"`
	}{st, formatTime(st.LogClockMs)})
}

func (s *Server) listMembers(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	o, e := s.operator()
	if e != nil {
		return e
	}
	m, err := o.Members()
	if err != nil {
		return s.opError(err)
	}
	if m == nil {
		m = []raftstore.Member{}
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Members []raftstore.Member `json:"members"`
	}{m})
	return nil
}

type addMemberReq struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Voter    *bool  `json:"voter"`
}

// validHostPort accepts host:port with a numeric port.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || len(s) > 256 {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p < 65536
}

func (s *Server) addMember(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	o, e := s.operator()
	if e != nil {
		return e
	}
	var req addMemberReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if !allocator.ValidID(req.ID) {
		return badRequest("id must be 1 to 128 bytes of [A-Za-z0-9._:@/-]")
	}
	if !validHostPort(req.RaftAddr) {
		return badRequest("raft_addr must be host:port")
	}
	if req.APIAddr != "" && !validHostPort(req.APIAddr) {
		return badRequest("api_addr must be host:port")
	}
	voter := req.Voter == nil || *req.Voter
	c, cancel := s.opContext()
	defer cancel()
	if err := o.AddMember(c, req.ID, req.RaftAddr, req.APIAddr, voter); err != nil {
		return s.opError(err)
	}
	s.writeCluster(ctx, fasthttp.StatusOK)
	return nil
}

func (s *Server) removeMember(ctx *fasthttp.RequestCtx, args []string) *apiError {
	o, e := s.operator()
	if e != nil {
		return e
	}
	if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
		return e
	}
	c, cancel := s.opContext()
	defer cancel()
	if err := o.RemoveMember(c, args[0]); err != nil {
		return s.opError(err)
	}
	s.writeCluster(ctx, fasthttp.StatusOK)
	return nil
}

type transferReq struct {
	ID string `json:"id"`
}

func (s *Server) transferLeader(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	o, e := s.operator()
	if e != nil {
		return e
	}
	var req transferReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if req.ID != "" && !allocator.ValidID(req.ID) {
		return badRequest("id must be a node id")
	}
	c, cancel := s.opContext()
	defer cancel()
	leader, err := o.TransferLeadership(c, req.ID)
	if err != nil {
		return s.opError(err)
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"leader": leader})
	return nil
}

// backup streams a backup taken on the leader. A follower relays the
// leader's stream without holding it in memory (the generic forward
// buffers whole responses).
func (s *Server) backup(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	o, e := s.operator()
	if e != nil {
		return e
	}
	if !s.node.IsLeader() {
		return s.forwardStream(ctx)
	}
	c, cancel := context.WithTimeout(context.Background(), backupTimeout)
	defer cancel()
	b, err := o.OpenBackup(c)
	if err != nil {
		return s.opError(err)
	}
	h := &ctx.Response.Header
	h.Set("X-Holdfast-Backup-Last-Index", strconv.FormatUint(b.Header.LastIndex, 10))
	h.Set("X-Holdfast-Backup-Sha256", b.Header.SHA256)
	h.Set("Content-Disposition", `attachment; filename="holdfast-`+strconv.FormatUint(b.Header.LastIndex, 10)+`.backup"`)
	ctx.SetContentType("application/octet-stream")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBodyStream(b, int(b.Size)) // fasthttp closes b (removing its spool) when sent
	return nil
}

// headerReceived gives a backup download the time it needs: fasthttp's
// WriteTimeout bounds writing a whole response, body stream included, and
// a backup of a large state takes longer than any ordinary answer.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	uri := h.RequestURI()
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	if string(h.Method()) == "GET" && string(bytes.TrimRight(uri, "/")) == "/v1/backup" {
		return fasthttp.RequestConfig{WriteTimeout: backupTimeout}
	}
	return fasthttp.RequestConfig{}
}

// forwardStream relays a request to the leader and streams its answer
// back.
func (s *Server) forwardStream(ctx *fasthttp.RequestCtx) *apiError {
	if s.relayedHere(&ctx.Request) { // see forward
		return unavailable("no leader (the request came back to a node that relayed it)")
	}
	_, addr, ok := s.node.Leader()
	if !ok {
		return unavailable("no leader known; retry")
	}
	base := s.client(addr) // its TLS settings
	c := &fasthttp.HostClient{Addr: addr, IsTLS: base.IsTLS, TLSConfig: base.TLSConfig, StreamResponseBody: true,
		MaxConns: 1, ReadTimeout: backupTimeout, WriteTimeout: s.cfg.RequestTimeout}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	ctx.Request.CopyTo(req)
	s.markRelayed(req)
	resp := fasthttp.AcquireResponse()
	if err := c.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		return unavailable("forwarding to the leader failed: " + err.Error())
	}
	ctx.SetStatusCode(resp.StatusCode())
	resp.Header.VisitAll(func(k, v []byte) {
		switch string(k) {
		case fasthttp.HeaderContentLength, fasthttp.HeaderConnection, fasthttp.HeaderTransferEncoding, fasthttp.HeaderDate:
		default:
			ctx.Response.Header.SetBytesKV(k, v)
		}
	})
	ctx.Response.Header.Set("X-Holdfast-Via", s.node.ID())
	ctx.SetBodyStream(&streamedResponse{resp: resp, c: c}, resp.Header.ContentLength())
	return nil
}

// streamedResponse is a relayed response body; Close releases the
// response and the connection.
type streamedResponse struct {
	resp *fasthttp.Response
	c    *fasthttp.HostClient
}

// Read reads the leader's body as it arrives.
func (r *streamedResponse) Read(p []byte) (int, error) { return r.resp.BodyStream().Read(p) }

// Close releases the response and the relay connection; fasthttp calls
// it once the body is sent.
func (r *streamedResponse) Close() error {
	err := r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	r.c.CloseIdleConnections()
	return err
}
