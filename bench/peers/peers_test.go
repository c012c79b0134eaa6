//go:build peers

// These tests need a real redis-server and PostgreSQL. Each run starts its
// own throwaway servers on random loopback ports (data in temp dirs,
// removed afterwards), unless HOLDFAST_PEERS_REDIS_URL /
// HOLDFAST_PEERS_PG_URL name running ones (scripts/peers-up.sh prints
// such URLs; the tests reset the hfb:* keys and the hfbench schema).
//
//	go test -tags peers ./bench/peers -count=1 -v
package peers

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/holdfast/holdfast/bench"
)

const installHint = "install it: apt-get update && apt-get install -y redis-server postgresql " +
	"(or run scripts/peers-up.sh and set HOLDFAST_PEERS_REDIS_URL / HOLDFAST_PEERS_PG_URL)"

var (
	serversOnce sync.Once
	redisURL    string
	pgURL       string
	serversErr  error
	cleanups    []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// servers starts (once) the throwaway servers the tests share.
func servers(t *testing.T) (string, string) {
	t.Helper()
	serversOnce.Do(func() {
		redisURL = os.Getenv("HOLDFAST_PEERS_REDIS_URL")
		if redisURL == "" {
			redisURL, serversErr = startRedis(t)
			if serversErr != nil {
				return
			}
		}
		pgURL = os.Getenv("HOLDFAST_PEERS_PG_URL")
		if pgURL == "" {
			pgURL, serversErr = startPostgres(t)
		}
	})
	if serversErr != nil {
		t.Fatal(serversErr)
	}
	return redisURL, pgURL
}

func startRedis(t testing.TB) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server is not installed: %s", installHint)
	}
	dir, err := os.MkdirTemp("", "hfpeers-redis-")
	if err != nil {
		return "", err
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "")
	log, _ := os.Create(filepath.Join(dir, "redis.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return "", err
	}
	cleanups = append(cleanups, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.RemoveAll(dir)
	})
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c.Ping(context.Background()).Err() == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return "", fmt.Errorf("redis-server did not start: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port), nil
}

func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // newest major first
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL's initdb is not installed: %s", installHint)
}

