package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/holdfast/holdfast/raftstore"
)

// Usage is the ctl part of holdfast's usage text.
const Usage = `holdfast ctl [--addr URL] [--token T] [--json] COMMAND
  pools list                          every pool, hottest first
  pools show POOL
  pools create POOL --on-hand N [--per-buyer-limit N] [--hold-ttl-ms N] [--max-hold-ttl-ms N]
               [--max-extensions N] [--mode fcfs|draw] [--opens-at T --closes-at T --seed S]
               [--waitlist] [--offer-ttl-ms N] [--wait-ttl-ms N]   (creates or reconfigures)
  pools adjust POOL DELTA             restock (+) or shrinkage (-)
  reservations show ID
  reservations release ID
  cluster status
  cluster add ID RAFT_ADDR [--api HOST:PORT] [--nonvoter]
  cluster remove ID
  cluster transfer-leader [ID]
  backup FILE                         a consistent backup of the whole state
                                      (FILE "-": to standard output, the summary to stderr)
  restore FILE [--data DIR --id ID --raft HOST:PORT [--peers id=host:port,...]]
                                      verify FILE; with --data, prepare an empty data directory from it
` + TokenUsage + `Environment: HOLDFAST_ADDR (default http://127.0.0.1:8080), HOLDFAST_TOKEN (bearer token),
HOLDFAST_CA (PEM file trusted for https).
`

// env is what Main reads from the environment; tests pass their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// Main runs holdfast ctl with args (after "ctl") and returns the exit
// code: 0 success, 1 the call failed, 2 bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, env{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv})
}

// usageError is a command line mistake: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type cmdCtx struct {
	ctx    context.Context
	c      *Client
	json   bool
	in     io.Reader // token hash reads the token here
	out    io.Writer
	stderr io.Writer
}

func run(args []string, e env) int {
	g := flag.NewFlagSet("ctl", flag.ContinueOnError)
	g.SetOutput(e.stderr)
	addr := g.String("addr", e.getenv("HOLDFAST_ADDR"), "node URL (default $HOLDFAST_ADDR or "+DefaultAddr+")")
	token := g.String("token", e.getenv("HOLDFAST_TOKEN"), "bearer token (default $HOLDFAST_TOKEN)")
	ca := g.String("ca", e.getenv("HOLDFAST_CA"), "PEM file trusted for https (default $HOLDFAST_CA)")
	asJSON := g.Bool("json", false, "print JSON instead of tables")
	g.Usage = func() { fmt.Fprint(e.stderr, Usage) }
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(e.stdout, Usage)
		return 0
	}
	// --json may come anywhere: scripts append it.
	var rest []string
	for _, a := range args {
		if a == "--json" || a == "-json" {
			*asJSON = true
			continue
		}
		rest = append(rest, a)
	}
	if err := g.Parse(rest); err != nil {
		return 2
	}
	if g.NArg() == 0 {
		fmt.Fprint(e.stderr, Usage)
		return 2
	}
	c, err := NewClient(*addr, *token, *ca)
	if err != nil {
		fmt.Fprintln(e.stderr, "holdfast ctl:", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := &cmdCtx{ctx: ctx, c: c, json: *asJSON, in: e.stdin, out: e.stdout, stderr: e.stderr}
	err = cc.dispatch(g.Args())
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(e.stderr, "holdfast ctl:", ue.msg)
		fmt.Fprint(e.stderr, Usage)
		return 2
	}
	fmt.Fprintln(e.stderr, "holdfast ctl:", err)
	return 1
}

