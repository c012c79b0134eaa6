package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/ctl"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// startQuiet is testNode.start for nodes that write no idle ticks: the
// state changes only with writes, so replicas and restores can be
// compared byte for byte.
func (n *testNode) startQuiet(t testing.TB) {
	t.Helper()
	n.machine = engine.New(engine.Config{})
	n.reg = prometheus.NewRegistry()
	var err error
	n.node, err = raftstore.Open(raftstore.Config{
		ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: n.httpAddr, Peers: n.peers,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard,
		Registerer: n.reg, FreshnessMs: int64(time.Hour / time.Millisecond),
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

func runCtl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := ctl.Main(args, &out, &errOut)
	return out.String() + errOut.String(), code
}

// TestBackupRoundTrip: a live 3-node cluster's state (pools, reservations
// in every state, carts and a checkout) is backed up with holdfast ctl
// through a follower (which streams the leader's backup), restored into a
// new single-node cluster, and compared: the allocator state hash and
// every API read are the same.
func TestBackupRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	nodes := make([]*testNode, 3)
	var peers []raftstore.Peer
	for i := range nodes {
		nodes[i] = &testNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
		peers = append(peers, raftstore.Peer{ID: nodes[i].id, Addr: nodes[i].raftAddr})
	}
	for _, n := range nodes {
		n.peers = peers
		n.startQuiet(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})
	leader := waitLeader(t, nodes, 10*time.Second)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}

	// State: two pools, reservations active, confirmed, released and
	// waiting, carts with lines, and a checkout.
	wantStatus := func(r response, code int) response {
		t.Helper()
		if r.status != code {
			t.Fatalf("%d %s, want %d", r.status, r.body, code)
		}
		return r
	}
	wantStatus(do(t, "PUT", leader.url("/v1/pools/tee:red:s1:dc1"), `{"on_hand": 50}`), 201)
	wantStatus(do(t, "PUT", leader.url("/v1/pools/drop"), `{"on_hand": 2, "per_buyer_limit": 1, "waitlist": {"enabled": true}}`), 201)
	var rids []string
	for i := range 6 {
		r := wantStatus(do(t, "POST", follower.url("/v1/reservations"), fmt.Sprintf(`{"buyer":"u-%d","lines":[{"pool":"tee:red:s1:dc1","qty":2}]}`, i), "Idempotency-Key", fmt.Sprintf("k-%d", i)), 201)
		id := r.json(t)["id"].(string)
		rids = append(rids, id)
		switch i % 3 {
		case 1:
			wantStatus(do(t, "POST", follower.url("/v1/reservations/"+id+"/confirm"), ""), 200)
		case 2:
			wantStatus(do(t, "POST", follower.url("/v1/reservations/"+id+"/release"), ""), 200)
		}
	}
	for i := range 4 {
		r := wantStatus(do(t, "POST", follower.url("/v1/reservations"), fmt.Sprintf(`{"buyer":"d-%d","lines":[{"pool":"drop","qty":1}],"wait":true}`, i)), 201)
		rids = append(rids, r.json(t)["id"].(string))
	}
	cart := wantStatus(do(t, "POST", follower.url("/v1/carts"), `{"owner":"user:42"}`), 201).json(t)["id"].(string)
	wantStatus(do(t, "POST", follower.url("/v1/carts/"+cart+"/lines"), `{"sku":"tee","variant":"red","seller":"s1","fulfillment":"dc1","qty":1,"price":{"amount_minor":1900,"currency":"EUR","offer_id":"o-7"}}`), 200)
	cart2 := wantStatus(do(t, "POST", follower.url("/v1/carts"), `{"owner":"anon:7f"}`), 201).json(t)["id"].(string)
	wantStatus(do(t, "POST", follower.url("/v1/carts/"+cart2+"/lines"), `{"sku":"tee","variant":"red","seller":"s1","fulfillment":"dc1","qty":3}`), 200)
	v := do(t, "GET", leader.url("/v1/carts/"+cart), "").json(t)["version"]
	co := wantStatus(do(t, "POST", follower.url("/v1/carts/"+cart+"/checkout"), fmt.Sprintf(`{"expected_version":%v}`, v)), 201).json(t)["id"].(string)

	file := filepath.Join(t.TempDir(), "state.backup")
	out, code := runCtl(t, "--addr", "http://"+follower.httpAddr, "backup", file)
	if code != 0 {
		t.Fatalf("ctl backup: %d %s", code, out)
	}
	if !strings.Contains(out, "last_index") || !strings.Contains(out, "sha256") {
		t.Fatalf("ctl backup printed:\n%s", out)
	}
	// The source now stays put (no idle ticks): its state is the backup's.
	waitConverged(t, nodes)
	wantHash := leader.machine.Alloc.StateHash()
	reads := func(n *testNode) []string {
		var got []string
		paths := []string{"/v1/pools", "/v1/pools/drop", "/v1/carts/" + cart, "/v1/carts/" + cart2, "/v1/checkouts/" + co}
		for _, id := range rids {
			paths = append(paths, "/v1/reservations/"+id)
		}
		for _, p := range paths {
			r := do(t, "GET", n.url(p), "")
			if r.status != 200 {
				t.Fatalf("GET %s on %s: %d %s", p, n.id, r.status, r.body)
			}
			got = append(got, p+" "+dropVolatile(string(r.body)))
		}
		return got
	}
	before := reads(leader)

	out, code = runCtl(t, "restore", file)
	if code != 0 || !strings.Contains(out, "cluster_time") {
		t.Fatalf("ctl restore (verify): %d %s", code, out)
	}
	r := &testNode{id: "r1", dir: t.TempDir(), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raftstore.RestoreBackup(raftstore.Config{ID: r.id, DataDir: r.dir, RaftAddr: r.raftAddr, RaftLog: io.Discard}, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.startQuiet(t)
	t.Cleanup(func() { r.stop(t) })
	waitLeader(t, []*testNode{r}, 10*time.Second)
	if r.machine.Alloc.StateHash() != wantHash {
		t.Fatal("restored allocator state differs from the source's")
	}
	after := reads(r)
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("read differs after restore:\nsource:   %s\nrestored: %s", before[i], after[i])
		}
	}
	// The restored cluster is a working cluster: the checkout confirms.
	wantStatus(do(t, "POST", r.url("/v1/checkouts/"+co+"/confirm"), ""), 200)
	// A restore into a data directory in use is refused.
	if out, code := runCtl(t, "restore", file, "--data", r.dir); code == 0 || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into a used directory: %d %s", code, out)
	}
}

