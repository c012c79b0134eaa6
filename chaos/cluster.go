// Package chaos is holdfast's fault-injection suite: it runs real
// `holdfast serve` processes on loopback, routes every Raft connection
// through a toxiproxy proxy per ordered pair of nodes, injects faults
// (SIGKILL, SIGTERM, partitions, latency, resets, clock steps, a full
// disk) under a checkout-like workload, and checks the outcome:
// linearizability of every pool's history (porcupine), invariants of every
// node's final state, equal state hashes, idempotency and availability.
// See docs/reliability.md.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Node is one holdfast process of a Cluster.
type Node struct {
	ID       string
	Index    int
	HTTPAddr string // the node's own API address
	RaftAddr string // the node's own Raft listen address
	DataDir  string
	// ClockFile is passed as --debug-clock-file; DiskFullFile as
	// --debug-disk-full-file.
	ClockFile    string
	DiskFullFile string
	LogPath      string
	args         []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	starts  int
}

// Cluster is a set of holdfast processes on loopback. Node i reaches node
// j's Raft port only through the proxy raft[i][j] (its own --peers view),
// and clients reach node i's API through the proxy client[i], so the test
// can cut, slow or reset any ordered pair.
type Cluster struct {
	Bin   string
	Dir   string
	Nodes []*Node
	// raft[i][j] carries node i's connections to node j (nil on the
	// diagonal).
	raft   [][]*toxiproxy.Proxy
	client []*toxiproxy.Proxy
	tp     *toxiproxy.ApiServer
	logf   func(format string, args ...any)

	mu     sync.Mutex
	cut    map[[2]int]bool
	toxics map[string][]string // proxy name -> its toxics (JSON)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// NewCluster starts n nodes (without waiting for them to be ready) in dir,
// with every Raft link and client link behind a toxiproxy proxy.
func NewCluster(bin, dir string, n int, logf func(string, ...any)) (*Cluster, error) {
	c := &Cluster{
		Bin:    bin,
		Dir:    dir,
		tp:     toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		logf:   logf,
		cut:    map[[2]int]bool{},
		toxics: map[string][]string{},
	}
	for i := range n {
		httpAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		raftAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("n%d", i+1)
		nd := &Node{
			ID: id, Index: i, HTTPAddr: httpAddr, RaftAddr: raftAddr,
			DataDir:      filepath.Join(dir, id, "data"),
			ClockFile:    filepath.Join(dir, id, "clock"),
			DiskFullFile: filepath.Join(dir, id, "disk-full"),
			LogPath:      filepath.Join(dir, id, "log"),
		}
		if err := os.MkdirAll(filepath.Join(dir, id), 0o755); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, nd)
	}
	c.raft = make([][]*toxiproxy.Proxy, n)
	for i := range n {
		c.raft[i] = make([]*toxiproxy.Proxy, n)
		for j := range n {
			if i == j {
				continue
			}
			p, err := c.proxy(fmt.Sprintf("raft-%s-%s", c.Nodes[i].ID, c.Nodes[j].ID), c.Nodes[j].RaftAddr)
			if err != nil {
				return nil, err
			}
			c.raft[i][j] = p
		}
	}
	for i := range n {
		p, err := c.proxy("client-"+c.Nodes[i].ID, c.Nodes[i].HTTPAddr)
		if err != nil {
			return nil, err
		}
		c.client = append(c.client, p)
	}
	// Each node's --peers: itself at its real address, every peer at the
	// proxy that carries this node's connections to it. Bootstrap writes
	// this view into the node's own configuration entry (index 1), so each
	// node dials each peer through its own proxy.
	for i, nd := range c.Nodes {
		var peers []string
		for j, other := range c.Nodes {
			addr := other.RaftAddr
			if i != j {
				addr = c.raft[i][j].Listen
			}
			peers = append(peers, other.ID+"="+addr)
		}
		nd.args = []string{"serve", "--id", nd.ID, "--data", nd.DataDir,
			"--http", nd.HTTPAddr, "--raft", nd.RaftAddr, "--peers", strings.Join(peers, ","),
			"--log-level", "warn", "--debug-clock-file", nd.ClockFile,
			"--debug-disk-full-file", nd.DiskFullFile}
	}
	for i := range c.Nodes {
		if err := c.Start(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) proxy(name, upstream string) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(c.tp, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	return p, nil
}

// ClientAddr is the address clients use for node i (through its proxy).
func (c *Cluster) ClientAddr(i int) string { return c.client[i].Listen }

// Start starts node i (again) from its data directory.
func (c *Cluster) Start(i int) error {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return fmt.Errorf("%s already running", nd.ID)
	}
	logf, err := os.OpenFile(nd.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	nd.starts++
	fmt.Fprintf(logf, "=== start %d at %s\n", nd.starts, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(c.Bin, nd.args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	nd.cmd = cmd
	exited := make(chan struct{})
	nd.exited = exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		nd.mu.Lock()
		nd.exitErr = err
		nd.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Running reports whether node i's process is running.
func (c *Cluster) Running(i int) bool {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to node i and waits for it to exit.
func (c *Cluster) Kill(i int) {
	nd := c.Nodes[i]
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Term sends SIGTERM to node i and waits up to limit for it to exit. It
// returns how long the exit took and the process's exit error; past the
// limit it kills the node and returns an error.
func (c *Cluster) Term(i int, limit time.Duration) (time.Duration, error) {
	nd := c.Nodes[i]
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.mu.Unlock()
	if cmd == nil {
		return 0, nil
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(limit):
		c.Kill(i)
		return time.Since(start), fmt.Errorf("%s did not exit within %s of SIGTERM (killed)", nd.ID, limit)
	}
	nd.mu.Lock()
	nd.cmd = nil
	err := nd.exitErr
	nd.mu.Unlock()
	return time.Since(start), err
}

// Exited reports whether node i's process has exited by itself (a crash),
// with its exit error.
func (c *Cluster) Exited(i int) (bool, error) {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false, nil
	}
	select {
	case <-nd.exited:
		return true, nd.exitErr
	default:
		return false, nil
	}
}

// Reap forgets node i's process after it exited by itself, so it can be
// started again.
func (c *Cluster) Reap(i int) {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		select {
		case <-nd.exited:
			nd.cmd = nil
		default:
		}
	}
}

// Close kills every node and stops every proxy.
func (c *Cluster) Close() {
	for i := range c.Nodes {
		c.Kill(i)
	}
	for _, row := range c.raft {
		for _, p := range row {
			if p != nil {
				p.Stop()
			}
		}
	}
	for _, p := range c.client {
		p.Stop()
	}
}

// ---- network faults ----

// SetLink cuts (up=false) or restores the Raft link from node i to node
// j: the proxy stops (its connections close, new dials are refused) or
// starts again on the same port.
func (c *Cluster) SetLink(i, j int, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.raft[i][j]
	if up {
		if c.cut[[2]int{i, j}] {
			if err := p.Start(); err != nil {
				c.logf("restart proxy %s: %v", p.Name, err)
				return
			}
			delete(c.cut, [2]int{i, j})
		}
		return
	}
	if !c.cut[[2]int{i, j}] {
		p.Stop()
		c.cut[[2]int{i, j}] = true
	}
}

// Partition cuts every Raft link between the groups (both directions)
// and heals every other link. Nodes absent from all groups keep their
// links.
func (c *Cluster) Partition(groups ...[]int) {
	side := map[int]int{}
	for g, members := range groups {
		for _, m := range members {
			side[m] = g + 1
		}
	}
	for i := range c.Nodes {
		for j := range c.Nodes {
			if i == j {
				continue
			}
			si, sj := side[i], side[j]
			c.SetLink(i, j, si == 0 || sj == 0 || si == sj)
		}
	}
}

// Heal restores every Raft and client link and removes every toxic.
func (c *Cluster) Heal() {
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > time.Second {
			c.logf("healing took %s", d.Round(time.Millisecond))
		}
	}()
	for i := range c.Nodes {
		for j := range c.Nodes {
			if i != j {
				c.clearToxics(&c.raft[i][j])
				c.SetLink(i, j, true)
			}
		}
		c.clearToxics(&c.client[i])
		c.SetClientLink(i, true)
	}
}

// clearToxics removes the toxics of the proxy *pp. Toxics are never
// changed on a live proxy: the proxy is replaced by a new one on the same
// address (see replace). That matters twice: a timeout toxic drops bytes
// from the middle of a TCP stream, which no real network does (a stream
// with a hole in it tests the decoder, not the cluster), and toxiproxy
// changes a live link's toxic chain by interrupting each toxic in it,
// which waits (5 s, or forever) on a link whose writer is blocked.
func (c *Cluster) clearToxics(pp **toxiproxy.Proxy) {
	c.mu.Lock()
	has := len(c.toxics[(*pp).Name]) > 0
	c.mu.Unlock()
	if has {
		c.replace(pp, "")
	}
}

// replace stops the proxy *pp (closing its connections) and puts in its
// place a new one on the same address, with the toxics the old one had
// (none when add is empty: a heal) plus add, started if the old one was
// running.
func (c *Cluster) replace(pp **toxiproxy.Proxy, add string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *pp
	was := old.Enabled
	start := time.Now()
	old.Stop()
	if d := time.Since(start); d > time.Second {
		c.logf("stopping proxy %s took %s", old.Name, d.Round(time.Millisecond))
	}
	np := toxiproxy.NewProxy(c.tp, old.Name, old.Listen, old.Upstream)
	var keep []string
	if add != "" {
		keep = append(c.toxics[old.Name], add)
	}
	for _, t := range keep {
		if _, err := np.Toxics.AddToxicJson(strings.NewReader(t)); err != nil {
			return fmt.Errorf("toxic on %s: %w", old.Name, err)
		}
	}
	c.toxics[old.Name] = keep
	*pp = np
	if was {
		if err := np.Start(); err != nil {
			return fmt.Errorf("restart proxy %s: %w", np.Name, err)
		}
	}
	return nil
}

// AddToxic adds a toxic (toxiproxy's JSON form, e.g. latency, timeout,
// reset_peer) to both directions of the Raft link from i to j. The link's
// open connections close (see clearToxics); new ones get the toxic.
func (c *Cluster) AddToxic(i, j int, kind string, attrs map[string]any) error {
	for _, stream := range []string{"upstream", "downstream"} {
		b, err := json.Marshal(map[string]any{"name": kind + "_" + stream, "type": kind, "stream": stream, "attributes": attrs})
		if err != nil {
			return err
		}
		if err := c.replace(&c.raft[i][j], string(b)); err != nil {
			return err
		}
	}
	return nil
}

// SetClientLink cuts or restores the client link to node i.
func (c *Cluster) SetClientLink(i int, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, key := c.client[i], [2]int{-1, i}
	if up {
		if c.cut[key] {
			if err := p.Start(); err != nil {
				c.logf("restart proxy %s: %v", p.Name, err)
				return
			}
			delete(c.cut, key)
		}
		return
	}
	if !c.cut[key] {
		p.Stop()
		c.cut[key] = true
	}
}

// ---- clocks and disks ----

// SetClockOffset steps node i's wall clock by d (through its
// --debug-clock-file, re-read every 20 ms).
func (c *Cluster) SetClockOffset(i int, d time.Duration) error {
	nd := c.Nodes[i]
	tmp := nd.ClockFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, nd.ClockFile)
}

// SetDiskFull makes node i's storage writes fail with ENOSPC (or work
// again).
func (c *Cluster) SetDiskFull(i int, full bool) error {
	if full {
		return os.WriteFile(c.Nodes[i].DiskFullFile, nil, 0o644)
	}
	err := os.Remove(c.Nodes[i].DiskFullFile)
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

// ---- observation ----

// Status is the part of GET /v1/cluster the suite reads.
type Status struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	LogClock     string `json:"log_clock"`
	Members      []struct {
		ID       string `json:"id"`
		RaftAddr string `json:"raft_addr"`
	} `json:"members"`
	StateHash *struct {
		AppliedIndex uint64 `json:"applied_index"`
		SHA256       string `json:"sha256"`
	} `json:"state_hash"`
}

var obsClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

// hashClient waits longer: a state hash encodes the whole allocator state
// (seconds after a 30-minute run on a loaded 2-core machine).
var hashClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

// Status asks node i directly (not through its client proxy).
func (c *Cluster) Status(i int, withHash bool) (*Status, error) {
	url := "http://" + c.Nodes[i].HTTPAddr + "/v1/cluster"
	if withHash {
		url += "?state_hash=1"
	}
	client := obsClient
	if withHash {
		client = hashClient
	}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: GET /v1/cluster: %d %s", c.Nodes[i].ID, resp.StatusCode, b)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// directWrite sends one write straight to node i's API (not through its
// client proxy), once.
func (c *Cluster) directWrite(ctx context.Context, i int, method, path, body, key string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Nodes[i].HTTPAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := obsClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Health returns node i's GET /v1/health status code (0 if unreachable).
func (c *Cluster) Health(i int) int {
	resp, err := obsClient.Get("http://" + c.Nodes[i].HTTPAddr + "/v1/health")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Leader returns the index of the node that says it leads, among running
// nodes whose status answers, or -1.
func (c *Cluster) Leader() int {
	for i := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		if st, err := c.Status(i, false); err == nil && st.State == "Leader" {
			return i
		}
	}
	return -1
}

// WaitLeader waits until some node leads and every node in need answers
// health 200, or the timeout passes.
func (c *Cluster) WaitLeader(timeout time.Duration, need ...int) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.Leader(); l >= 0 {
			ok := true
			for _, i := range need {
				ok = ok && c.Health(i) == 200
			}
			if ok {
				return l, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1, fmt.Errorf("no leader (with %v healthy) within %s", need, timeout)
}

// WaitReady waits for the ready line of node i's latest start.
func (c *Cluster) WaitReady(i int, timeout time.Duration) error {
	nd := c.Nodes[i]
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.readyLogged(nd) {
			return nil
		}
		if exited, err := c.Exited(i); exited {
			return fmt.Errorf("%s exited before ready: %v (log %s)", nd.ID, err, nd.LogPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Leave what is needed to tell why: every node's view of the cluster
	// (asked at once), and the stuck node's goroutines (SIGUSR1: serve
	// writes them to its log and keeps running, so later checks still see
	// the node as it is).
	views := make([]string, len(c.Nodes))
	var wg sync.WaitGroup
	for j := range c.Nodes {
		wg.Go(func() {
			if st, err := c.Status(j, false); err == nil {
				views[j] = fmt.Sprintf("%s: %s leader=%q commit=%d applied=%d last=%d",
					c.Nodes[j].ID, st.State, st.Leader, st.CommitIndex, st.AppliedIndex, st.LastIndex)
			} else {
				views[j] = fmt.Sprintf("%s: %v", c.Nodes[j].ID, err)
			}
		})
	}
	wg.Wait()
	nd.mu.Lock()
	cmd := nd.cmd
	nd.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGUSR1)
	}
	return fmt.Errorf("%s not ready within %s (goroutine dump in its log %s); nodes: %s",
		nd.ID, timeout, nd.LogPath, strings.Join(views, "; "))
}

func (c *Cluster) readyLogged(nd *Node) bool {
	f, err := os.Open(nd.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	starts, ready := 0, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "=== start "):
			starts++
			ready = false
		case strings.Contains(line, "holdfast ready"):
			ready = true
		}
	}
	nd.mu.Lock()
	cur := nd.starts
	nd.mu.Unlock()
	return starts == cur && ready
}

// OwnView reports whether node i's Raft configuration still holds its own
// address view (each peer behind its own proxy). A node that installed a
// snapshot from a leader would hold the leader's view, and partitions
// would then not cut what they claim to cut.
func (c *Cluster) OwnView(i int) (bool, error) {
	st, err := c.Status(i, false)
	if err != nil {
		return false, err
	}
	for _, m := range st.Members {
		for j, nd := range c.Nodes {
			if nd.ID != m.ID {
				continue
			}
			want := nd.RaftAddr
			if i != j {
				want = c.raft[i][j].Listen
			}
			if m.RaftAddr != want {
				return false, nil
			}
		}
	}
	return true, nil
}

// Converge waits until every running node reports the same applied index
// as the leader's commit index, twice in a row, and returns it.
func (c *Cluster) Converge(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var idx []uint64
		ok := true
		for i := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			st, err := c.Status(i, false)
			if err != nil {
				ok = false
				last = err.Error()
				break
			}
			idx = append(idx, st.AppliedIndex)
		}
		if ok && len(idx) > 0 {
			same := true
			for _, v := range idx {
				same = same && v == idx[0]
			}
			if same {
				return nil
			}
			last = fmt.Sprint("applied indexes ", idx)
		}
		time.Sleep(30 * time.Millisecond)
	}
	return fmt.Errorf("replicas did not converge within %s: %s", timeout, last)
}