func (cc *cmdCtx) dispatch(args []string) error {
	sub := func(i int) string {
		if len(args) > i {
			return args[i]
		}
		return ""
	}
	switch sub(0) + " " + sub(1) {
	case "token new", "token hash":
		return tokenCmd(args[1:], cc.in, cc.out)
	case "pools list":
		return cc.poolsList(args[2:])
	case "pools show":
		return cc.poolShow(args[2:])
	case "pools create":
		return cc.poolCreate(args[2:])
	case "pools adjust":
		return cc.poolAdjust(args[2:])
	case "reservations show":
		return cc.reservation(args[2:], false)
	case "reservations release":
		return cc.reservation(args[2:], true)
	case "cluster status":
		return cc.clusterStatus(args[2:])
	case "cluster add":
		return cc.clusterAdd(args[2:])
	case "cluster remove":
		return cc.clusterRemove(args[2:])
	case "cluster transfer-leader":
		return cc.transferLeader(args[2:])
	}
	switch sub(0) {
	case "backup":
		return cc.backup(args[1:])
	case "restore":
		return cc.restore(args[1:])
	}
	return usagef("unknown command %q", strings.Join(args, " "))
}

// printJSON prints a JSON value indented.
func (cc *cmdCtx) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(cc.out, "%s\n", b)
	return err
}

func (cc *cmdCtx) table() *tabwriter.Writer {
	return tabwriter.NewWriter(cc.out, 0, 4, 2, ' ', 0)
}

// ---- pools ----

// pool is the part of a pool object the tables show.
type pool struct {
	ID            string `json:"id"`
	OnHand        int64  `json:"on_hand"`
	Held          int64  `json:"held"`
	Sold          int64  `json:"sold"`
	Available     int64  `json:"available"`
	PerBuyerLimit int64  `json:"per_buyer_limit"`
	Mode          string `json:"mode"`
	Claim         string `json:"claim"`
	Waitlist      struct {
		Enabled bool  `json:"enabled"`
		Length  int64 `json:"length"`
	} `json:"waitlist"`
	Demand struct {
		Heat         string  `json:"heat"`
		RequestsPerS float64 `json:"requests_per_s"`
		DenialsPerS  float64 `json:"denials_per_s"`
	} `json:"demand"`
	AsOf string `json:"as_of"`
}

func heatRank(h string) int {
	switch h {
	case "hot":
		return 0
	case "warm":
		return 1
	}
	return 2
}

// maxListPages bounds the pages pools list reads (1,000 pools each).
const maxListPages = 1000

func (cc *cmdCtx) poolsList(args []string) error {
	if len(args) != 0 {
		return usagef("pools list takes no arguments")
	}
	var raws []json.RawMessage
	var pools []pool
	after := ""
	for page := 0; ; page++ {
		if page == maxListPages {
			return fmt.Errorf("more than %d pages of pools", maxListPages)
		}
		var resp struct {
			Pools     []json.RawMessage `json:"pools"`
			HasMore   bool              `json:"has_more"`
			NextAfter *string           `json:"next_after"`
		}
		path := "/v1/pools?limit=1000"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		if err := cc.c.Get(cc.ctx, path, &resp); err != nil {
			return err
		}
		for _, r := range resp.Pools {
			var p pool
			if err := json.Unmarshal(r, &p); err != nil {
				return err
			}
			pools = append(pools, p)
			raws = append(raws, r)
		}
		if !resp.HasMore || resp.NextAfter == nil {
			break
		}
		after = *resp.NextAfter
	}
	// Hottest first: heat, then request rate, then id.
	idx := make([]int, len(pools))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		pa, pb := &pools[a], &pools[b]
		if d := heatRank(pa.Demand.Heat) - heatRank(pb.Demand.Heat); d != 0 {
			return d
		}
		if pa.Demand.RequestsPerS != pb.Demand.RequestsPerS {
			if pa.Demand.RequestsPerS > pb.Demand.RequestsPerS {
				return -1
			}
			return 1
		}
		return strings.Compare(pa.ID, pb.ID)
	})
	if cc.json {
		out := make([]json.RawMessage, len(idx))
		for i, k := range idx {
			out[i] = raws[k]
		}
		return cc.printJSON(map[string]any{"pools": out})
	}
	w := cc.table()
	fmt.Fprintln(w, "POOL\tHEAT\tREQ/S\tDENIED/S\tON_HAND\tHELD\tSOLD\tAVAILABLE\tCLAIM\tMODE\tWAITING")
	for _, k := range idx {
		p := &pools[k]
		fmt.Fprintf(w, "%s\t%s\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", p.ID, p.Demand.Heat, p.Demand.RequestsPerS, p.Demand.DenialsPerS,
			p.OnHand, p.Held, p.Sold, p.Available, p.Claim, p.Mode, waiting(p))
	}
	return w.Flush()
}

