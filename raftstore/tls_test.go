package raftstore_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/internal/testcert"
	"github.com/holdfast/holdfast/raftstore"
)

// tlsMember is one node of an mTLS test cluster.
type tlsMember struct {
	id, dir, addr string
	tls           *tls.Config
	node          *raftstore.Node
	machine       *engine.Machine
}

func peerTLS(t *testing.T, ca *testcert.CA, name string) *tls.Config {
	t.Helper()
	c, err := raftstore.PeerTLSConfig(ca.PEM, ca.Issue(t, name, "127.0.0.1").TLS)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startTLSMembers opens every member with the same initial peers.
func startTLSMembers(t *testing.T, ms []*tlsMember) {
	t.Helper()
	var peers []raftstore.Peer
	for _, m := range ms {
		peers = append(peers, raftstore.Peer{ID: m.id, Addr: m.addr})
	}
	for _, m := range ms {
		m.machine = engine.New(engine.Config{})
		var err error
		m.node, err = raftstore.Open(raftstore.Config{
			ID: m.id, DataDir: m.dir, RaftAddr: m.addr, APIAddr: "api-" + m.id, Peers: peers, PeerTLS: m.tls,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, ApplyTimeout: 2 * time.Second,
			Logger: quietLog(), RaftLog: io.Discard,
		}, m.machine)
		if err != nil {
			t.Fatalf("open %s: %v", m.id, err)
		}
		n := m.node
		t.Cleanup(func() { n.Close() })
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitTLSLeader waits until one of ms leads and returns it.
func waitTLSLeader(t *testing.T, ms []*tlsMember) *tlsMember {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.node != nil && m.node.IsLeader() {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader within 10 s")
	return nil
}

// proposeTLS proposes c to whichever member leads, retrying (with an
// idempotency key, so a retry of a write that did commit changes nothing)
// while leadership settles.
func proposeTLS(t *testing.T, ms []*tlsMember, c allocator.Command) allocator.Result {
	t.Helper()
	c.IdemKey = fmt.Sprintf("k-%d-%s-%s", c.Kind, c.Pool, c.Buyer)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range ms {
			if m.node == nil || !m.node.IsLeader() {
				continue
			}
			res, err := m.node.Propose(context.Background(), c.AppendEncode(nil))
			if err == nil {
				return res.(allocator.Result)
			}
			if time.Now().After(deadline) {
				t.Fatalf("propose %v: %v", c.Kind, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("propose %v: no leader", c.Kind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newMembers(t *testing.T, n int) []*tlsMember {
	ms := make([]*tlsMember, n)
	for i := range ms {
		ms[i] = &tlsMember{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeAddr(t)}
	}
	return ms
}

// TestRaftOverMutualTLS: a three-node cluster whose Raft traffic is mutual
// TLS elects a leader and replicates writes to every member.
func TestRaftOverMutualTLS(t *testing.T) {
	ca := testcert.NewCA(t, "holdfast peers")
	ms := newMembers(t, 3)
	for _, m := range ms {
		m.tls = peerTLS(t, ca, m.id)
	}
	startTLSMembers(t, ms)
	waitTLSLeader(t, ms)
	proposeTLS(t, ms, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)})
	for i := range 20 {
		if r := proposeTLS(t, ms, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprint("b", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}}); r.Err != nil && i < 10 {
			t.Fatal(r.Err)
		}
	}
	want := waitTLSLeader(t, ms).node.Status().CommitIndex
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range ms {
		for m.node.Status().AppliedIndex < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %d of %d", m.id, m.node.Status().AppliedIndex, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		p, err := m.machine.Alloc.Pool("p")
		if err != nil || p.Held != 10 {
			t.Fatalf("%s: pool %+v %v", m.id, p, err)
		}
	}
}

// TestRaftRefusesForeignCertificate: a member whose certificate comes from
// another CA is in the configuration (four voters, quorum three) but can
// neither receive entries nor vote: the three good members commit without
// it, it never gets an entry past its own bootstrap, and with one good
// member down the cluster cannot commit, because the fourth does not count.
func TestRaftRefusesForeignCertificate(t *testing.T) {
	ca, rogueCA := testcert.NewCA(t, "holdfast peers"), testcert.NewCA(t, "someone else")
	ms := newMembers(t, 4)
	for _, m := range ms[:3] {
		m.tls = peerTLS(t, ca, m.id)
	}
	rogue := ms[3]
	rogue.tls = peerTLS(t, rogueCA, rogue.id)
	startTLSMembers(t, ms)
	good := ms[:3]
	waitTLSLeader(t, good)
	if rogue.node.IsLeader() {
		t.Fatal("the rogue member leads")
	}
	rogueStart := rogue.node.Status().LastIndex // its own bootstrap entry
	proposeTLS(t, good, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)})
	for i := range 10 {
		proposeTLS(t, good, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprint("b", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	}
	time.Sleep(time.Second) // heartbeats and retries have had their chance
	leader := waitTLSLeader(t, good)
	if st := rogue.node.Status(); st.LastIndex != rogueStart || st.AppliedIndex > rogueStart || st.Leader != "" {
		t.Fatalf("the rogue member received entries or a leader: %+v (bootstrap index %d)", st, rogueStart)
	}
	if _, err := rogue.machine.Alloc.Pool("p"); err == nil {
		t.Fatal("the rogue member has the pool")
	}
	if li := leader.node.Status().LastIndex; li <= rogueStart+10 {
		t.Fatalf("the leader's log is at %d only", li)
	}

	// Stop a good follower: two good voters of four cannot commit.
	var stopped *tlsMember
	for _, m := range good {
		if m != leader {
			stopped = m
			break
		}
	}
	stopped.node.Close()
	stopped.node = nil
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		var l *tlsMember
		for _, m := range good {
			if m.node != nil && m.node.IsLeader() {
				l = m
			}
		}
		if l == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		c := allocator.Command{Kind: allocator.KindAdjustPool, Pool: "p", Delta: 1}
		if _, err = l.node.Propose(ctx, c.AppendEncode(nil)); err == nil {
			t.Fatal("a write committed with two good members of four: the rogue member was counted")
		}
	}
	if err == nil {
		t.Log("no leader at all after the stop (also right: the rogue member cannot vote)")
	}
}

// TestRaftListenerChecksClientCertificates: the Raft port completes a
// handshake only with a client certificate from the peer CA.
func TestRaftListenerChecksClientCertificates(t *testing.T) {
	ca, otherCA := testcert.NewCA(t, "holdfast peers"), testcert.NewCA(t, "someone else")
	ms := newMembers(t, 1)
	ms[0].tls = peerTLS(t, ca, "n1")
	startTLSMembers(t, ms)
	waitTLSLeader(t, ms)

	try := func(cfg *tls.Config) error {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: cfg}
		c, err := d.Dial("tcp", ms[0].addr)
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// after the client's side of the handshake; a read surfaces it.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // accepted: the node waits for a Raft command
		}
		return err
	}
	good, err := raftstore.PeerTLSConfig(ca.PEM, ca.Issue(t, "client", "127.0.0.1").TLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(good); err != nil {
		t.Fatalf("a certificate from the peer CA was refused: %v", err)
	}
	foreign := good.Clone()
	foreign.Certificates = []tls.Certificate{otherCA.Issue(t, "intruder", "127.0.0.1").TLS}
	if err := try(foreign); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	none := good.Clone()
	none.Certificates = nil
	if err := try(none); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	// And the node itself refuses to talk to a server outside its CA.
	if err := try(&tls.Config{RootCAs: otherCA.Pool(), Certificates: good.Certificates}); err == nil {
		t.Fatal("the node's certificate verified against another CA")
	}
}

// TestLoadPeerTLS: the files a node is started with.
func TestLoadPeerTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "holdfast peers")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	certFile, keyFile := ca.Issue(t, "n1", "127.0.0.1").WriteFiles(t, dir, "n1")
	if _, err := raftstore.LoadPeerTLS(caFile, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := raftstore.LoadPeerTLS(keyFile, certFile, keyFile); err == nil {
		t.Fatal("a key file was accepted as the CA")
	}
	if _, err := raftstore.LoadPeerTLS(caFile, certFile, filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing key was accepted")
	}
	other := testcert.NewCA(t, "x").Issue(t, "n2", "127.0.0.1")
	_, otherKey := other.WriteFiles(t, dir, "n2")
	if _, err := raftstore.LoadPeerTLS(caFile, certFile, otherKey); err == nil {
		t.Fatal("a key that does not match the certificate was accepted")
	}
	os.Remove(caFile)
	if _, err := raftstore.LoadPeerTLS(caFile, certFile, keyFile); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

// TestJoinNeedsPeerCertificate: a node added to a running mTLS cluster
// catches up only with a certificate from the peer CA; one from another
// CA is added to the configuration but never receives an entry.
func TestJoinNeedsPeerCertificate(t *testing.T) {
	ca, rogueCA := testcert.NewCA(t, "holdfast peers"), testcert.NewCA(t, "someone else")
	ms := newMembers(t, 3)
	for _, m := range ms {
		m.tls = peerTLS(t, ca, m.id)
	}
	startTLSMembers(t, ms)
	waitTLSLeader(t, ms)
	proposeTLS(t, ms, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)})

	join := func(id string, c *tls.Config) *tlsMember {
		m := &tlsMember{id: id, dir: t.TempDir(), addr: freeAddr(t), tls: c, machine: engine.New(engine.Config{})}
		var err error
		m.node, err = raftstore.Open(raftstore.Config{
			ID: m.id, DataDir: m.dir, RaftAddr: m.addr, APIAddr: "api-" + m.id, NoBootstrap: true, PeerTLS: m.tls,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, Logger: quietLog(), RaftLog: io.Discard,
		}, m.machine)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.node.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			if err := waitTLSLeader(t, ms).node.AddMember(ctx, id, m.addr, "", false); err == nil {
				return m
			} else if ctx.Err() != nil {
				t.Fatalf("add %s: %v", id, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	good := join("n4", peerTLS(t, ca, "n4"))
	rogue := join("n5", peerTLS(t, rogueCA, "n5"))
	want := waitTLSLeader(t, ms).node.Status().CommitIndex
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := good.node.WaitApplied(ctx, want); err != nil {
		t.Fatalf("a node with a peer certificate did not catch up: %v (%+v)", err, good.node.Status())
	}
	if _, err := good.machine.Alloc.Pool("p"); err != nil {
		t.Fatalf("the joined node lacks the pool: %v", err)
	}
	time.Sleep(time.Second) // the leader keeps trying to replicate to n5
	if st := rogue.node.Status(); st.LastIndex != 0 || st.AppliedIndex != 0 || st.Leader != "" {
		t.Fatalf("a node with a foreign certificate received entries: %+v", st)
	}
	if _, err := rogue.machine.Alloc.Pool("p"); err == nil {
		t.Fatal("a node with a foreign certificate has the pool")
	}
}