// dropVolatile removes what legitimately differs between two reads of the
// same state at different times: as_of (the read's own time) and the
// demand rates (computed against the clock now).
func dropVolatile(body string) string {
	for _, key := range []string{`"as_of":"`} {
		for {
			i := strings.Index(body, key)
			if i < 0 {
				break
			}
			j := strings.IndexByte(body[i+len(key):], '"')
			body = body[:i] + body[i+len(key)+j+1:]
		}
	}
	return body
}

// waitConverged waits until every running node applied the same index.
func waitConverged(t *testing.T, nodes []*testNode) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var idx []uint64
		for _, n := range nodes {
			idx = append(idx, n.node.Status().AppliedIndex)
		}
		sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
		if idx[0] == idx[len(idx)-1] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged: %v", idx)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterEndpoints: the membership endpoints' answers, allowed and
// refused, through a follower (which forwards to the leader).
func TestClusterEndpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	nodes := startCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	m := do(t, "GET", follower.url("/v1/cluster/members"), "")
	if m.status != 200 || len(m.json(t)["members"].([]any)) != 3 {
		t.Fatalf("members: %d %s", m.status, m.body)
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/cluster/members", `{"id":"n9"}`, 400, "invalid_argument"},
		{"POST", "/v1/cluster/members", `{"id":"n9","raft_addr":"nohost"}`, 400, "invalid_argument"},
		{"POST", "/v1/cluster/members", `{"id":"n9","raft_addr":"127.0.0.1:1","extra":1}`, 400, "invalid_argument"},
		{"POST", "/v1/cluster/members", `{"id":"bad id","raft_addr":"127.0.0.1:1"}`, 400, "invalid_argument"},
		{"POST", "/v1/cluster/members", `{"id":"n9","raft_addr":"127.0.0.1:1","api_addr":"x"}`, 400, "invalid_argument"},
		{"POST", "/v1/cluster/members", `{"id":"n9","raft_addr":"` + leader.raftAddr + `"}`, 409, "invalid_state"},
		{"DELETE", "/v1/cluster/members/n9", "", 404, "not_found"},
		{"PUT", "/v1/cluster/members", "", 405, "method_not_allowed"},
		{"GET", "/v1/cluster/leader", "", 405, "method_not_allowed"},
		{"POST", "/v1/backup", "", 405, "method_not_allowed"},
		{"POST", "/v1/cluster/leader", `{"id":"n9"}`, 404, "not_found"},
		{"GET", "/v1/cluster/nothing", "", 404, "not_found"},
	} {
		r := do(t, c.method, follower.url(c.path), c.body)
		if r.status != c.status || r.errCode() != c.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", c.method, c.path, c.body, r.status, r.body, c.status, c.code)
		}
	}
	// A non-voter added and removed again; adding twice is a no-op.
	for range 2 {
		r := do(t, "POST", follower.url("/v1/cluster/members"), `{"id":"n9","raft_addr":"127.0.0.1:1","voter":false}`)
		if r.status != 200 || !strings.Contains(string(r.body), `"id":"n9"`) || !strings.Contains(string(r.body), `"Nonvoter"`) {
			t.Fatalf("add non-voter: %d %s", r.status, r.body)
		}
	}
	if r := do(t, "DELETE", follower.url("/v1/cluster/members/n9"), ""); r.status != 200 || strings.Contains(string(r.body), `"n9"`) {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	// Leadership to a named follower, then to anyone.
	r := do(t, "POST", follower.url("/v1/cluster/leader"), `{"id":"`+follower.id+`"}`)
	if r.status != 200 || r.json(t)["leader"] != follower.id {
		t.Fatalf("transfer to %s: %d %s", follower.id, r.status, r.body)
	}
	if got := waitLeader(t, nodes, 5*time.Second); got != follower {
		t.Fatalf("leader %s, want %s", got.id, follower.id)
	}
	out, code := runCtl(t, "--addr", leader.httpAddr, "cluster", "transfer-leader")
	if code != 0 || !strings.Contains(out, "leader is now") || strings.Contains(out, "now "+follower.id) {
		t.Fatalf("ctl transfer-leader: %d %s", code, out)
	}
	// The operator metrics: who leads, how many leaders each node saw.
	now := waitLeader(t, nodes, 5*time.Second)
	for _, n := range nodes {
		body := string(do(t, "GET", n.url("/metrics"), "").body)
		wantLeader := "holdfast_raft_leader 0"
		if n == now {
			wantLeader = "holdfast_raft_leader 1"
		}
		for _, want := range []string{wantLeader, "holdfast_raft_has_leader 1", `holdfast_raft_members{suffrage="voter"} 3`,
			"holdfast_expiry_lag_seconds 0", `holdfast_raft_index{kind="commit"}`} {
			if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
				t.Errorf("%s /metrics lacks %q", n.id, want)
			}
		}
		// At least the first leader and two transfers (a busy machine may
		// add an election of its own).
		var changes int
		if i := strings.Index(body, "\nholdfast_raft_leader_changes_total "); i < 0 {
			t.Errorf("%s: no holdfast_raft_leader_changes_total", n.id)
		} else if fmt.Sscan(body[i+len("\nholdfast_raft_leader_changes_total "):], &changes); changes < 3 {
			t.Errorf("%s saw %d leader changes, want at least 3 (start and two transfers)", n.id, changes)
		}
	}
	// The last voter cannot be removed.
	single := startCluster(t, 1)
	if r := do(t, "DELETE", single[0].url("/v1/cluster/members/n1"), ""); r.status != 409 || r.errCode() != "invalid_state" {
		t.Fatalf("remove the last voter: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", single[0].url("/v1/cluster/leader"), ""); r.status != 409 {
		t.Fatalf("transfer with no other voter: %d %s", r.status, r.body)
	}
}