func startPostgres(t testing.TB) (string, error) {
	bin, err := pgBinDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "hfpeers-pg-")
	if err != nil {
		return "", err
	}
	// root cannot run postgres: run it as the postgres user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user to run PostgreSQL as: %s", installHint)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	as := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := as("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v: %s", err, out)
	}
	port := freePort(t)
	cmd := as("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "synchronous_commit=on", "-c", "fsync=on",
		"-c", "max_connections=200")
	log, _ := os.Create(filepath.Join(dir, "postgres.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return "", err
	}
	cleanups = append(cleanups, func() {
		cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		cmd.Wait()
		os.RemoveAll(dir)
	})
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			c.Close(context.Background())
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return "", fmt.Errorf("postgres did not start: %v: %s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return url, nil
}

type peer struct {
	name string
	open func(t *testing.T, query string) bench.Target
	url  string
}

func peersUnderTest(t *testing.T) []peer {
	r, p := servers(t)
	mk := func(base string, open func(string, bench.TargetOptions) (bench.Target, error)) func(*testing.T, string) bench.Target {
		return func(t *testing.T, query string) bench.Target {
			u := base
			if query != "" {
				if strings.Contains(u, "?") {
					u += "&" + query
				} else {
					u += "?" + query
				}
			}
			tg, err := open(u, bench.TargetOptions{Conns: 64, Timeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tg.Close() })
			return tg
		}
	}
	return []peer{
		{name: "redis", open: mk(r, OpenRedis), url: r},
		{name: "postgres", open: mk(p, OpenPostgres), url: p},
	}
}

// forEach runs f as a subtest against each peer.
func forEach(t *testing.T, f func(t *testing.T, p peer)) {
	for _, p := range peersUnderTest(t) {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}

func setup(t *testing.T, tg bench.Target, pools ...bench.PoolSpec) {
	t.Helper()
	if err := tg.Setup(context.Background(), pools); err != nil {
		t.Fatal(err)
	}
}

func reserve(t *testing.T, tg bench.Target, r bench.ReserveRequest) bench.Hold {
	t.Helper()
	h, err := tg.Reserve(context.Background(), r)
	if err != nil {
		t.Fatalf("reserve %+v: %v", r, err)
	}
	if (h.Outcome == bench.OK) != (h.ID != "") {
		t.Fatalf("reserve %+v: outcome %v with id %q", r, h.Outcome, h.ID)
	}
	return h
}

func want(t *testing.T, what string, got, exp bench.Outcome) {
	t.Helper()
	if got != exp {
		t.Fatalf("%s: got %v, want %v", what, got, exp)
	}
}

func confirm(t *testing.T, tg bench.Target, h bench.Hold) bench.Outcome {
	t.Helper()
	o, err := tg.Confirm(context.Background(), h)
	if err != nil {
		t.Fatalf("confirm %s: %v", h.ID, err)
	}
	return o
}

func release(t *testing.T, tg bench.Target, h bench.Hold) bench.Outcome {
	t.Helper()
	o, err := tg.Release(context.Background(), h)
	if err != nil {
		t.Fatalf("release %s: %v", h.ID, err)
	}
	return o
}

func ledger(t *testing.T, tg bench.Target, pools ...string) bench.Ledger {
	t.Helper()
	l, err := tg.Ledger(context.Background(), pools, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func readPool(t *testing.T, tg bench.Target, pool string) bench.PoolLedger {
	t.Helper()
	p, err := tg.(bench.PoolReader).ReadPool(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestName(t *testing.T) {
	r, _ := servers(t)
	tg, err := OpenRedis(r, bench.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if os.Getenv("HOLDFAST_PEERS_REDIS_URL") == "" && tg.Name() != "redis-always" {
		t.Errorf("name %q, want redis-always (from CONFIG GET appendfsync)", tg.Name())
	}
	tg2, err := OpenRedis(r+"?name=redis-custom&sweep_ms=10", bench.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg2.Close()
	if tg2.Name() != "redis-custom" {
		t.Errorf("name %q, want redis-custom", tg2.Name())
	}
	forEach(t, func(t *testing.T, p peer) {
		if n := p.open(t, "").Name(); !strings.HasPrefix(n, p.name) {
			t.Errorf("name %q", n)
		}
	})
}

func TestSoldOut(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "drop", OnHand: 10, HoldTTLMs: 60_000}, bench.PoolSpec{ID: "other", OnHand: 3, HoldTTLMs: 60_000})
		ctx := context.Background()
		if in, err := tg.InStock(ctx, "drop"); err != nil || !in {
			t.Fatalf("InStock before = %v, %v", in, err)
		}
		ids := map[string]bool{}
		ok := 0
		for i := range 15 {
			h := reserve(t, tg, bench.ReserveRequest{Buyer: fmt.Sprintf("b%d", i), Pool: "drop", Qty: 1})
			switch h.Outcome {
			case bench.OK:
				ok++
				if ids[h.ID] {
					t.Fatalf("hold id %s twice", h.ID)
				}
				ids[h.ID] = true
				if d := time.Until(h.ExpiresAt); d < 55*time.Second || d > 65*time.Second {
					t.Fatalf("expires in %v, want about the pool's 60s", d)
				}
			case bench.SoldOut:
			default:
				t.Fatalf("outcome %v", h.Outcome)
			}
		}
		if ok != 10 {
			t.Fatalf("%d holds on 10 units", ok)
		}
		// A request larger than what is left is refused whole.
		h := reserve(t, tg, bench.ReserveRequest{Buyer: "x", Pool: "other", Qty: 4})
		want(t, "qty 4 of 3", h.Outcome, bench.SoldOut)
		h = reserve(t, tg, bench.ReserveRequest{Buyer: "x", Pool: "other", Qty: 3, TTLMs: 5000})
		want(t, "qty 3 of 3", h.Outcome, bench.OK)
		if d := time.Until(h.ExpiresAt); d < 4*time.Second || d > 6*time.Second {
			t.Fatalf("TTLMs 5000: expires in %v", d)
		}
		if in, err := tg.InStock(ctx, "drop"); err != nil || in {
			t.Fatalf("InStock after = %v, %v", in, err)
		}
		h = reserve(t, tg, bench.ReserveRequest{Buyer: "x", Pool: "nope", Qty: 1})
		want(t, "unknown pool", h.Outcome, bench.NotFound)
		o, err := tg.Confirm(ctx, bench.Hold{ID: "123456789"})
		if err != nil || o != bench.NotFound {
			t.Fatalf("confirm unknown hold: %v, %v", o, err)
		}
		l := ledger(t, tg, "drop", "other")
		if l.Pools["drop"] != (bench.PoolLedger{OnHand: 10, Held: 10}) || l.Pools["other"] != (bench.PoolLedger{OnHand: 3, Held: 3}) {
			t.Fatalf("ledger pools %+v", l.Pools)
		}
		if len(l.BuyerUnits) != 11 || l.BuyerUnits[bench.BuyerPool{Buyer: "x", Pool: "other"}] != 3 {
			t.Fatalf("buyer units %v", l.BuyerUnits)
		}
		if len(l.Confirmed) != 0 {
			t.Fatalf("confirmed %v", l.Confirmed)
		}
	})
}

func TestBuyerLimit(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "ltd", OnHand: 100, PerBuyerLimit: 3, HoldTTLMs: 60_000})
		r := func(buyer string, qty int64) bench.Hold {
			return reserve(t, tg, bench.ReserveRequest{Buyer: buyer, Pool: "ltd", Qty: qty})
		}
		want(t, "a: 4 > limit 3 first", r("a", 4).Outcome, bench.BuyerLimit)
		h2 := r("a", 2)
		want(t, "a: 2", h2.Outcome, bench.OK)
		want(t, "a: 2+2", r("a", 2).Outcome, bench.BuyerLimit)
		h1 := r("a", 1)
		want(t, "a: 2+1", h1.Outcome, bench.OK)
		want(t, "a: 3+1", r("a", 1).Outcome, bench.BuyerLimit)
		want(t, "b: 3", r("b", 3).Outcome, bench.OK)
		// Sold units count: confirm the 2, release the 1.
		want(t, "confirm", confirm(t, tg, h2), bench.OK)
		want(t, "a: sold 2 + held 1 + 1", r("a", 1).Outcome, bench.BuyerLimit)
		want(t, "release", release(t, tg, h1), bench.OK)
		h := r("a", 1)
		want(t, "a: sold 2 + 1 after the release", h.Outcome, bench.OK)
		want(t, "a: 3 + 1", r("a", 1).Outcome, bench.BuyerLimit)
		l := ledger(t, tg, "ltd")
		if got := l.BuyerUnits[bench.BuyerPool{Buyer: "a", Pool: "ltd"}]; got != 3 {
			t.Fatalf("a's units %d, want 3", got)
		}
		if got := l.BuyerUnits[bench.BuyerPool{Buyer: "b", Pool: "ltd"}]; got != 3 {
			t.Fatalf("b's units %d, want 3", got)
		}
		if l.Pools["ltd"] != (bench.PoolLedger{OnHand: 100, Held: 4, Sold: 2}) {
			t.Fatalf("pool %+v", l.Pools["ltd"])
		}
		if !l.Confirmed[h2.ID] || len(l.Confirmed) != 1 {
			t.Fatalf("confirmed %v, want {%s}", l.Confirmed, h2.ID)
		}
	})
}