func waiting(p *pool) string {
	if !p.Waitlist.Enabled {
		return "-"
	}
	return strconv.FormatInt(p.Waitlist.Length, 10)
}

func poolPath(id string) string { return "/v1/pools/" + url.PathEscape(id) }

// printPool prints one pool object (raw JSON in, as the API answered).
func (cc *cmdCtx) printPool(raw json.RawMessage) error {
	if cc.json {
		return cc.printJSON(raw)
	}
	var p pool
	if err := json.Unmarshal(raw, &p); err != nil {
		return err
	}
	w := cc.table()
	fmt.Fprintf(w, "pool\t%s\n", p.ID)
	fmt.Fprintf(w, "on_hand\t%d\n", p.OnHand)
	fmt.Fprintf(w, "held\t%d\n", p.Held)
	fmt.Fprintf(w, "sold\t%d\n", p.Sold)
	fmt.Fprintf(w, "available\t%d\n", p.Available)
	fmt.Fprintf(w, "per_buyer_limit\t%d\n", p.PerBuyerLimit)
	fmt.Fprintf(w, "mode\t%s\n", p.Mode)
	fmt.Fprintf(w, "claim\t%s\n", p.Claim)
	fmt.Fprintf(w, "heat\t%s (%.1f req/s, %.1f denied/s)\n", p.Demand.Heat, p.Demand.RequestsPerS, p.Demand.DenialsPerS)
	fmt.Fprintf(w, "waitlist\t%s\n", waiting(&p))
	fmt.Fprintf(w, "as_of\t%s\n", p.AsOf)
	return w.Flush()
}

func (cc *cmdCtx) poolShow(args []string) error {
	if len(args) != 1 {
		return usagef("pools show POOL")
	}
	var raw json.RawMessage
	if err := cc.c.Get(cc.ctx, poolPath(args[0]), &raw); err != nil {
		return err
	}
	return cc.printPool(raw)
}

// splitArgs separates positional arguments from flags, so flags may come
// after them ("pools create p1 --on-hand 5").
func splitArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

func (cc *cmdCtx) poolCreate(args []string) error {
	fs := flag.NewFlagSet("pools create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	onHand := fs.Int64("on-hand", -1, "")
	limit := fs.Int64("per-buyer-limit", 0, "")
	holdTTL := fs.Int64("hold-ttl-ms", 0, "")
	maxHoldTTL := fs.Int64("max-hold-ttl-ms", 0, "")
	maxExt := fs.Int64("max-extensions", 0, "")
	mode := fs.String("mode", "", "")
	opensAt := fs.String("opens-at", "", "")
	closesAt := fs.String("closes-at", "", "")
	seed := fs.String("seed", "", "")
	waitlist := fs.Bool("waitlist", false, "")
	offerTTL := fs.Int64("offer-ttl-ms", 0, "")
	waitTTL := fs.Int64("wait-ttl-ms", 0, "")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("pools create POOL --on-hand N [flags]")
	}
	if *onHand < 0 {
		return usagef("--on-hand is required")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	body := map[string]any{"on_hand": *onHand}
	for _, f := range []struct {
		flag, key string
		v         *int64
	}{
		{"per-buyer-limit", "per_buyer_limit", limit}, {"hold-ttl-ms", "hold_ttl_ms", holdTTL},
		{"max-hold-ttl-ms", "max_hold_ttl_ms", maxHoldTTL}, {"max-extensions", "max_extensions", maxExt},
	} {
		if set[f.flag] {
			body[f.key] = *f.v
		}
	}
	if set["mode"] {
		body["mode"] = *mode
	}
	if set["opens-at"] || set["closes-at"] || set["seed"] {
		body["draw"] = map[string]string{"opens_at": *opensAt, "closes_at": *closesAt, "seed": *seed}
	}
	if set["waitlist"] || set["offer-ttl-ms"] || set["wait-ttl-ms"] {
		wl := map[string]any{"enabled": *waitlist || !set["waitlist"]}
		if set["offer-ttl-ms"] {
			wl["offer_ttl_ms"] = *offerTTL
		}
		if set["wait-ttl-ms"] {
			wl["wait_ttl_ms"] = *waitTTL
		}
		body["waitlist"] = wl
	}
	var raw json.RawMessage
	// PUT is idempotent: the same configuration twice changes nothing.
	if err := cc.c.do(cc.ctx, request{method: "PUT", path: poolPath(pos[0]), body: body, retry: true}, &raw); err != nil {
		return err
	}
	return cc.printPool(raw)
}

func (cc *cmdCtx) poolAdjust(args []string) error {
	if len(args) != 2 {
		return usagef("pools adjust POOL DELTA")
	}
	delta, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		return usagef("DELTA must be a signed integer, e.g. 50 or -5")
	}
	var raw json.RawMessage
	if err := cc.c.do(cc.ctx, request{method: "POST", path: poolPath(args[0]) + "/adjust", body: map[string]int64{"delta": delta}, retry: true, idempotent: true}, &raw); err != nil {
		return err
	}
	return cc.printPool(raw)
}

