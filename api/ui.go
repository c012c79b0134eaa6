package api

import (
	"github.com/valyala/fasthttp"
)

// uiRoute adapts the dashboard's handler (ui.Handler) to a route: GET and
// HEAD of /ui and /ui/..., answered by every node from its embedded files,
// never forwarded, and open without a token (routeRole): the files hold no
// data, and every API call the page makes carries the operator's token.
func uiRoute(h fasthttp.RequestHandler) func(*fasthttp.RequestCtx, []string) *apiError {
	return func(ctx *fasthttp.RequestCtx, _ []string) *apiError {
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.Response.Header.Set("Allow", "GET, HEAD")
			return &apiError{Status: fasthttp.StatusMethodNotAllowed, Code: codeMethodNotAllowed, Message: "method not allowed; use GET"}
		}
		h(ctx)
		return nil
	}
}