func TestConfirmRelease(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "p", OnHand: 10, HoldTTLMs: 60_000})
		a := reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "p", Qty: 2})
		b := reserve(t, tg, bench.ReserveRequest{Buyer: "b", Pool: "p", Qty: 3})
		want(t, "confirm a", confirm(t, tg, a), bench.OK)
		want(t, "confirm a again", confirm(t, tg, a), bench.OK)
		want(t, "release confirmed a", release(t, tg, a), bench.InvalidState)
		want(t, "release b", release(t, tg, b), bench.OK)
		want(t, "release b again", release(t, tg, b), bench.OK)
		want(t, "confirm released b", confirm(t, tg, b), bench.InvalidState)
		if p := readPool(t, tg, "p"); p != (bench.PoolLedger{OnHand: 10, Sold: 2}) {
			t.Fatalf("pool %+v", p)
		}
		hr := tg.(bench.HoldReader)
		if s, err := hr.ReadHold(context.Background(), a.ID); err != nil || s.State != bench.HoldConfirmed {
			t.Fatalf("ReadHold a: %+v %v", s, err)
		}
		if s, err := hr.ReadHold(context.Background(), b.ID); err != nil || s.State != bench.HoldReleased {
			t.Fatalf("ReadHold b: %+v %v", s, err)
		}
		l := ledger(t, tg, "p")
		if l.Pools["p"] != (bench.PoolLedger{OnHand: 10, Sold: 2}) || len(l.Confirmed) != 1 || !l.Confirmed[a.ID] {
			t.Fatalf("ledger %+v", l)
		}
		if len(l.BuyerUnits) != 1 || l.BuyerUnits[bench.BuyerPool{Buyer: "a", Pool: "p"}] != 2 {
			t.Fatalf("buyer units %v", l.BuyerUnits)
		}
	})
}