// ---- reservations ----

func (cc *cmdCtx) reservation(args []string, release bool) error {
	if len(args) != 1 {
		if release {
			return usagef("reservations release ID")
		}
		return usagef("reservations show ID")
	}
	path := "/v1/reservations/" + url.PathEscape(args[0])
	var raw json.RawMessage
	var err error
	if release {
		err = cc.c.do(cc.ctx, request{method: "POST", path: path + "/release", retry: true, idempotent: true}, &raw)
	} else {
		err = cc.c.Get(cc.ctx, path, &raw)
	}
	if err != nil {
		return err
	}
	if cc.json {
		return cc.printJSON(raw)
	}
	var r struct {
		ID         string `json:"id"`
		Buyer      string `json:"buyer"`
		State      string `json:"state"`
		CreatedAt  string `json:"created_at"`
		ExpiresAt  string `json:"expires_at"`
		Extensions int    `json:"extensions"`
		Position   *int64 `json:"position"`
		Lines      []struct {
			Pool  string `json:"pool"`
			Qty   int64  `json:"qty"`
			State string `json:"state"`
		} `json:"lines"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	w := cc.table()
	fmt.Fprintf(w, "reservation\t%s\n", r.ID)
	fmt.Fprintf(w, "buyer\t%s\n", r.Buyer)
	fmt.Fprintf(w, "state\t%s\n", r.State)
	fmt.Fprintf(w, "created_at\t%s\n", r.CreatedAt)
	fmt.Fprintf(w, "expires_at\t%s\n", r.ExpiresAt)
	fmt.Fprintf(w, "extensions\t%d\n", r.Extensions)
	if r.Position != nil {
		fmt.Fprintf(w, "position\t%d\n", *r.Position)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "POOL\tQTY\tSTATE")
	for _, l := range r.Lines {
		fmt.Fprintf(w, "%s\t%d\t%s\n", l.Pool, l.Qty, l.State)
	}
	return w.Flush()
}

// ---- cluster ----

func (cc *cmdCtx) printCluster(raw json.RawMessage) error { return cc.printClusterProbed(raw, false) }

// printClusterProbed prints the cluster; with probe it also asks each
// member with a known API address for its own applied index (a member
// catching up, or unreachable, shows there).
func (cc *cmdCtx) printClusterProbed(raw json.RawMessage, probe bool) error {
	if cc.json {
		return cc.printJSON(raw)
	}
	var st ClusterStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(cc.out, "leader %s  term %d  commit %d  applied %d  log clock %s  (as seen by %s, %s)\n",
		leader, st.Term, st.CommitIndex, st.AppliedIndex, st.LogClock, st.ID, strings.ToLower(st.State))
	applied := make([]string, len(st.Members))
	if probe {
		var wg sync.WaitGroup
		for i, m := range st.Members {
			applied[i] = "-"
			if m.APIAddr == "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				applied[i] = cc.probe(m.APIAddr)
			}()
		}
		wg.Wait()
	}
	w := cc.table()
	head := "ID\tROLE\tSUFFRAGE\tRAFT\tAPI"
	if probe {
		head += "\tAPPLIED"
	}
	fmt.Fprintln(w, head)
	for i, m := range st.Members {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		api := m.APIAddr
		if api == "" {
			api = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s", m.ID, role, strings.ToLower(m.Suffrage), m.RaftAddr, api)
		if probe {
			fmt.Fprintf(w, "\t%s", applied[i])
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

// probeTimeout bounds asking one member for its status.
const probeTimeout = 2 * time.Second

// probe asks the member at apiAddr (same scheme, token and CA as the node
// ctl talks to) for its applied index.
func (cc *cmdCtx) probe(apiAddr string) string {
	scheme, _, _ := strings.Cut(cc.c.Base, "://")
	c := &Client{Base: scheme + "://" + apiAddr, Token: cc.c.Token, HTTP: &http.Client{Transport: cc.c.HTTP.Transport, Timeout: probeTimeout}}
	ctx, cancel := context.WithTimeout(cc.ctx, probeTimeout)
	defer cancel()
	var st ClusterStatus
	if err := c.Get(ctx, "/v1/cluster", &st); err != nil {
		return "unreachable"
	}
	return strconv.FormatUint(st.AppliedIndex, 10)
}

func (cc *cmdCtx) clusterStatus(args []string) error {
	if len(args) != 0 {
		return usagef("cluster status takes no arguments")
	}
	var raw json.RawMessage
	if err := cc.c.Get(cc.ctx, "/v1/cluster", &raw); err != nil {
		return err
	}
	return cc.printClusterProbed(raw, true)
}

func (cc *cmdCtx) clusterAdd(args []string) error {
	fs := flag.NewFlagSet("cluster add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	api := fs.String("api", "", "")
	nonvoter := fs.Bool("nonvoter", false, "")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("cluster add ID RAFT_ADDR [--api HOST:PORT] [--nonvoter]")
	}
	m := Member{ID: pos[0], RaftAddr: pos[1], APIAddr: *api}
	if *nonvoter {
		f := false
		m.Voter = &f
	}
	var raw json.RawMessage
	if err := cc.c.do(cc.ctx, request{method: "POST", path: "/v1/cluster/members", body: m, retry: true}, &raw); err != nil {
		return err
	}
	return cc.printCluster(raw)
}

func (cc *cmdCtx) clusterRemove(args []string) error {
	if len(args) != 1 {
		return usagef("cluster remove ID")
	}
	var raw json.RawMessage
	if err := cc.c.do(cc.ctx, request{method: "DELETE", path: "/v1/cluster/members/" + url.PathEscape(args[0])}, &raw); err != nil {
		return err
	}
	return cc.printCluster(raw)
}

func (cc *cmdCtx) transferLeader(args []string) error {
	if len(args) > 1 {
		return usagef("cluster transfer-leader [ID]")
	}
	body := map[string]string{}
	if len(args) == 1 {
		body["id"] = args[0]
	}
	var out struct {
		Leader string `json:"leader"`
	}
	if err := cc.c.do(cc.ctx, request{method: "POST", path: "/v1/cluster/leader", body: body, retry: true}, &out); err != nil {
		return err
	}
	if cc.json {
		return cc.printJSON(out)
	}
	_, err := fmt.Fprintf(cc.out, "leader is now %s\n", out.Leader)
	return err
}

// ---- backup and restore ----

func (cc *cmdCtx) printHeader(file string, h raftstore.BackupHeader) error {
	if cc.json {
		return cc.printJSON(struct {
			File string `json:"file"`
			raftstore.BackupHeader
		}{file, h})
	}
	w := cc.table()
	fmt.Fprintf(w, "file\t%s\n", file)
	fmt.Fprintf(w, "format\t%d\n", h.Format)
	fmt.Fprintf(w, "cluster_time\t%s\n", h.ClusterTime)
	fmt.Fprintf(w, "last_index\t%d\n", h.LastIndex)
	fmt.Fprintf(w, "bytes\t%d\n", h.BodyBytes)
	fmt.Fprintf(w, "sha256\t%s\n", h.SHA256)
	fmt.Fprintf(w, "taken_by\t%s at %s\n", h.Node, h.CreatedAt)
	return w.Flush()
}

func (cc *cmdCtx) backup(args []string) error {
	if len(args) != 1 {
		return usagef("backup FILE")
	}
	file := args[0]
	if file == "-" {
		return cc.backupStdout()
	}
	// Written beside FILE, checked, then renamed: FILE is either a whole,
	// verified backup or absent.
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	ctx, cancel := context.WithTimeout(cc.ctx, time.Hour)
	defer cancel()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	_, err = cc.c.Backup(ctx, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	h, err := verifyFile(tmp.Name())
	if err != nil {
		return fmt.Errorf("the backup received does not verify: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	return cc.printHeader(file, h)
}

// backupStdout streams the backup to standard output (for a pipe into
// compression or object storage) while a second reader verifies the same
// bytes; the summary goes to stderr so it never mixes with the data. A
// stream that does not verify has already been written, so the failure is
// the exit status, as with any pipe producer.
func (cc *cmdCtx) backupStdout() error {
	ctx, cancel := context.WithTimeout(cc.ctx, time.Hour)
	defer cancel()
	pr, pw := io.Pipe()
	type verdict struct {
		h   raftstore.BackupHeader
		err error
	}
	done := make(chan verdict, 1)
	go func() {
		h, err := raftstore.VerifyBackup(pr)
		if err != nil {
			// Fail the copy's next write: no use downloading the rest.
			pr.CloseWithError(err)
		} else {
			_, _ = io.Copy(io.Discard, pr) // nothing more is expected; never block the copy
		}
		done <- verdict{h, err}
	}()
	bw := bufio.NewWriterSize(cc.out, 1<<20)
	_, err := cc.c.Backup(ctx, io.MultiWriter(bw, pw))
	if err == nil {
		err = bw.Flush()
	}
	pw.CloseWithError(err) // nil: the verifier sees EOF
	v := <-done
	if v.err != nil {
		return fmt.Errorf("the backup written does not verify: %w", v.err)
	}
	if err != nil {
		return err
	}
	errCC := *cc
	errCC.out = cc.stderr
	return errCC.printHeader("-", v.h)
}

func verifyFile(name string) (raftstore.BackupHeader, error) {
	f, err := os.Open(name)
	if err != nil {
		return raftstore.BackupHeader{}, err
	}
	defer f.Close()
	return raftstore.VerifyBackup(f)
}

func (cc *cmdCtx) restore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "")
	id := fs.String("id", "n1", "")
	raftAddr := fs.String("raft", "127.0.0.1:9080", "")
	peersFlag := fs.String("peers", "", "")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("restore FILE [--data DIR --id ID --raft HOST:PORT [--peers ...]]")
	}
	h, err := verifyFile(pos[0])
	if err != nil {
		return err
	}
	if *data != "" {
		peers, err := ParsePeers(*peersFlag)
		if err != nil {
			return usagef("--peers: %v", err)
		}
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := raftstore.RestoreBackup(raftstore.Config{ID: *id, DataDir: *data, RaftAddr: *raftAddr, Peers: peers, RaftLog: io.Discard}, f); err != nil {
			return err
		}
		fmt.Fprintf(cc.stderr, "restored into %s: start it with holdfast serve --data %s --id %s --raft %s ...\n", *data, *data, *id, *raftAddr)
	}
	return cc.printHeader(pos[0], h)
}

// ParsePeers parses "n1=host:port,n2=host:port".
func ParsePeers(s string) ([]raftstore.Peer, error) {
	if s == "" {
		return nil, nil
	}
	var peers []raftstore.Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("bad peer %q: want id=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("bad peer address %q: %w", addr, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("peer %q listed twice", id)
		}
		seen[id] = true
		peers = append(peers, raftstore.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}
