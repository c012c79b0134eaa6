package api

import (
	"bytes"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/auth"
)

// Authenticator finds the token a request presents; *auth.Store
// implements it. A nil Config.Auth turns authentication off (cmd/holdfast
// then serves on loopback only).
type Authenticator interface {
	Lookup(token []byte) (auth.Entry, bool)
}

// routeRole is the role a route requires. Open routes (auth.None): the
// health check, for load balancers, and the dashboard's static files.
// Reads need read; reservations, carts and checkouts need checkout; pool
// configuration and stock changes need admin. A route not listed here
// (one added later) needs admin until someone decides otherwise: a new
// endpoint is closed by default. A request matching no route needs any
// valid token (read) before it learns that.
func routeRole(name string) auth.Role {
	switch name {
	case "health", "ui", "ui_static":
		return auth.None
	case "metrics", "cluster", "cluster_members", "list_pools", "get_pool", "get_reservation", "get_cart", "get_checkout",
		"unmatched", "method_not_allowed":
		return auth.Read
	case "reserve", "confirm", "release", "extend",
		"create_cart", "add_line", "merge", "review", "checkout", "set_line", "delete_line", "confirm_checkout":
		return auth.Checkout
	case "put_pool", "adjust_pool", "add_member", "remove_member", "transfer_leader", "backup":
		return auth.Admin
	}
	return auth.Admin
}

// authz checks requests against Config.Auth and reports refusals: a
// counter by reason, and at most one log line per authLogEvery (with the
// number of refusals not logged since), so an attack cannot flood the log.
type authz struct {
	auth     Authenticator
	log      *slog.Logger
	rejected *prometheus.CounterVec
	// missing, invalid and forbidden are rejected's children.
	missing, invalid, forbidden prometheus.Counter

	nextLogNs  atomic.Int64 // when the next refusal may be logged
	suppressed atomic.Int64 // refusals not logged since the last line
}

// authLogEvery is the most often a refused request is logged.
const authLogEvery = time.Second

func newAuthz(cfg Config) *authz {
	a := &authz{auth: cfg.Auth, log: cfg.Logger}
	a.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_auth_rejected_total",
		Help: "Requests refused by authentication (missing or invalid token: 401) or authorisation (forbidden: 403).",
	}, []string{"reason"})
	a.missing = a.rejected.WithLabelValues("missing")
	a.invalid = a.rejected.WithLabelValues("invalid")
	a.forbidden = a.rejected.WithLabelValues("forbidden")
	cfg.Registry.MustRegister(a.rejected)
	return a
}

// bearer returns the token of an "Authorization: Bearer TOKEN" header
// (scheme case-insensitive), or nil.
func bearer(h []byte) []byte {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !bytes.EqualFold(h[:len(scheme)], []byte(scheme)) {
		return nil
	}
	return bytes.TrimSpace(h[len(scheme):])
}

// check authorises a request for rt. Without an Authenticator every
// request passes. A forwarded request is checked again by the leader with
// the same token: forwarding never stands in for authentication.
func (a *authz) check(ctx *fasthttp.RequestCtx, rt *route) *apiError {
	if a.auth == nil || rt.need == auth.None {
		return nil
	}
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	tok := bearer(h)
	if len(tok) == 0 {
		a.missing.Inc()
		reason := "missing bearer token"
		if len(h) > 0 {
			reason = "authorization header is not a bearer token"
		}
		a.warn(ctx, rt, reason, "")
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="holdfast"`)
		return &apiError{Status: fasthttp.StatusUnauthorized, Code: codeUnauthenticated, Message: "a bearer token is required (Authorization: Bearer TOKEN)"}
	}
	e, ok := a.auth.Lookup(tok)
	if !ok {
		a.invalid.Inc()
		a.warn(ctx, rt, "unknown token", "")
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="holdfast", error="invalid_token"`)
		return &apiError{Status: fasthttp.StatusUnauthorized, Code: codeUnauthenticated, Message: "invalid token"}
	}
	if !e.Role.Allows(rt.need) {
		a.forbidden.Inc()
		a.warn(ctx, rt, "role not allowed", e.Name)
		return &apiError{Status: fasthttp.StatusForbidden, Code: codePermissionDenied,
			Message: "token role " + e.Role.String() + " may not call " + rt.name + " (needs " + rt.need.String() + ")"}
	}
	return nil
}

// warn logs a refusal, at most once per authLogEvery.
func (a *authz) warn(ctx *fasthttp.RequestCtx, rt *route, reason, token string) {
	now := time.Now().UnixNano()
	next := a.nextLogNs.Load()
	if now < next || !a.nextLogNs.CompareAndSwap(next, now+int64(authLogEvery)) {
		a.suppressed.Add(1)
		return
	}
	attrs := []any{"reason", reason, "route", rt.name, "method", string(ctx.Method()), "remote", ctx.RemoteAddr().String(),
		"suppressed_since_last", a.suppressed.Swap(0)}
	if token != "" {
		attrs = append(attrs, "token_name", token)
	}
	if by := ctx.Request.Header.Peek(forwardedHeader); len(by) > 0 {
		attrs = append(attrs, "forwarded_by", string(by))
	}
	a.log.Warn("request refused by auth", attrs...)
}