// The sweeper returns expired holds' units without anyone touching them.
func TestExpirySweeper(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "sweep_ms=20")
		setup(t, tg, bench.PoolSpec{ID: "p", OnHand: 5, PerBuyerLimit: 5, HoldTTLMs: 300})
		var hs []bench.Hold
		for i := range 5 {
			h := reserve(t, tg, bench.ReserveRequest{Buyer: fmt.Sprintf("b%d", i%2), Pool: "p", Qty: 1})
			want(t, "reserve", h.Outcome, bench.OK)
			hs = append(hs, h)
		}
		keep := reserve(t, tg, bench.ReserveRequest{Buyer: "z", Pool: "p", Qty: 1})
		want(t, "sold out", keep.Outcome, bench.SoldOut)
		start := time.Now()
		for readPool(t, tg, "p").Held != 0 {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("the sweeper did not return the units: %+v", readPool(t, tg, "p"))
			}
			time.Sleep(5 * time.Millisecond)
		}
		lag := time.Since(hs[4].ExpiresAt)
		t.Logf("units back %v after the last expiry", lag.Round(time.Millisecond))
		if s, err := tg.(bench.HoldReader).ReadHold(context.Background(), hs[0].ID); err != nil || s.State != bench.HoldExpired {
			t.Fatalf("ReadHold: %+v %v", s, err)
		}
		want(t, "confirm after expiry", confirm(t, tg, hs[0]), bench.Expired)
		want(t, "release after expiry", release(t, tg, hs[1]), bench.Expired)
		l := ledger(t, tg, "p")
		if l.Pools["p"] != (bench.PoolLedger{OnHand: 5}) || len(l.BuyerUnits) != 0 || len(l.Confirmed) != 0 {
			t.Fatalf("ledger %+v", l)
		}
		if in, _ := tg.InStock(context.Background(), "p"); !in {
			t.Fatal("not in stock after the sweep")
		}
		want(t, "reserve after the sweep", reserve(t, tg, bench.ReserveRequest{Buyer: "z", Pool: "p", Qty: 5}).Outcome, bench.OK)
	})
}

// With the sweeper far behind, a reserve (and a confirm) still find the
// expired holds' units.
func TestExpiryWithoutSweeper(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "sweep_ms=3600000&sweep_batch=2")
		setup(t, tg,
			bench.PoolSpec{ID: "p", OnHand: 5, HoldTTLMs: 400},
			bench.PoolSpec{ID: "ltd", OnHand: 100, PerBuyerLimit: 1, HoldTTLMs: 400})
		var hs []bench.Hold
		for i := range 5 {
			h := reserve(t, tg, bench.ReserveRequest{Buyer: fmt.Sprintf("b%d", i), Pool: "p", Qty: 1})
			want(t, "reserve", h.Outcome, bench.OK)
			hs = append(hs, h)
		}
		lh := reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "ltd", Qty: 1})
		want(t, "ltd", lh.Outcome, bench.OK)
		want(t, "ltd again", reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "ltd", Qty: 1}).Outcome, bench.BuyerLimit)
		time.Sleep(500 * time.Millisecond)
		if got := readPool(t, tg, "p").Held; got != 5 {
			t.Fatalf("held %d before any touch, want 5 (no sweep yet)", got)
		}
		// A confirm after the expiry ends the hold at once.
		want(t, "confirm after expiry", confirm(t, tg, hs[0]), bench.Expired)
		if got := readPool(t, tg, "p").Held; got != 4 {
			t.Fatalf("held %d after the expired confirm, want 4", got)
		}
		// A refused reserve first returns due holds (in batches of 2 here).
		h := reserve(t, tg, bench.ReserveRequest{Buyer: "z", Pool: "p", Qty: 5})
		want(t, "reserve over expired holds", h.Outcome, bench.OK)
		want(t, "ltd after expiry", reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "ltd", Qty: 1}).Outcome, bench.OK)
		want(t, "release expired", release(t, tg, hs[4]), bench.Expired)
		l := ledger(t, tg, "p", "ltd")
		if l.Pools["p"] != (bench.PoolLedger{OnHand: 5, Held: 5}) || l.Pools["ltd"] != (bench.PoolLedger{OnHand: 100, Held: 1}) {
			t.Fatalf("ledger %+v", l.Pools)
		}
		if len(l.BuyerUnits) != 2 || l.BuyerUnits[bench.BuyerPool{Buyer: "z", Pool: "p"}] != 5 || l.BuyerUnits[bench.BuyerPool{Buyer: "a", Pool: "ltd"}] != 1 {
			t.Fatalf("buyer units %v", l.BuyerUnits)
		}
	})
}

