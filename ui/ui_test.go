package ui_test

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/ui"
)

func serve(t *testing.T, h fasthttp.RequestHandler, method, uri string, hdr map[string]string) *fasthttp.Response {
	t.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	for k, v := range hdr {
		ctx.Request.Header.Set(k, v)
	}
	h(&ctx)
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

// TestHandler: the dashboard's files, their types and caching, and what
// is refused.
func TestHandler(t *testing.T) {
	h := ui.Handler()

	r := serve(t, h, "GET", "/ui?poll_ms=500", nil)
	if r.StatusCode() != fasthttp.StatusFound || string(r.Header.Peek("Location")) != "/ui/?poll_ms=500" {
		t.Fatalf("/ui: %d Location %q, want 302 to /ui/ keeping the query", r.StatusCode(), r.Header.Peek("Location"))
	}

	for path, ctype := range map[string]string{
		"/ui/":           "text/html; charset=utf-8",
		"/ui/index.html": "text/html; charset=utf-8",
		"/ui/app.js":     "text/javascript; charset=utf-8",
		"/ui/style.css":  "text/css; charset=utf-8",
	} {
		r := serve(t, h, "GET", path, nil)
		if r.StatusCode() != fasthttp.StatusOK || string(r.Header.ContentType()) != ctype || len(r.Body()) == 0 {
			t.Fatalf("%s: %d %q, %d bytes", path, r.StatusCode(), r.Header.ContentType(), len(r.Body()))
		}
		if csp := string(r.Header.Peek("Content-Security-Policy")); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Fatalf("%s: Content-Security-Policy %q", path, csp)
		}
		etag := string(r.Header.Peek("ETag"))
		if etag == "" {
			t.Fatalf("%s: no ETag", path)
		}
		if r := serve(t, h, "GET", path, map[string]string{"If-None-Match": etag}); r.StatusCode() != fasthttp.StatusNotModified || len(r.Body()) != 0 {
			t.Fatalf("%s with If-None-Match: %d, %d bytes", path, r.StatusCode(), len(r.Body()))
		}
	}
	if body := string(serve(t, h, "GET", "/ui/", nil).Body()); !strings.Contains(body, `<script src="app.js">`) || strings.Contains(body, "<script>") {
		t.Fatal("index.html must load app.js and hold no inline script (the CSP forbids it)")
	}

	for _, path := range []string{"/ui/nope.js", "/ui/static/app.js", "/ui/../go.mod", "/uix", "/"} {
		if r := serve(t, h, "GET", path, nil); r.StatusCode() != fasthttp.StatusNotFound {
			t.Fatalf("%s: %d, want 404", path, r.StatusCode())
		}
	}
	if r := serve(t, h, "POST", "/ui/", nil); r.StatusCode() != fasthttp.StatusMethodNotAllowed || string(r.Header.Peek("Allow")) != "GET, HEAD" {
		t.Fatalf("POST /ui/: %d Allow %q", r.StatusCode(), r.Header.Peek("Allow"))
	}
}
