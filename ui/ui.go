// Package ui is the live drop dashboard every node serves at /ui: static
// HTML, JavaScript and CSS embedded in the binary, which poll the node's
// own HTTP API (GET /v1/cluster, /v1/health, /v1/pools) from the browser.
// There is no build step; the files under static/ are served as they are.
//
// The files are public (they hold no data); every API call the page makes
// carries the read token the operator entered, so auth stays with the API.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// Prefix is the path the dashboard is served under.
const Prefix = "/ui"

//go:embed static
var static embed.FS

// Files returns the dashboard's files (index.html, app.js, style.css) as a
// read-only file system rooted at the directory they are served from.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("ui: embedded static directory missing: " + err.Error()) // a build defect, not input
	}
	return sub
}

// file is one embedded file, prepared once by Handler.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// contentType is the media type of the kinds of file the dashboard ships.
func contentType(ext string) (string, bool) {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8", true
	case ".js":
		return "text/javascript; charset=utf-8", true
	case ".css":
		return "text/css; charset=utf-8", true
	case ".svg":
		return "image/svg+xml", true
	}
	return "", false
}

// contentSecurityPolicy lets the page load only its own files and talk
// only to the node that served it: no inline script, no third parties.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard: GET or HEAD of /ui redirects to /ui/,
// /ui/ is index.html, /ui/NAME is an embedded file; anything else under
// /ui is 404, another method 405. Responses carry an ETag (a repeated
// GET with If-None-Match is 304) and a strict Content-Security-Policy.
// The handler needs no token: the files hold no data.
func Handler() fasthttp.RequestHandler {
	files := map[string]*file{}
	err := fs.WalkDir(Files(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentType(path.Ext(name))
		if !ok {
			return nil
		}
		body, err := fs.ReadFile(Files(), name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[name] = &file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: reading embedded files: " + err.Error()) // a build defect, not input
	}
	return func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.Error("method not allowed; use GET", fasthttp.StatusMethodNotAllowed) // resets headers: Allow after
			h.Set("Allow", "GET, HEAD")
			return
		}
		p := string(ctx.Path())
		if p == Prefix {
			// Relative asset URLs in index.html need the trailing slash.
			loc := Prefix + "/"
			if q := ctx.URI().QueryString(); len(q) > 0 {
				loc += "?" + string(q)
			}
			h.Set("Location", loc)
			ctx.SetStatusCode(fasthttp.StatusFound)
			return
		}
		name, ok := strings.CutPrefix(p, Prefix+"/")
		if !ok {
			ctx.Error("not found", fasthttp.StatusNotFound)
			return
		}
		if name == "" {
			name = "index.html"
		}
		f := files[name]
		if f == nil {
			ctx.Error("not found", fasthttp.StatusNotFound)
			return
		}
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache") // revalidate: a new binary brings new files
		h.Set("ETag", f.etag)
		if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && bytes.Contains(inm, []byte(f.etag)) {
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
		ctx.SetContentType(f.contentType)
		ctx.SetBody(f.body)
	}
}