func TestIdempotentRetry(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "p", OnHand: 4, PerBuyerLimit: 2, HoldTTLMs: 60_000},
			bench.PoolSpec{ID: "q", OnHand: 1000, HoldTTLMs: 60_000})
		r := bench.ReserveRequest{Buyer: "a", Pool: "p", Qty: 2, IdemKey: "k1"}
		h := reserve(t, tg, r)
		want(t, "first", h.Outcome, bench.OK)
		again := reserve(t, tg, r)
		if again.Outcome != bench.OK || again.ID != h.ID || !again.ExpiresAt.Equal(h.ExpiresAt) {
			t.Fatalf("retry %+v, first %+v", again, h)
		}
		// Even at the buyer's limit and once the hold is confirmed.
		want(t, "confirm", confirm(t, tg, h), bench.OK)
		if again = reserve(t, tg, r); again.ID != h.ID {
			t.Fatalf("retry after confirm %+v", again)
		}
		want(t, "same key, other qty", reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "p", Qty: 1, IdemKey: "k1"}).Outcome, bench.Conflict)
		want(t, "same key, other pool", reserve(t, tg, bench.ReserveRequest{Buyer: "a", Pool: "q", Qty: 2, IdemKey: "k1"}).Outcome, bench.Conflict)
		want(t, "same key, other buyer", reserve(t, tg, bench.ReserveRequest{Buyer: "b", Pool: "p", Qty: 2, IdemKey: "k1"}).Outcome, bench.Conflict)
		// A refusal is not remembered: the retry is tried again.
		rb := bench.ReserveRequest{Buyer: "b", Pool: "p", Qty: 3, IdemKey: "k2"}
		want(t, "b over the limit", reserve(t, tg, rb).Outcome, bench.BuyerLimit)
		// Many concurrent retries of one request hold once.
		var wg sync.WaitGroup
		ids := make([]string, 32)
		for i := range ids {
			wg.Go(func() {
				h, err := tg.Reserve(context.Background(), bench.ReserveRequest{Buyer: "c", Pool: "q", Qty: 7, IdemKey: "k3"})
				if err != nil || h.Outcome != bench.OK {
					t.Errorf("concurrent retry: %+v %v", h, err)
				}
				ids[i] = h.ID
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("concurrent retries got holds %v", ids)
			}
		}
		l := ledger(t, tg, "p", "q")
		if l.Pools["p"] != (bench.PoolLedger{OnHand: 4, Sold: 2}) || l.Pools["q"] != (bench.PoolLedger{OnHand: 1000, Held: 7}) {
			t.Fatalf("ledger %+v", l.Pools)
		}
	})
}

