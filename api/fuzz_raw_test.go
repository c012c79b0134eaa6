package api_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/holdfast/holdfast/api"
)

// FuzzRawHTTP sends arbitrary bytes down a real connection to a live
// node, so fasthttp's request parsing (request line, headers, escapes,
// Content-Length, chunked bodies, pipelining) and the API's handling of
// what it could not parse are fuzzed together. The client half-closes
// after writing and reads every response until the node closes: each
// must be a well-formed HTTP response, never a 5xx but 503, and every 4xx
// in the contract's error format. A panic would end the test binary.
func FuzzRawHTTP(f *testing.F) {
	n := startCluster(f, 1)[0]
	addr := hostileServer(f, n, api.Limits{ReadTimeout: 2 * time.Second})
	wantStatus(f, n, n.call(f, "PUT", "/v1/pools/raw", `{"on_hand": 100}`), 201)
	for _, s := range []string{
		"GET /v1/pools/raw HTTP/1.1\r\nHost: h\r\n\r\n",
		"PUT /v1/pools/raw2 HTTP/1.1\r\nHost: h\r\nContent-Length: 14\r\n\r\n{\"on_hand\": 5}",
		"POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Length: 45\r\n\r\n{\"buyer\":\"b\",\"lines\":[{\"pool\":\"raw\",\"qty\":1}]}" +
			"GET /v1/pools?limit=1&after=raw HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /v1/reservations HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"buy\r\n0\r\n\r\n",
		"POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
		"POST /v1/carts HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n{\"owner\":\"user:raw\"}",
		"GET /v1/pools/%zz HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /v1/pools/r\xffw HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://h/v1/pools/raw?consistency=stale HTTP/1.1\r\n\r\n",
		"GET /v1/pools/raw HTTP/1.0\r\n\r\n",
		"GET /../../v1/health HTTP/1.1\r\nHost: h\r\n\r\n",
		"DELETE /v1/carts/c_1/lines/l_1?line_version=%00 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /v1/pools/raw/adjust HTTP/1.1\r\nHost: h\r\nIdempotency-Key: k\r\nContent-Length: 12\r\n\r\n{\"delta\": 1}",
		"GET /v1/health HTTP/1.1\r\nHost: h\r\nX-Holdfast-Relay: x\r\nX-Holdfast-Forwarded-By: n1\r\n\r\n",
		"\r\n\r\n",
		"GET / HTTP/9.9\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if bytes.Contains(bytes.ToUpper(raw), []byte("HEAD")) {
			return // a HEAD response has no body: the reader below cannot frame it
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			c.Write(raw)
			c.(*net.TCPConn).CloseWrite()
		}()
		all, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%q: reading: %v", raw, err)
		}
		br := bufio.NewReader(bytes.NewReader(all))
		for {
			if _, err := br.Peek(1); err != nil {
				break // every response read
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%q: malformed response %v in %q", raw, err, all)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("%q: response body: %v in %q", raw, err, all)
			}
			switch s := resp.StatusCode; {
			case s == 100 || s >= 200 && s < 400:
			case s >= 400 && s < 500, s == 503:
				if _, err := errorShape(s, body); err != nil {
					t.Fatalf("%q: %v", raw, err)
				}
			default:
				t.Fatalf("%q: status %d: %s", raw, s, body)
			}
		}
	})
}
