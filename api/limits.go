package api

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Limits bounds what one client, or many, can make a node hold: time
// per request, connections, buffers and the connections used to relay
// requests to the leader. Zero values take the defaults named on each
// field; docs/design.md ("Request limits") explains the choices. The
// request body limit is the contract's (MaxBodyBytes) and not
// configurable.
type Limits struct {
	// ReadTimeout bounds reading one whole request, headers and body:
	// on a new connection from when it is accepted, on a kept-alive one
	// from the request's first byte. A client that dribbles a request
	// (slowloris) is cut off when it expires. Default 15s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response to a client that does
	// not read it. Default 15s.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request before it is closed. Default 60s.
	IdleTimeout time.Duration
	// MaxConns is the most connections served at once; past it a new
	// connection is answered 503 unavailable (in the contract's format,
	// with Retry-After; over TLS, without an answer) and closed. An idle
	// connection costs a goroutine
	// and, between requests, no buffers (fasthttp's ReduceMemoryUsage):
	// about 5 KiB. Default 65536. The process's open-file limit may bind
	// first: accepting then pauses and retries (retryListener).
	MaxConns int
	// MaxConnsPerIP caps connections from one client address; 0 (the
	// default) means no cap, because checkout services reach holdfast
	// through load balancers and NAT, where one address is many clients.
	MaxConnsPerIP int
	// MaxHeaderBytes is the read buffer per request, which bounds the
	// request line and headers together (larger is 400). Default 16 KiB.
	MaxHeaderBytes int
	// ForwardMaxConns bounds the connections a follower opens to the
	// leader to relay requests. Default 1024.
	ForwardMaxConns int
	// ForwardConnWait is how long a relayed request waits for one of
	// those connections to come free before it is answered 503
	// unavailable. Default 1s.
	ForwardConnWait time.Duration
}

// Defaults of Limits.
const (
	DefaultReadTimeout     = 15 * time.Second
	DefaultWriteTimeout    = 15 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultMaxConns        = 65536
	DefaultMaxHeaderBytes  = 16 << 10
	DefaultForwardMaxConns = 1024
	DefaultForwardConnWait = time.Second
)

// withDefaults fills in zero fields.
func (l Limits) withDefaults() Limits {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.WriteTimeout, DefaultWriteTimeout)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	set(&l.ForwardConnWait, DefaultForwardConnWait)
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerIP < 0 {
		l.MaxConnsPerIP = 0
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.ForwardMaxConns <= 0 {
		l.ForwardMaxConns = DefaultForwardMaxConns
	}
	return l
}

// newHTTPServer returns the fasthttp server for s with the limits of cfg.
func (s *Server) newHTTPServer(l Limits) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      s.Handle,
		ErrorHandler:                 s.handleParseError,
		Name:                         "holdfast",
		MaxRequestBodySize:           MaxBodyBytes,
		ReadTimeout:                  l.ReadTimeout,
		WriteTimeout:                 l.WriteTimeout,
		IdleTimeout:                  l.IdleTimeout,
		Concurrency:                  l.MaxConns + l.MaxConns/4 + 16, // the listener enforces MaxConns; a worker may lag its closed connection
		MaxConnsPerIP:                l.MaxConnsPerIP,
		ReadBufferSize:               l.MaxHeaderBytes,
		ReduceMemoryUsage:            true, // idle connections hold no buffers
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		Logger:                       fasthttpLogger{s.log},
		HeaderReceived:               s.headerReceived, // a backup's longer write timeout (cluster.go)
	}
}

// newForwardClient returns the client that relays requests to the
// leader at addr: a burst beyond ForwardMaxConns waits up to
// ForwardConnWait for a connection instead of failing at once.
func (s *Server) newForwardClient(addr string) *fasthttp.HostClient {
	l := s.cfg.Limits
	return &fasthttp.HostClient{
		Addr: addr, MaxConns: l.ForwardMaxConns, MaxConnWaitTimeout: l.ForwardConnWait,
		ReadTimeout: s.cfg.RequestTimeout, WriteTimeout: s.cfg.RequestTimeout,
		IsTLS: s.cfg.ForwardTLS != nil, TLSConfig: s.cfg.ForwardTLS,
	}
}

// ---- relaying ----

// relayHeader lists the relay tokens of the nodes that relayed a
// request, oldest first, comma-separated. A node's token is 128 random
// bits made when it starts and never shown to clients, so a client
// cannot pretend that a node already relayed its request: a node refuses
// only a request carrying its own token, i.e. one that came back to it
// (a relay loop while leadership moves). Anything else a client puts
// there is carried along and ignored. X-Holdfast-Forwarded-By, the id of
// the last relaying node, is informational only.
const relayHeader = "X-Holdfast-Relay"

