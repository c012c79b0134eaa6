package raftstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Raft transport settings, the same with and without TLS.
const (
	transportMaxPool = 8
	transportTimeout = 10 * time.Second
	// peerHandshakeTimeout bounds a peer's TLS handshake, so a connection
	// that never completes one does not hold its goroutine forever.
	peerHandshakeTimeout = 10 * time.Second
)

// LoadPeerTLS builds the mutual-TLS configuration of Raft traffic from PEM
// files: the CA that signs every member's certificate, and this node's
// certificate and key. The certificate serves both ends of a connection,
// so it needs both the serverAuth and clientAuth extended key usages (or
// none), and a SAN for the host of the node's Raft address.
func LoadPeerTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("peer CA: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	return PeerTLSConfig(caPEM, cert)
}

// PeerTLSConfig is LoadPeerTLS on PEM bytes and a loaded certificate.
// Connections in both directions require a certificate signed by the CA:
// a listener refuses a peer without one, and a dialer refuses a listener
// whose certificate is not the CA's or does not name the address dialled.
func PeerTLSConfig(caPEM []byte, cert tls.Certificate) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("peer CA: no PEM certificate found")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// newTransport makes the Raft transport: plain TCP, or mutual TLS when
// cfg.PeerTLS is set.
func newTransport(cfg *Config, advertise *net.TCPAddr, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		return nil, errors.New("raft address must be an address other nodes can dial, not unspecified")
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	var sl raft.StreamLayer = &tcpStream{ln: ln, advertise: advertise}
	if cfg.PeerTLS != nil {
		sl = &tlsStreamLayer{ln: ln, advertise: advertise, cfg: cfg.PeerTLS}
	}
	// Closing the transport closes its connections too (streams.go).
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: newClosingStream(sl), MaxPool: transportMaxPool, Timeout: transportTimeout, Logger: logger,
	}), nil
}

// tlsStreamLayer is a raft.StreamLayer over mutual TLS.
type tlsStreamLayer struct {
	ln        net.Listener // TCP; each accepted connection is wrapped
	advertise net.Addr
	cfg       *tls.Config
}

// Accept waits for a peer's connection. Its TLS handshake happens on the
// connection's first read, in the goroutine raft gives each connection,
// so one slow peer cannot stall the others' accepts.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: tls.Server(c, l.cfg)}, nil
}

// Close stops listening.
func (l *tlsStreamLayer) Close() error { return l.ln.Close() }

// Addr is the advertised address.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Dial connects to a peer and completes the TLS handshake within timeout.
func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: l.cfg}
	return d.DialContext(ctx, "tcp", string(addr))
}

// handshakeConn is an accepted TLS connection that completes its
// handshake, within peerHandshakeTimeout, before its first read.
type handshakeConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), peerHandshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
	})
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}
