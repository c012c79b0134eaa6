package ui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// Tokens of the test node's auth table.
const (
	readToken  = "hf_test-dashboard-read-token-0123456789abcdef"
	adminToken = "hf_test-dashboard-admin-token-0123456789abcdef"
)

// The chart's series colours (app.js SERIES).
var (
	offersRGB  = [3]int{0x25, 0x63, 0xeb}
	expiredRGB = [3]int{0xdc, 0x26, 0x26}
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// cluster is three in-process nodes with auth on.
type cluster struct {
	urls   map[string]string // node id -> base URL
	leader string            // its id
}

// startCluster runs a three-node cluster in process, with auth on, and
// waits until every node knows the leader.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	table, err := auth.Parse(strings.NewReader(
		auth.FormatEntry(auth.Read, "dashboard", []byte(readToken)) + "\n" +
			auth.FormatEntry(auth.Admin, "ops", []byte(adminToken)) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ids := []string{"n1", "n2", "n3"}
	raftAddrs, httpAddrs := map[string]string{}, map[string]string{}
	var peers []raftstore.Peer
	for _, id := range ids {
		raftAddrs[id], httpAddrs[id] = freeAddr(t), freeAddr(t)
		peers = append(peers, raftstore.Peer{ID: id, Addr: raftAddrs[id]})
	}
	c := &cluster{urls: map[string]string{}}
	for _, id := range ids {
		m := engine.New(engine.Config{})
		n, err := raftstore.Open(raftstore.Config{
			ID: id, DataDir: t.TempDir(), RaftAddr: raftAddrs[id], APIAddr: httpAddrs[id], Peers: peers,
			Logger: quiet, RaftLog: io.Discard, // default timeouts: chromium shares the 2 cores
		}, m)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", httpAddrs[id])
		if err != nil {
			n.Close()
			t.Fatal(err)
		}
		srv := api.New(api.Config{Node: n, Alloc: m.Alloc, Carts: m, Logger: quiet, Auth: table})
		go srv.Serve(ln)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			n.Close()
		})
		c.urls[id] = "http://" + httpAddrs[id]
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, id := range ids {
		for {
			st, h := call(t, "GET", c.urls[id]+"/v1/health", "", "")
			if l, _ := h["leader"].(string); st == http.StatusOK && l != "" {
				if c.leader != "" && c.leader != l {
					t.Fatalf("nodes disagree on the leader: %s, %s", c.leader, l)
				}
				c.leader = l
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not healthy after 15s", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// follower is the id of a node that does not lead.
func (c *cluster) follower() string {
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != c.leader {
			return id
		}
	}
	return ""
}

// call makes one API request and decodes the JSON answer. A POST carries
// an Idempotency-Key, so that mustCall may retry it.
func call(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == "POST" {
		sum := sha256.Sum256([]byte(url + "\n" + body))
		req.Header.Set("Idempotency-Key", hex.EncodeToString(sum[:16]))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// mustCall is call expecting status want. A 503 (an election on this busy
// machine) is retried a few times: PUTs are idempotent, POSTs carry keys.
func mustCall(t *testing.T, method, url, token, body string, want int) map[string]any {
	t.Helper()
	for attempt := 0; ; attempt++ {
		st, out := call(t, method, url, token, body)
		if st == want {
			return out
		}
		if st != http.StatusServiceUnavailable || attempt == 5 {
			t.Fatalf("%s %s: status %d, want %d: %v", method, url, st, want, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	// Not a skip: the dashboard is untested without it. .ci/run installs it.
	t.Fatal("chromium not found on PATH: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
	return ""
}

// num reads a number the page formatted with thousands separators.
func num(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), ",", ""), 10, 64)
	if err != nil {
		t.Fatalf("not a number on the page: %q", s)
	}
	return n
}

// TestDashboardDropInChromium drives a draw drop on a node with auth on
// and watches it in the dashboard in headless Chromium: the page asks for
// a token, lists pools by heat, shows the drop's countdown, entries,
// winners and waitlist as the API reports them, and draws offers and
// expiries over time (checked on a screenshot of the chart).
func TestDashboardDropInChromium(t *testing.T) {
	chrome := chromiumPath(t)
	c := startCluster(t)
	base := c.urls[c.leader] // the test's own calls
	// The page is loaded from a follower: every node serves it, and the
	// follower forwards the drop view's linearizable reads, token and all.
	viewer := c.follower()
	page := c.urls[viewer]

	// A hot pool (a low threshold and some traffic) and a cold one; the
	// drop comes once the page is open.
	mustCall(t, "PUT", base+"/v1/pools/retail-tee", adminToken, `{"on_hand": 500}`, http.StatusCreated)
	mustCall(t, "PUT", base+"/v1/pools/hot-cap", adminToken,
		`{"on_hand": 1000, "demand_thresholds": {"warm_rps": 1, "hot_rps": 1}}`, http.StatusCreated)
	for i := range 12 {
		mustCall(t, "POST", base+"/v1/reservations", adminToken,
			fmt.Sprintf(`{"buyer": "c-%d", "lines": [{"pool": "hot-cap", "qty": 1}], "ttl_ms": 60000}`, i), http.StatusCreated)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	var jsMu sync.Mutex
	var jsErrors []string // uncaught exceptions on the page
	err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			jsMu.Lock()
			d := e.ExceptionDetails
			msg := fmt.Sprintf("%s at %s:%d:%d", d.Text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
			if d.Exception != nil {
				msg += ": " + d.Exception.Description
			}
			jsErrors = append(jsErrors, msg)
			jsMu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("starting chromium (%s): %v", chrome, err)
	}
	pageErrors := func() []string {
		jsMu.Lock()
		defer jsMu.Unlock()
		return append([]string(nil), jsErrors...)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	waitFor := func(what, expr string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](expr))
			if err != nil {
				t.Fatalf("evaluate %s: %v", expr, err)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				state, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('header').innerText + ' | ' +
					document.getElementById('members').innerText + ' | ' + document.getElementById('drop').innerText`))
				t.Fatalf("timed out after %v waiting for %s (%s); page errors: %v; page: %s", timeout, what, expr, pageErrors(), state)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	textOf := func(id string) string {
		return eval(`document.getElementById(` + strconv.Quote(id) + `).textContent`)
	}

	// Without a token the API refuses the page's calls: it asks for one.
	run("open /ui", chromedp.Navigate(page+"/ui?poll_ms=250"))
	waitFor("the token form", `!document.getElementById('auth').hidden`, 10*time.Second)
	if msg := textOf("auth-message"); !strings.Contains(msg, "401") {
		t.Fatalf("auth message %q does not report the 401", msg)
	}
	run("enter the read token",
		chromedp.SendKeys(chromedp.CSS("#token-input"), readToken),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	now := time.Now().UTC()
	closesAt := now.Add(3 * time.Second)
	mustCall(t, "PUT", base+"/v1/pools/drop-1", adminToken, fmt.Sprintf(`{"on_hand": 4, "per_buyer_limit": 1,
		"hold_ttl_ms": 1500, "max_hold_ttl_ms": 1500, "mode": "draw",
		"draw": {"opens_at": %q, "closes_at": %q, "seed": "dash-test"},
		"waitlist": {"enabled": true, "offer_ttl_ms": 1500, "wait_ttl_ms": 600000}}`,
		now.Add(-time.Second).Format(time.RFC3339Nano), closesAt.Format(time.RFC3339Nano)), http.StatusCreated)
	waitFor("the pool rows", `document.querySelectorAll('#pool-rows tr').length === 3`, 10*time.Second)
	waitFor("the cluster view", `document.getElementById('health').textContent === 'healthy' &&
		document.getElementById('node-id').textContent === '`+viewer+`' &&
		document.querySelectorAll('#members tr').length === 3`, 5*time.Second)
	// The leader shown is the leader (an election may have moved it).
	for deadline := time.Now().Add(5 * time.Second); ; {
		cl := mustCall(t, "GET", page+"/v1/cluster", readToken, "", http.StatusOK)
		shown := textOf("leader")
		if shown == cl["leader"] && eval(`document.querySelector('#members tr.selected td').textContent`) == shown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("page shows leader %q, /v1/cluster says %v", shown, cl["leader"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := eval(`sessionStorage.getItem('holdfast.token')`); got != readToken {
		t.Fatalf("token kept in sessionStorage = %q", got)
	}

	// Pools by heat: the hot pool first, every row's heat non-increasing.
	heats := eval(`Array.from(document.querySelectorAll('#pool-rows tr')).map(r => r.dataset.pool + ':' + r.children[2].textContent).join(' ')`)
	rank := map[string]int{"hot": 2, "warm": 1, "cold": 0}
	rows := strings.Fields(heats)
	if !strings.HasPrefix(rows[0], "hot-cap:") {
		t.Fatalf("first pool row is %q, want hot-cap (rows: %v)", rows[0], rows)
	}
	if !sort.SliceIsSorted(rows, func(i, j int) bool {
		return rank[rows[i][strings.IndexByte(rows[i], ':')+1:]] > rank[rows[j][strings.IndexByte(rows[j], ':')+1:]]
	}) {
		t.Fatalf("pool rows not sorted by heat: %v", rows)
	}

	// The drop view, while entries are open: a countdown to closes_at.
	run("select the drop", chromedp.Click(chromedp.CSS(`#pool-rows tr[data-pool="drop-1"] td`)))
	waitFor("the countdown", `document.getElementById('countdown-label').textContent === 'closes in' &&
		/ s$/.test(document.getElementById('countdown').textContent)`, 5*time.Second)
	cd := textOf("countdown")
	secs, err := strconv.ParseFloat(strings.TrimSuffix(cd, " s"), 64)
	if left := time.Until(closesAt).Seconds(); err != nil || secs > left+1 || secs < left-1.5 {
		t.Fatalf("countdown %q, want about %.1f s", cd, left)
	}

	ids := make([]string, 0, 20)
	for i := range 20 {
		r := mustCall(t, "POST", base+"/v1/reservations", adminToken,
			fmt.Sprintf(`{"buyer": "u-%d", "lines": [{"pool": "drop-1", "qty": 1}]}`, i), http.StatusCreated)
		ids = append(ids, r["id"].(string))
	}
	waitFor("20 entries", `document.getElementById('stat-entries').textContent === '20'`, 5*time.Second)

	// The draw closes by itself; one winner pays, three let their hold
	// lapse, and their units go down the waitlist.
	waitFor("the draw to close", `document.getElementById('countdown-label').textContent === 'draw closed'`, 10*time.Second)
	waitFor("4 winners", `document.getElementById('stat-winners').textContent === '4'`, 5*time.Second)
	confirmed := false
	for _, id := range ids {
		if r := mustCall(t, "GET", base+"/v1/reservations/"+id, readToken, "", http.StatusOK); r["state"] == "active" {
			mustCall(t, "POST", base+"/v1/reservations/"+id+"/confirm", adminToken, "", http.StatusOK)
			confirmed = true
			break
		}
	}
	if !confirmed {
		t.Fatal("no active winner to confirm")
	}

	// Offers and expiries over time: wait for two rounds of expiry.
	waitFor("expiries", `Number(document.getElementById('stat-expired').textContent) >= 6`, 10*time.Second)
	waitFor("the chart", `document.getElementById('chart').dataset.rendered === '1' && Number(document.getElementById('chart').dataset.points) >= 12`, 5*time.Second)

	// The page shows what the API says (polls are 250 ms apart; the
	// cascade moves every 1.5 s, so they agree within a few polls).
	fields := []struct{ id, path string }{
		{"stat-entries", "stats.entries"}, {"stat-winners", "stats.winners"}, {"stat-waitlist", "waitlist.length"},
		{"stat-offers", "stats.offers"}, {"stat-expired", "stats.expired"}, {"stat-confirmed", "stats.confirmed"},
		{"stat-released", "stats.released"},
	}
	var mismatch string
	for deadline := time.Now().Add(5 * time.Second); ; {
		p := mustCall(t, "GET", page+"/v1/pools/drop-1", readToken, "", http.StatusOK)
		mismatch = ""
		for _, f := range fields {
			want := jsonPath(p, f.path)
			if got := num(t, textOf(f.id)); got != want {
				mismatch += fmt.Sprintf(" %s=%d (API %d)", f.id, got, want)
			}
		}
		stock := fmt.Sprintf("%d / %d / %d", jsonPath(p, "held"), jsonPath(p, "sold"), jsonPath(p, "available"))
		if got := textOf("stat-stock"); got != stock {
			mismatch += fmt.Sprintf(" stat-stock=%q (API %q)", got, stock)
		}
		if mismatch == "" {
			if jsonPath(p, "stats.entries") != 20 || jsonPath(p, "stats.winners") != 4 || jsonPath(p, "sold") != 1 {
				t.Fatalf("API pool after the drop: %v", p)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("page and API disagree:%s", mismatch)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The chart, as the browser drew it: both series visible, and above
	// the zero line (the rates were not all zero).
	chartPNG, err := chromedp.Run(bctx, chromedp.Screenshot(chromedp.ID("chart")))
	if err != nil {
		t.Fatalf("chart screenshot: %v", err)
	}
	pagePNG, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("page screenshot: %v", err)
	}
	out := os.Getenv("HOLDFAST_UI_SCREENSHOT_DIR")
	if out == "" {
		out = t.TempDir()
	}
	for name, b := range map[string][]byte{"chart.png": chartPNG, "dashboard.png": pagePNG} {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := png.Decode(bytes.NewReader(chartPNG))
	if err != nil {
		t.Fatalf("chart screenshot: %v", err)
	}
	for name, rgb := range map[string][3]int{"offers": offersRGB, "expired": expiredRGB} {
		all, raised := colourPixels(img, rgb)
		if all < 40 || raised < 10 {
			t.Errorf("chart: %d %s-coloured pixels, %d of them above the zero line; want a drawn, non-zero series (screenshots in %s)", all, name, raised, out)
		}
	}
	if errs := pageErrors(); len(errs) > 0 {
		t.Fatalf("JavaScript errors on the page: %v", errs)
	}
}

// jsonPath reads a number at a dotted path of a decoded JSON object.
func jsonPath(v map[string]any, path string) int64 {
	var cur any = v
	for _, k := range strings.Split(path, ".") {
		m, _ := cur.(map[string]any)
		cur = m[k]
	}
	f, _ := cur.(float64)
	return int64(f)
}

// colourPixels counts the pixels of img close to rgb, and those of them
// in the upper two thirds of the image (well above the chart's zero line).
func colourPixels(img image.Image, rgb [3]int) (all, raised int) {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			d := abs(int(r>>8)-rgb[0]) + abs(int(g>>8)-rgb[1]) + abs(int(bl>>8)-rgb[2])
			if d <= 30 {
				all++
				if y < b.Min.Y+b.Dy()*2/3 {
					raised++
				}
			}
		}
	}
	return all, raised
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
