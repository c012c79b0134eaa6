package bench

import (
	"context"
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
type httpNodes struct {
	clients []*fasthttp.HostClient
	addrs   []string
	next    atomic.Uint64
	timeout time.Duration
	retries int
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
	h := &httpNodes{addrs: addrs, timeout: o.Timeout, retries: o.Retries}
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

func (h *httpNodes) close() {
	for _, c := range h.clients {
		c.CloseIdleConnections()
	}
}

// errUnavailable is a 503 that stayed 503 after the retries.
var errUnavailable = errors.New("unavailable (503) after retries")

// do sends one request to the next node and returns the status and a copy
// of the body. A 503 or a transport error is retried (on the next node,
// with a short backoff) up to h.retries times when the request is safe to
// repeat: a GET, a PUT, or a POST carrying an idempotency key.
func (h *httpNodes) do(ctx context.Context, method, path string, body []byte, idemKey string) (int, []byte, error) {
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
		c := h.clients[int(h.next.Add(1)%uint64(len(h.clients)))]
		req.Reset()
		resp.Reset()
		req.Header.SetMethod(method)
		req.SetRequestURI("http://" + c.Addr + path)
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
			if status != fasthttp.StatusServiceUnavailable {
				return status, append([]byte(nil), resp.Body()...), nil
			}
			lastErr = errUnavailable
		} else {
			lastErr = err
		}
		if !retryable || attempt >= h.retries || time.Now().Add(backoff).After(deadline) {
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
