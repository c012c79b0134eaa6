package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast/holdfast/ctl"
	"github.com/holdfast/holdfast/raftstore"
)

// TestMain lets the tests run real holdfast processes without building
// the binary: the test binary re-executed with HOLDFAST_TEST_EXEC=1 is
// holdfast.
func TestMain(m *testing.M) {
	if os.Getenv("HOLDFAST_TEST_EXEC") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// proc is one holdfast serve process.
type proc struct {
	id, http, raft, dir string
	cmd                 *exec.Cmd
	log                 *bytes.Buffer
	logMu               *sync.Mutex
	exited              chan struct{}
	exitCode            int
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (p *proc) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// startProc runs holdfast serve with args (beyond id, data, http, raft)
// and waits for its ready line.
func startProc(t *testing.T, id, dir string, args ...string) *proc {
	t.Helper()
	p := &proc{id: id, http: freeAddr(t), raft: freeAddr(t), dir: dir, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, exited: make(chan struct{})}
	all := append([]string{"serve", "--id", id, "--data", dir, "--http", p.http, "--raft", p.raft}, args...)
	p.start(t, all)
	return p
}

func (p *proc) start(t *testing.T, args []string) {
	t.Helper()
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), "HOLDFAST_TEST_EXEC=1")
	w := lockedWriter{p.logMu, p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.id, p.logs())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.logs(), "holdfast ready") {
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%d) before ready:\n%s", p.id, p.exitCode, p.logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 60 s:\n%s", p.id, p.logs())
		}
	}
}

func (p *proc) url(path string) string { return "http://" + p.http + path }

// startCluster3 starts three bootstrapped nodes.
func startCluster3(t *testing.T) []*proc {
	t.Helper()
	addrs := make([][2]string, 3)
	var peers []string
	for i := range addrs {
		addrs[i] = [2]string{freeAddr(t), freeAddr(t)}
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[i][1]))
	}
	procs := make([]*proc, 3)
	var wg sync.WaitGroup
	for i := range procs {
		procs[i] = &proc{id: fmt.Sprintf("n%d", i+1), http: addrs[i][0], raft: addrs[i][1], dir: t.TempDir(),
			log: &bytes.Buffer{}, logMu: &sync.Mutex{}, exited: make(chan struct{})}
	}
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.start(t, []string{"serve", "--id", p.id, "--data", p.dir, "--http", p.http, "--raft", p.raft, "--peers", strings.Join(peers, ",")})
		}()
	}
	wg.Wait()
	return procs
}

var opClient = &http.Client{Timeout: 15 * time.Second}

type opAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func opCall(method, url, body string, headers ...string) (opAnswer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return opAnswer{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := opClient.Do(req)
	if err != nil {
		return opAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return opAnswer{}, err
	}
	a := opAnswer{status: resp.StatusCode, header: resp.Header, raw: raw}
	json.Unmarshal(raw, &a.body)
	return a, nil
}

func opMustCall(t *testing.T, method, url, body string, want int) opAnswer {
	t.Helper()
	a, err := opCall(method, url, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if a.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, a.status, a.raw, want)
	}
	return a
}

// clusterOf reads GET /v1/cluster from p.
func clusterOf(p *proc) (ctl.ClusterStatus, error) {
	var st ctl.ClusterStatus
	a, err := opCall("GET", p.url("/v1/cluster"), "")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(a.raw, &st)
}

// load reserves one unit per request through the given nodes until stop,
// retrying a 503 with the same Idempotency-Key. It records every
// acknowledged reservation and anything that is neither a 201 nor a 503
// with Retry-After.
type load struct {
	mu        sync.Mutex
	acked     map[string]bool // reservation ids
	bad       []string
	ok, r503  atomic.Int64
	transport atomic.Int64 // connection errors (a node killed on purpose)
	stop      chan struct{}
	wg        sync.WaitGroup
}

