package raftstore

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// closingStream wraps the Raft transport's stream layer so that closing it
// closes every connection it dialed or accepted, not only the listener.
// hashicorp/raft's NetworkTransport.Close closes the listener alone, and
// raft.Shutdown waits for goroutines blocked in RPCs to peers: one to a
// peer that stopped answering waits the transport's full I/O timeout
// (10 s), and the next one as long again (hashicorp/raft#612's shape;
// found by chaos TermUnderBlackhole). Node.Close closes the transport
// right after asking Raft to shut down, so those RPCs fail at once.
type closingStream struct {
	raft.StreamLayer

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newClosingStream(s raft.StreamLayer) *closingStream {
	return &closingStream{StreamLayer: s, conns: make(map[*trackedConn]struct{})}
}

// errStreamClosed: a dial or accept after Close.
var errStreamClosed = errors.New("raftstore: transport closed")

func (s *closingStream) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, errStreamClosed
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// Accept implements net.Listener.
func (s *closingStream) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

// Dial implements raft.StreamLayer.
func (s *closingStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

// Close stops listening and closes every open connection.
func (s *closingStream) Close() error {
	err := s.StreamLayer.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	s    *closingStream
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// tcpStream is raft's plain TCP stream layer (raft.TCPStreamLayer cannot
// be built from outside its package).
type tcpStream struct {
	ln        net.Listener
	advertise net.Addr
}

// Accept implements net.Listener.
func (l *tcpStream) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close implements net.Listener.
func (l *tcpStream) Close() error { return l.ln.Close() }

// Addr is the advertised address.
func (l *tcpStream) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer.
func (l *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}