// 64 reservers, many attempts each, on 100 units: exactly 100 held.
func TestConcurrentReservers(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "hot", OnHand: 100, HoldTTLMs: 600_000},
			bench.PoolSpec{ID: "hot-ltd", OnHand: 100, PerBuyerLimit: 2, HoldTTLMs: 600_000})
		for _, pool := range []string{"hot", "hot-ltd"} {
			const workers, attempts = 64, 40
			var (
				mu    sync.Mutex
				ok    = map[string]string{} // id -> buyer
				perB  = map[string]int64{}
				total time.Duration
				n     int
			)
			var wg sync.WaitGroup
			start := time.Now()
			for w := range workers {
				wg.Go(func() {
					for a := range attempts {
						buyer := fmt.Sprintf("w%d-%d", w, a%3)
						t0 := time.Now()
						h, err := tg.Reserve(context.Background(), bench.ReserveRequest{Buyer: buyer, Pool: pool, Qty: 1})
						d := time.Since(t0)
						mu.Lock()
						total += d
						n++
						switch {
						case err != nil:
							t.Errorf("reserve: %v", err)
						case h.Outcome == bench.OK:
							if _, dup := ok[h.ID]; dup {
								t.Errorf("hold %s twice", h.ID)
							}
							ok[h.ID] = buyer
							perB[buyer]++
						case h.Outcome != bench.SoldOut && h.Outcome != bench.BuyerLimit:
							t.Errorf("outcome %v", h.Outcome)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			t.Logf("%s: %d reserves by %d workers in %v (%.0f/s), mean %v", pool, n, workers,
				time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds(), (total / time.Duration(n)).Round(time.Microsecond))
			if len(ok) != 100 {
				t.Fatalf("%s: %d holds on 100 units", pool, len(ok))
			}
			l := ledger(t, tg, pool)
			if l.Pools[pool] != (bench.PoolLedger{OnHand: 100, Held: 100}) {
				t.Fatalf("%s: pool %+v", pool, l.Pools[pool])
			}
			var sum int64
			for k, u := range l.BuyerUnits {
				sum += u
				if u != perB[k.Buyer] {
					t.Fatalf("%s: %s has %d units, the harness saw %d", pool, k.Buyer, u, perB[k.Buyer])
				}
				if pool == "hot-ltd" && u > 2 {
					t.Fatalf("%s over the limit: %d", k.Buyer, u)
				}
			}
			if sum != 100 {
				t.Fatalf("%s: buyer units sum %d", pool, sum)
			}
		}
	})
}

// A mixed concurrent workload (reserve, confirm, release, expiry) ends in
// a ledger that agrees with what the clients saw.
func TestConcurrentMixedLedger(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "sweep_ms=20")
		const limit = 3
		pools := []string{"m", "n", "big", "big-ltd"}
		setup(t, tg, bench.PoolSpec{ID: "m", OnHand: 60, PerBuyerLimit: limit, HoldTTLMs: 150},
			bench.PoolSpec{ID: "n", OnHand: 40, HoldTTLMs: 150},
			bench.PoolSpec{ID: "big", OnHand: 1_000_000, HoldTTLMs: 150},
			bench.PoolSpec{ID: "big-ltd", OnHand: 1_000_000, PerBuyerLimit: 1000, HoldTTLMs: 150})
		type held struct {
			h           bench.Hold
			buyer, pool string
			qty         int64
		}
		var (
			mu        sync.Mutex
			confirmed = map[string]held{}
			all       []string
			errs      int
		)
		var wg sync.WaitGroup
		deadline := time.Now().Add(2 * time.Second)
		for w := range 48 {
			wg.Go(func() {
				ctx := context.Background()
				for i := 0; time.Now().Before(deadline); i++ {
					pool := pools[i%len(pools)]
					buyer := fmt.Sprintf("b%d", (w*7+i)%40)
					qty := int64(1 + i%2)
					h, err := tg.Reserve(ctx, bench.ReserveRequest{Buyer: buyer, Pool: pool, Qty: qty, IdemKey: fmt.Sprintf("w%d-%d", w, i)})
					if err != nil {
						mu.Lock()
						errs++
						mu.Unlock()
						continue
					}
					if h.Outcome != bench.OK {
						continue
					}
					mu.Lock()
					all = append(all, h.ID)
					mu.Unlock()
					var o bench.Outcome
					switch (i / len(pools)) % 4 {
					case 0, 1:
						o, err = tg.Confirm(ctx, h)
						if err == nil && o == bench.OK {
							mu.Lock()
							confirmed[h.ID] = held{h, buyer, pool, qty}
							mu.Unlock()
						}
					case 2:
						o, err = tg.Release(ctx, h)
					case 3: // abandoned: it expires
					}
					if err != nil || (o != bench.OK && o != bench.Expired) {
						t.Errorf("op %d on %s: %v %v", (i/len(pools))%4, h.ID, o, err)
					}
				}
			})
		}
		wg.Wait()
		if errs > 0 {
			t.Fatalf("%d reserve errors", errs)
		}
		time.Sleep(300 * time.Millisecond) // every hold has expired
		l, err := tg.Ledger(context.Background(), pools, all)
		if err != nil {
			t.Fatal(err)
		}
		sold := map[string]int64{}
		perB := map[bench.BuyerPool]int64{}
		for _, c := range confirmed {
			sold[c.pool] += c.qty
			perB[bench.BuyerPool{Buyer: c.buyer, Pool: c.pool}] += c.qty
		}
		for _, pool := range pools {
			pl := l.Pools[pool]
			if pl.Held != 0 || pl.Sold != sold[pool] {
				t.Fatalf("%s: %+v, the clients confirmed %d", pool, pl, sold[pool])
			}
		}
		if len(l.Confirmed) != len(confirmed) {
			t.Fatalf("%d confirmed, the clients confirmed %d", len(l.Confirmed), len(confirmed))
		}
		for id := range confirmed {
			if !l.Confirmed[id] {
				t.Fatalf("confirmed %s missing from the ledger", id)
			}
		}
		for k, u := range l.BuyerUnits {
			if u != perB[k] {
				t.Fatalf("%v: %d units, confirmed %d", k, u, perB[k])
			}
			if (k.Pool == "m" && u > limit) || (k.Pool == "big-ltd" && u > 1000) {
				t.Fatalf("%v over the limit: %d", k, u)
			}
		}
		if len(l.BuyerUnits) != len(perB) {
			t.Fatalf("buyer units %v, want %v", l.BuyerUnits, perB)
		}
		t.Logf("%d holds, %d confirmed, sold %v", len(all), len(confirmed), sold)
		if p.name == "postgres" {
			checkBuyerUnitsTable(t, p.url)
		}
	})
}

