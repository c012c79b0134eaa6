package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// testNode is one in-process holdfast node: Pebble, Raft over loopback TCP,
// and the HTTP API on a real socket.
type testNode struct {
	id       string
	dir      string
	raftAddr string
	httpAddr string
	peers    []raftstore.Peer
	node     *raftstore.Node
	machine  *engine.Machine
	srv      *api.Server
	reg      *prometheus.Registry // shared by raftstore and the API, as in cmd/holdfast
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start opens the node (again, if it was stopped) on its data directory.
func (n *testNode) start(t testing.TB) {
	t.Helper()
	n.machine = engine.New(engine.Config{})
	n.reg = prometheus.NewRegistry()
	var err error
	n.node, err = raftstore.Open(raftstore.Config{
		ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: n.httpAddr, Peers: n.peers,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard,
		Registerer: n.reg,
	}, n.machine)
	if err != nil {
		t.Fatalf("open %s: %v", n.id, err)
	}
	ln, err := net.Listen("tcp", n.httpAddr)
	if err != nil {
		t.Fatalf("listen %s: %v", n.id, err)
	}
	n.srv = api.New(api.Config{Node: n.node, Alloc: n.machine.Alloc, Carts: n.machine, Registry: n.reg, Logger: quietLogger(), RequestTimeout: 5 * time.Second})
	go n.srv.Serve(ln)
}

// stop shuts the node down; its data directory stays.
func (n *testNode) stop(t testing.TB) {
	t.Helper()
	if n.node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
	n.node.Close()
	n.node = nil
}

// startCluster starts size nodes bootstrapped together and waits for a leader.
func startCluster(t testing.TB, size int) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	var peers []raftstore.Peer
	for i := range nodes {
		nodes[i] = &testNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
		peers = append(peers, raftstore.Peer{ID: nodes[i].id, Addr: nodes[i].raftAddr})
	}
	for _, n := range nodes {
		n.peers = peers
		n.start(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})
	waitLeader(t, nodes, 10*time.Second)
	return nodes
}

// waitLeader waits until every running node knows a leader whose API
// address is known, and returns the leader.
func waitLeader(t testing.TB, nodes []*testNode, timeout time.Duration) *testNode {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader *testNode
		ok := true
		for _, n := range nodes {
			if n.node == nil {
				continue
			}
			id, _, known := n.node.Leader()
			if !known {
				ok = false
				break
			}
			for _, m := range nodes {
				if m.id == id && m.node != nil {
					leader = m
				}
			}
		}
		if ok && leader != nil && leader.node.IsLeader() {
			return leader
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader within %v", timeout)
	return nil
}

// response is a decoded HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return v
}

// errCode returns error.code of an error response ("" if none).
func (r response) errCode() string {
	var v struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(r.body, &v)
	return v.Error.Code
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// do sends a request; headers come in pairs.
func do(t testing.TB, method, url string, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (n *testNode) url(path string) string { return "http://" + n.httpAddr + path }