// maxRelayHops bounds the tokens kept in relayHeader: a relay path never
// visits a node twice, so it is shorter than any cluster holdfast runs;
// the oldest tokens beyond it (a client's filler) are dropped.
const maxRelayHops = 16

func newRelayToken() []byte {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather)
	return []byte(hex.EncodeToString(b[:]))
}

// relayedHere reports whether this node already relayed req.
func (s *Server) relayedHere(req *fasthttp.Request) bool {
	v := req.Header.Peek(relayHeader)
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte{','})
		if subtle.ConstantTimeCompare(bytes.TrimSpace(tok), s.relayToken) == 1 {
			return true
		}
	}
	return false
}

// markRelayed adds this node's token to req's relay path and names it in
// X-Holdfast-Forwarded-By.
func (s *Server) markRelayed(req *fasthttp.Request) {
	prev := req.Header.Peek(relayHeader)
	for n := bytes.Count(prev, []byte{','}) + 1; len(prev) > 0 && n >= maxRelayHops; n-- {
		_, prev, _ = bytes.Cut(prev, []byte{','})
	}
	v := make([]byte, 0, len(prev)+1+len(s.relayToken))
	if len(prev) > 0 {
		v = append(append(v, prev...), ',')
	}
	req.Header.SetBytesV(relayHeader, append(v, s.relayToken...))
	req.Header.Set(forwardedHeader, s.node.ID())
}

// ---- accepting ----

// serveListener wraps ln for Serve: accept errors that may pass are
// retried (retryListener) and connections beyond MaxConns are refused in
// the contract's format (connLimitListener).
func (s *Server) serveListener(ln net.Listener) net.Listener {
	body, _ := json.Marshal(struct {
		Error *apiError `json:"error"`
	}{unavailable("too many connections to this node; retry")})
	reject := fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"+
		"X-Holdfast-Node: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", s.node.ID(), len(body), body)
	return &connLimitListener{Listener: retryListener{ln, s.log}, max: int64(s.cfg.Limits.MaxConns), reject: reject, log: s.log}
}

// connLimitListener serves at most max connections at once. One more is
// answered 503 unavailable and closed at once, before its request is
// read: fasthttp's own limit (Concurrency) would answer in plain text.
type connLimitListener struct {
	net.Listener
	max    int64
	reject []byte // the whole 503 response
	log    *slog.Logger

	open      atomic.Int64
	refused   atomic.Int64 // since the last warning
	nextLogNs atomic.Int64
}

// connLimitLogEvery bounds the warnings about refused connections.
const connLimitLogEvery = time.Minute

// Accept implements net.Listener.
func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, isTLS := c.(tlsConn)
		if l.open.Add(1) <= l.max {
			cc := &countedConn{Conn: c, open: &l.open}
			if isTLS { // fasthttp must still see TLS (ctx.IsTLS, the handshake)
				return countedTLSConn{cc, tc}, nil
			}
			return cc, nil
		}
		l.open.Add(-1)
		if !isTLS { // a TLS answer would need a handshake first: just close
			c.SetDeadline(time.Now().Add(100 * time.Millisecond)) // never hold up accepting
			c.Write(l.reject)
		}
		c.Close()
		n := l.refused.Add(1)
		if now := time.Now().UnixNano(); now >= l.nextLogNs.Load() {
			l.nextLogNs.Store(now + int64(connLimitLogEvery))
			l.refused.Add(-n)
			l.log.Warn("connections refused: at the limit", "max_conns", l.max, "refused", n)
		}
	}
}

// tlsConn is what fasthttp looks for to treat a connection as TLS.
type tlsConn interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
}

// countedTLSConn is a countedConn over TLS.
type countedTLSConn struct {
	*countedConn
	tc tlsConn
}

// Handshake runs the TLS handshake.
func (c countedTLSConn) Handshake() error { return c.tc.Handshake() }

// ConnectionState returns the TLS state.
func (c countedTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// countedConn gives its place back when closed.
type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

// Close implements net.Conn.
func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// retryListener keeps accepting after temporary errors. fasthttp treats
// every Accept error but a timeout as fatal and stops serving, so without
// it one moment out of file descriptors (EMFILE: a connection flood)
// would end the node's API for good while Raft runs on. As net/http
// does, it backs off from 5 ms doubling to 1 s and tries again.
type retryListener struct {
	net.Listener
	log *slog.Logger
}

// maxAcceptBackoff bounds the pause between failed accepts.
const maxAcceptBackoff = time.Second

// Accept implements net.Listener.
func (l retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		var te interface{ Temporary() bool }
		if !errors.As(err, &te) || !te.Temporary() {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), maxAcceptBackoff)
		l.log.Warn("accept failed; retrying", "err", err, "delay", delay)
		time.Sleep(delay)
	}
}