// checkBuyerUnitsTable: the counters the limit is enforced on agree with
// the reservations.
func checkBuyerUnitsTable(t *testing.T, url string) {
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var bad int
	err = c.QueryRow(context.Background(), `
SELECT count(*) FROM hfbench.buyer_units b FULL JOIN (
	SELECT pool_id, buyer, sum(qty) AS u FROM hfbench.reservations
	WHERE state IN ('held', 'confirmed') GROUP BY 1, 2) r USING (pool_id, buyer)
WHERE b.pool_id IN (SELECT id FROM hfbench.pools WHERE per_buyer_limit > 0)
  AND coalesce(b.units, 0) <> coalesce(r.u, 0)`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d buyer_units rows disagree with the reservations", bad)
	}
	// The lock order (reservation, buyer_units, pools) leaves no deadlock
	// for the retry to hide.
	var deadlocks int64
	if err := c.QueryRow(context.Background(),
		`SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocks); err != nil {
		t.Fatal(err)
	}
	if deadlocks != 0 {
		t.Fatalf("%d deadlocks", deadlocks)
	}
}

// Rough single-client latency of each operation (logged, not asserted).
func TestLatency(t *testing.T) {
	forEach(t, func(t *testing.T, p peer) {
		tg := p.open(t, "")
		setup(t, tg, bench.PoolSpec{ID: "lat", OnHand: 1_000_000, HoldTTLMs: 600_000},
			bench.PoolSpec{ID: "lat-ltd", OnHand: 1_000_000, PerBuyerLimit: 1_000_000, HoldTTLMs: 600_000})
		ctx := context.Background()
		for _, pool := range []string{"lat", "lat-ltd"} {
			const n = 300
			var tr, tc, trel, ts time.Duration
			for i := range n {
				t0 := time.Now()
				h, err := tg.Reserve(ctx, bench.ReserveRequest{Buyer: fmt.Sprintf("b%d", i%50), Pool: pool, Qty: 1})
				tr += time.Since(t0)
				if err != nil || h.Outcome != bench.OK {
					t.Fatalf("%+v %v", h, err)
				}
				t0 = time.Now()
				var o bench.Outcome
				if i%2 == 0 {
					o, err = tg.Confirm(ctx, h)
					tc += time.Since(t0)
				} else {
					o, err = tg.Release(ctx, h)
					trel += time.Since(t0)
				}
				if err != nil || o != bench.OK {
					t.Fatalf("%v %v", o, err)
				}
				t0 = time.Now()
				if _, err := tg.InStock(ctx, pool); err != nil {
					t.Fatal(err)
				}
				ts += time.Since(t0)
			}
			t.Logf("%s %s: reserve %v, confirm %v, release %v, in-stock %v (mean of %d, one client)", tg.Name(), pool,
				(tr / n).Round(time.Microsecond), (tc / (n / 2)).Round(time.Microsecond),
				(trel / (n / 2)).Round(time.Microsecond), (ts / n).Round(time.Microsecond), n)
		}
	})
}