func startLoad(t *testing.T, workers int, targets func() []*proc) *load {
	l := &load{acked: map[string]bool{}, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				body := fmt.Sprintf(`{"buyer":%q,"lines":[{"pool":"p","qty":1}],"ttl_ms":600000}`, key)
				for attempt := 0; ; attempt++ {
					ts := targets()
					p := ts[(w+attempt)%len(ts)]
					a, err := opCall("POST", p.url("/v1/reservations"), body, "Idempotency-Key", key)
					switch {
					case err != nil:
						// A node that was killed on purpose refuses
						// connections: the client moves to another one.
						l.note(fmt.Sprintf("%s: %v", p.id, err), false)
					case a.status == 201:
						l.ok.Add(1)
						l.mu.Lock()
						l.acked[a.body["id"].(string)] = true
						l.mu.Unlock()
					case a.status == 503 && a.header.Get("Retry-After") != "":
						l.r503.Add(1)
					default:
						l.note(fmt.Sprintf("%s: %d %s (Retry-After %q)", p.id, a.status, a.raw, a.header.Get("Retry-After")), true)
					}
					if err == nil && a.status == 201 {
						break
					}
					select {
					case <-l.stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	return l
}

func (l *load) note(s string, bad bool) {
	if !bad {
		l.transport.Add(1)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) < 20 {
		l.bad = append(l.bad, s)
	}
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// checkAcked asserts that every acknowledged reservation is on every node
// of the final cluster (read locally on each: ?consistency=stale after the
// nodes converged) and through the leader.
func checkAcked(t *testing.T, l *load, nodes []*proc) {
	t.Helper()
	// Converge: every node applied what the leader committed.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var leaderCommit uint64
		ok := true
		for _, p := range nodes {
			st, err := clusterOf(p)
			if err != nil {
				ok = false
				break
			}
			if st.State == "Leader" {
				leaderCommit = st.CommitIndex
			}
		}
		if ok && leaderCommit > 0 {
			all := true
			for _, p := range nodes {
				st, _ := clusterOf(p)
				all = all && st.AppliedIndex >= leaderCommit
			}
			if all {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("nodes did not converge within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	missing := 0
	for id := range l.acked {
		for _, p := range nodes {
			a, err := opCall("GET", p.url("/v1/reservations/"+id+"?consistency=stale"), "")
			if err != nil || a.status != 200 || a.body["state"] != "active" {
				missing++
				if missing < 5 {
					t.Errorf("acknowledged %s on %s: %v %d %s", id, p.id, err, a.status, a.raw)
				}
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d acknowledged reservations missing or changed", missing)
	}
	// The pool's count agrees with the acknowledged holds (retries
	// with an idempotency key never hold twice).
	a := opMustCall(t, "GET", nodes[0].url("/v1/pools/p"), "", 200)
	if held := int(a.body["held"].(float64)); held != len(l.acked) {
		t.Fatalf("pool holds %d units, %d reservations were acknowledged", held, len(l.acked))
	}
}

func leaderOf(t *testing.T, nodes []*proc) *proc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range nodes {
			if st, err := clusterOf(p); err == nil && st.State == "Leader" {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

// TestReplaceDeadNodeUnderLoad follows the runbook in docs/operations.md
// with real processes: a 3-node cluster under load; one node is killed
// (SIGKILL); a new node joins with --join (as a non-voter, catches up,
// then becomes a voter); the dead node is removed with holdfast ctl.
// Every acknowledged reservation is on every node of the final cluster.
func TestReplaceDeadNodeUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	nodes := startCluster3(t)
	opMustCall(t, "PUT", nodes[0].url("/v1/pools/p"), `{"on_hand": 1000000000}`, 201)
	var live atomic.Pointer[[]*proc]
	live.Store(&nodes)
	l := startLoad(t, 6, func() []*proc { return *live.Load() })
	time.Sleep(time.Second)

	// Kill a follower (n3, or n2 if n3 leads): the leader's case is
	// TestSIGTERMLeaderUnderLoad and the chaos suite's.
	leader := leaderOf(t, nodes)
	victim := nodes[2]
	if victim == leader {
		victim = nodes[1]
	}
	var survivors []*proc
	for _, p := range nodes {
		if p != victim {
			survivors = append(survivors, p)
		}
	}
	live.Store(&survivors)
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.exited
	killedAcked := l.ok.Load()
	time.Sleep(500 * time.Millisecond)

	// The replacement joins through any live node's API.
	joinStart := time.Now()
	n4 := startProc(t, "n4", t.TempDir(), "--join", survivors[0].url(""))
	t.Logf("n4 joined and ready in %v", time.Since(joinStart).Round(time.Millisecond))
	if !strings.Contains(n4.logs(), "added as non-voter") {
		t.Fatalf("n4 did not join as a non-voter first:\n%s", n4.logs())
	}
	final := append(append([]*proc{}, survivors...), n4)
	live.Store(&final)

	// Remove the dead node with ctl, through the new node.
	var out, errOut bytes.Buffer
	if code := ctl.Main([]string{"--addr", n4.url(""), "cluster", "remove", victim.id}, &out, &errOut); code != 0 {
		t.Fatalf("ctl cluster remove: %d %s %s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String(), " "+victim.id+" ") || !strings.Contains(out.String(), "n4") {
		t.Fatalf("ctl cluster remove printed:\n%s", out.String())
	}
	time.Sleep(time.Second)
	l.finish()

	st, err := clusterOf(n4)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID+"/"+m.Suffrage)
	}
	if len(st.Members) != 3 || strings.Contains(strings.Join(ids, ","), victim.id) || !strings.Contains(strings.Join(ids, ","), "n4/Voter") {
		t.Fatalf("final members %v", ids)
	}
	if len(l.bad) > 0 {
		t.Fatalf("unexpected answers under load: %v", l.bad)
	}
	if l.ok.Load() <= killedAcked {
		t.Fatal("no write was acknowledged after the node was killed")
	}
	t.Logf("%d reservations acknowledged (%d after the kill), %d answers 503", l.ok.Load(), l.ok.Load()-killedAcked, l.r503.Load())
	checkAcked(t, l, final)
}

// TestSIGTERMLeaderUnderLoad: SIGTERM on the leader of a 3-node cluster
// under load (clients use the two other nodes, which forward). The leader
// drains, hands leadership over and exits 0 within a bound; clients see
// only 201s and 503s with Retry-After; a new leader serves within a bound;
// no acknowledged write is lost.
func TestSIGTERMLeaderUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	nodes := startCluster3(t)
	opMustCall(t, "PUT", nodes[0].url("/v1/pools/p"), `{"on_hand": 1000000000}`, 201)
	leader := leaderOf(t, nodes)
	var others []*proc
	for _, p := range nodes {
		if p != leader {
			others = append(others, p)
		}
	}
	l := startLoad(t, 8, func() []*proc { return others })
	time.Sleep(time.Second)

	sent := time.Now()
	leader.cmd.Process.Signal(syscall.SIGTERM)
	// A new leader: one of the others says it leads.
	var newLeader *proc
	for newLeader == nil {
		for _, p := range others {
			if st, err := clusterOf(p); err == nil && st.State == "Leader" {
				newLeader = p
			}
		}
		if time.Since(sent) > 3*time.Second {
			t.Fatal("no new leader within 3 s of SIGTERM")
		}
		time.Sleep(5 * time.Millisecond)
	}
	electedIn := time.Since(sent)
	select {
	case <-leader.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the old leader did not exit within 20 s of SIGTERM")
	}
	exitedIn := time.Since(sent)
	if leader.exitCode != 0 {
		t.Fatalf("exit code %d after SIGTERM", leader.exitCode)
	}
	if !strings.Contains(leader.logs(), "leadership handed over") {
		t.Fatalf("the leader did not hand leadership over:\n%s", leader.logs())
	}
	before := l.ok.Load()
	time.Sleep(time.Second)
	l.finish()
	if l.ok.Load() == before {
		t.Fatalf("no write acknowledged after the new leader took over (ok %d, 503 %d, transport %d, bad %v)", l.ok.Load(), l.r503.Load(), l.transport.Load(), l.bad)
	}
	if len(l.bad) > 0 || l.transport.Load() > 0 {
		t.Fatalf("clients saw other answers: %v (transport errors %d)", l.bad, l.transport.Load())
	}
	t.Logf("new leader %s %v after SIGTERM; old leader exited after %v; %d acknowledged, %d answers 503 with Retry-After",
		newLeader.id, electedIn.Round(time.Millisecond), exitedIn.Round(time.Millisecond), l.ok.Load(), l.r503.Load())
	checkAcked(t, l, others)
}

// TestRestoreThreeNodes: the second way to restore that docs/operations.md
// gives: three nodes started with the same --restore FILE and the same
// --peers form one cluster with the backup's state, which then survives the
// loss of any one node.
func TestRestoreThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	src := startProc(t, "n1", t.TempDir())
	opMustCall(t, "PUT", src.url("/v1/pools/p"), `{"on_hand": 100}`, 201)
	var ids []string
	for i := range 5 {
		a := opMustCall(t, "POST", src.url("/v1/reservations"), fmt.Sprintf(`{"buyer":"u-%d","lines":[{"pool":"p","qty":2}]}`, i), 201)
		ids = append(ids, a.body["id"].(string))
	}
	file := filepath.Join(t.TempDir(), "b.backup")
	var out, errOut bytes.Buffer
	if code := ctl.Main([]string{"--addr", src.url(""), "backup", file}, &out, &errOut); code != 0 {
		t.Fatalf("ctl backup: %d %s", code, errOut.String())
	}

	addrs := make([][2]string, 3)
	var peers []string
	for i := range addrs {
		addrs[i] = [2]string{freeAddr(t), freeAddr(t)}
		peers = append(peers, fmt.Sprintf("r%d=%s", i+1, addrs[i][1]))
	}
	nodes := make([]*proc, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		nodes[i] = &proc{id: fmt.Sprintf("r%d", i+1), http: addrs[i][0], raft: addrs[i][1], dir: t.TempDir(),
			log: &bytes.Buffer{}, logMu: &sync.Mutex{}, exited: make(chan struct{})}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := nodes[i]
			p.start(t, []string{"serve", "--id", p.id, "--data", p.dir, "--http", p.http, "--raft", p.raft,
				"--peers", strings.Join(peers, ","), "--restore", file})
		}()
	}
	wg.Wait()
	for _, p := range nodes {
		if !strings.Contains(p.logs(), "restored from backup") {
			t.Fatalf("%s did not restore:\n%s", p.id, p.logs())
		}
	}
	st, err := clusterOf(nodes[0])
	if err != nil || len(st.Members) != 3 {
		t.Fatalf("restored cluster: %+v %v", st, err)
	}
	// Lose one node (the leader, the harder case); the other two serve the
	// backup's state and take writes.
	leader := leaderOf(t, nodes)
	leader.cmd.Process.Signal(syscall.SIGKILL)
	<-leader.exited
	var rest []*proc
	for _, p := range nodes {
		if p != leader {
			rest = append(rest, p)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := opCall("POST", rest[0].url("/v1/reservations"), `{"buyer":"after","lines":[{"pool":"p","qty":1}]}`, "Idempotency-Key", "after-1")
		if err == nil && a.status == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write on the restored cluster without %s: %v %+v", leader.id, err, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range rest {
		for _, id := range ids {
			a := opMustCall(t, "GET", p.url("/v1/reservations/"+id), "", 200)
			if a.body["state"] != "active" {
				t.Fatalf("%s on %s: %s", id, p.id, a.raw)
			}
		}
		a := opMustCall(t, "GET", p.url("/v1/pools/p"), "", 200)
		if a.body["held"].(float64) != 11 {
			t.Fatalf("pool on %s: %s", p.id, a.raw)
		}
	}
}

// TestRestoreResumesAtRestoreTime: a backup taken on a cluster whose time
// was two hours behind (its leader's clock was) restores into a cluster
// that runs at the time of the restore: a one-hour hold that was active in
// the backup has expired in real time, and expires; pool reads are stamped
// now, not two hours ago.
func TestRestoreResumesAtRestoreTime(t *testing.T) {
	src := startProc(t, "n1", t.TempDir(), "--debug-clock-offset", "-2h")
	opMustCall(t, "PUT", src.url("/v1/pools/p"), `{"on_hand": 10, "hold_ttl_ms": 3600000, "max_hold_ttl_ms": 3600000}`, 201)
	hold := opMustCall(t, "POST", src.url("/v1/reservations"), `{"buyer":"u","lines":[{"pool":"p","qty":3}]}`, 201)
	id := hold.body["id"].(string)
	file := filepath.Join(t.TempDir(), "old.backup")
	var out, errOut bytes.Buffer
	if code := ctl.Main([]string{"--addr", src.url(""), "backup", file}, &out, &errOut); code != 0 {
		t.Fatalf("ctl backup: %d %s", code, errOut.String())
	}
	dst := startProc(t, "r1", t.TempDir(), "--restore", file)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := opMustCall(t, "GET", dst.url("/v1/reservations/"+id), "", 200)
		p := opMustCall(t, "GET", dst.url("/v1/pools/p"), "", 200)
		asOf, _ := time.Parse(time.RFC3339, p.body["as_of"].(string))
		if r.body["state"] == "expired" && p.body["held"] == 0.0 && time.Since(asOf).Abs() < time.Minute {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored cluster: hold %v, pool held %v as of %v (now %v)\n%s", r.body["state"], p.body["held"], asOf, time.Now().UTC(), dst.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(dst.logs(), "resumes at the time of the restore") {
		t.Fatalf("no log line for the clock jump:\n%s", dst.logs())
	}
	for raftstore.RestorePending(dst.dir) { // cleared once done: a restart does not jump again
		if time.Now().After(deadline) {
			t.Fatal("the restore mark was not cleared")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