// TestDrain: once draining, every request but /metrics is answered 503
// unavailable with Retry-After and Connection: close, and Drain returns
// once in-flight requests are done.
func TestDrain(t *testing.T) {
	nodes := startCluster(t, 1)
	n := nodes[0]
	if r := do(t, "PUT", n.url("/v1/pools/p"), `{"on_hand": 5}`); r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := n.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/health", "/v1/pools/p", "/v1/cluster"} {
		r := do(t, "GET", n.url(p), "")
		if r.status != 503 || r.errCode() != "unavailable" || r.header.Get("Retry-After") == "" {
			t.Fatalf("GET %s while draining: %d %v %s", p, r.status, r.header, r.body)
		}
	}
	// Keep-alive clients are told to reconnect (net/http hides the header).
	conn, err := net.Dial("tcp", n.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/pools/p HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, _ := io.ReadAll(conn) // the server closes the connection
	conn.Close()
	if !strings.Contains(string(raw), "503") || !strings.Contains(strings.ToLower(string(raw)), "connection: close") {
		t.Fatalf("raw answer while draining:\n%s", raw)
	}
	if r := do(t, "POST", n.url("/v1/reservations"), `{"buyer":"b","lines":[{"pool":"p","qty":1}]}`); r.status != 503 {
		t.Fatalf("reserve while draining: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", n.url("/metrics"), ""); r.status != 200 {
		t.Fatalf("metrics while draining: %d", r.status)
	}
	if n.srv.InFlight() != 0 {
		t.Fatalf("in flight %d", n.srv.InFlight())
	}
	// Nothing was reserved.
	if p, _ := n.machine.Alloc.Pool("p"); p.Held != 0 {
		t.Fatalf("held %d", p.Held)
	}
}

// TestBackupOutlivesWriteTimeout: a backup download takes as long as it
// takes. The server's write timeout bounds writing a whole response, body
// stream included; a slow reader of a backup bigger than the socket
// buffers would otherwise get a truncated file once it passes.
func TestBackupOutlivesWriteTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("several MB of state")
	}
	n := &testNode{id: "n1", dir: t.TempDir(), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
	n.machine = engine.New(engine.Config{})
	var err error
	n.node, err = raftstore.Open(raftstore.Config{ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: n.httpAddr,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 150 * time.Millisecond,
		Logger: quietLogger(), RaftLog: io.Discard}, n.machine)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", n.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	n.srv = api.New(api.Config{Node: n.node, Alloc: n.machine.Alloc, Carts: n.machine, Logger: quietLogger(),
		Limits: api.Limits{WriteTimeout: 50 * time.Millisecond}})
	go n.srv.Serve(ln)
	t.Cleanup(func() { n.stop(t) })
	waitLeader(t, []*testNode{n}, 10*time.Second)

	// About 8 MB of state: 50,000 holds, proposed concurrently.
	pool := allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(1_000_000)}
	if _, err := n.node.Propose(context.Background(), pool.AppendEncode(nil)); err != nil {
		t.Fatal(err)
	}
	const holds, workers = 50_000, 64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < holds; i += workers {
				c := allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprintf("buyer-%06d", i), IdemKey: fmt.Sprintf("key-%06d", i),
					Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}}
				if _, err := n.node.Propose(context.Background(), c.AppendEncode(nil)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	resp, err := http.Get(n.url("/v1/backup"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength < 4<<20 {
		t.Fatalf("backup: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}
	time.Sleep(300 * time.Millisecond) // a slow reader: the server's writes block meanwhile
	body, err := io.ReadAll(resp.Body)
	if err != nil || int64(len(body)) != resp.ContentLength {
		t.Fatalf("read %d of %d bytes: %v", len(body), resp.ContentLength, err)
	}
	if _, err := raftstore.VerifyBackup(bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}
