package api

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/auth"
)

// TestRouteRoles pins the role of every route class, and that a route
// nobody classified needs admin (closed by default).
func TestRouteRoles(t *testing.T) {
	want := map[string]auth.Role{
		"health": auth.None, "ui": auth.None,
		"metrics": auth.Read, "cluster": auth.Read, "cluster_members": auth.Read, "list_pools": auth.Read,
		"get_pool": auth.Read, "get_reservation": auth.Read, "get_cart": auth.Read, "get_checkout": auth.Read,
		"unmatched": auth.Read, "method_not_allowed": auth.Read,
		"reserve": auth.Checkout, "confirm": auth.Checkout, "release": auth.Checkout, "extend": auth.Checkout,
		"create_cart": auth.Checkout, "add_line": auth.Checkout, "merge": auth.Checkout, "review": auth.Checkout,
		"checkout": auth.Checkout, "set_line": auth.Checkout, "delete_line": auth.Checkout, "confirm_checkout": auth.Checkout,
		"put_pool": auth.Admin, "adjust_pool": auth.Admin, "add_member": auth.Admin, "remove_member": auth.Admin,
		"transfer_leader": auth.Admin, "backup": auth.Admin,
		"some_future_route": auth.Admin,
	}
	for name, role := range want {
		if got := routeRole(name); got != role {
			t.Errorf("routeRole(%q) = %v, want %v", name, got, role)
		}
	}
}

// BenchmarkAuthCheck: what auth adds to a request that passes (header
// parse, SHA-256, lookup, role check), against no auth at all.
func BenchmarkAuthCheck(b *testing.B) {
	tb, err := auth.Parse(strings.NewReader(auth.FormatEntry(auth.Checkout, "svc", []byte("hf_0123456789abcdef0123456789abcdef0123456789a"))))
	if err != nil {
		b.Fatal(err)
	}
	rt := &route{name: "reserve", need: routeRole("reserve")}
	for _, c := range []struct {
		name string
		a    Authenticator
	}{{"off", nil}, {"on", tb}} {
		z := newAuthz(Config{Auth: c.a, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.Set("Authorization", "Bearer hf_0123456789abcdef0123456789abcdef0123456789a")
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if e := z.check(&ctx, rt); e != nil {
					b.Fatal(e.Message)
				}
			}
		})
	}
}
