package api_test

// Hostile clients over real sockets: slow (slowloris) and idle
// connections, oversized, truncated and malformed requests, invalid
// UTF-8 and a request flood on one pool. Each test checks that the node
// keeps serving an ordinary client within a bound while the attack runs,
// that its memory stays bounded, and that refused requests change
// nothing. The figures are logged (go test -v -run Hostile ./api).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/api"
)

// hostileServer serves a second API on n's node, with lim, on a port of
// its own, and returns its address.
func hostileServer(t testing.TB, n *testNode, lim api.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{Node: n.node, Alloc: n.machine.Alloc, Carts: n.machine, Registry: prometheus.NewRegistry(),
		Logger: quietLogger(), RequestTimeout: 5 * time.Second, Limits: lim})
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// rawResponse is an answer read off a raw connection.
type rawResponse struct {
	status int
	body   []byte
}

// rawExchange writes raw to a new connection to addr and reads one
// response (within 10 s).
func rawExchange(t testing.TB, addr string, raw []byte) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(raw) // may fail once the server has answered and closed
	return readRaw(t, c)
}

func readRaw(t testing.TB, c net.Conn) rawResponse {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{resp.StatusCode, b}
}

// wantRawError checks a refusal: status and the contract's error format
// with code.
func wantRawError(t testing.TB, what string, r rawResponse, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	e, err := errorShape(r.status, r.body)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if code != "" && e["code"] != code {
		t.Fatalf("%s: code %v, want %s", what, e["code"], code)
	}
}

func request(method, path, body string, headers ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: holdfast\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, len(body))
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.Bytes()
}

// memory is the process's heap and goroutine stacks in use (after a
// GC) and its resident set.
type memory struct {
	heapMiB, rssMiB float64
	goroutines      int
}

func measureMemory(t testing.TB) memory {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{heapMiB: float64(ms.HeapInuse+ms.StackInuse) / (1 << 20), goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			m.rssMiB = kb / 1024
		}
	}
	return m
}

// prober is an ordinary client of the node under attack: every interval
// it reserves one unit of its own pool on a connection of its own and
// records how long the answer took.
type prober struct {
	mu        sync.Mutex
	latencies []time.Duration
	failures  []string
	stop      chan struct{}
	done      chan struct{}
}

func startProber(addr, pool string, interval time.Duration) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: 1, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			body := `{"buyer":"prober-` + strconv.Itoa(i) + `","lines":[{"pool":"` + pool + `","qty":1}],"ttl_ms":1000}`
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.Header.SetMethod("POST")
			req.SetRequestURI("http://" + addr + "/v1/reservations")
			req.Header.SetContentType("application/json")
			req.SetBodyString(body)
			start := time.Now()
			err := hc.DoTimeout(req, resp, 10*time.Second)
			d := time.Since(start)
			p.mu.Lock()
			switch {
			case err != nil:
				p.failures = append(p.failures, err.Error())
			case resp.StatusCode() != 201:
				p.failures = append(p.failures, fmt.Sprintf("%d %s", resp.StatusCode(), resp.Body()))
			default:
				p.latencies = append(p.latencies, d)
			}
			p.mu.Unlock()
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
	}()
	return p
}

// finish stops the prober and checks that every probe succeeded within
// bound; it returns the median and the worst latency.
func (p *prober) finish(t testing.TB, bound time.Duration) (p50, worst time.Duration) {
	t.Helper()
	close(p.stop)
	<-p.done
	if len(p.failures) > 0 {
		t.Fatalf("%d of %d probes failed during the attack: %v", len(p.failures), len(p.failures)+len(p.latencies), p.failures)
	}
	if len(p.latencies) < 5 {
		t.Fatalf("only %d probes ran", len(p.latencies))
	}
	slices.Sort(p.latencies)
	p50, worst = p.latencies[len(p.latencies)/2], p.latencies[len(p.latencies)-1]
	if worst > bound {
		t.Fatalf("an ordinary request took %v during the attack (median %v), bound %v", worst, p50, bound)
	}
	return p50, worst
}

// probeBound is how long an ordinary request may take while the node is
// attacked. Normal answers take milliseconds; the bound is generous for a
// shared 2-core machine, and still far below the request timeout.
const probeBound = 2 * time.Second

// TestHostileSlowClients: clients that dribble their headers or their
// body a byte at a time, and idle kept-alive connections, are cut off
// by ReadTimeout and IdleTimeout, while an ordinary client is served
// throughout.
func TestHostileSlowClients(t *testing.T) {
	n := startCluster(t, 1)[0]
	const readTimeout, idleTimeout = time.Second, 2 * time.Second
	addr := hostileServer(t, n, api.Limits{ReadTimeout: readTimeout, IdleTimeout: idleTimeout, WriteTimeout: time.Second})
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/probe", `{"on_hand": 1000000000}`), 201)
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/slow", `{"on_hand": 10}`), 201)
	before := allPools(t, n)
	probe := startProber(addr, "probe", 50*time.Millisecond)

	const perKind = 100
	// Every dribbled request would take 10 s at one byte per 50 ms.
	pad := strings.Repeat("x", 200)
	body := `{"buyer":"slow","lines":[{"pool":"slow","qty":1}],"pad":"` + pad + `"}`
	kinds := map[string]struct {
		head, dribble string
	}{
		"headers": {"", string(request("POST", "/v1/reservations", body, "X-Pad", pad))},
		"body":    {"POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n", body},
		"idle":    {"GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n", ""},
	}
	type cut struct {
		kind  string
		after time.Duration
		reply string // the first bytes the server sent, if any
	}
	cuts := make(chan cut, perKind*len(kinds))
	var wg sync.WaitGroup
	for kind, k := range kinds {
		for range perKind {
			wg.Go(func() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					cuts <- cut{kind: kind, after: -1, reply: err.Error()}
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second)) // no write or read may block the test for good
				start := time.Now()
				c.Write([]byte(k.head))
				closed := make(chan string, 1)
				go func() {
					all, _ := io.ReadAll(c) // until the server closes
					closed <- string(all)
				}()
				for i := 0; i < len(k.dribble); i++ {
					select {
					case reply := <-closed:
						cuts <- cut{kind, time.Since(start), reply}
						return
					case <-time.After(50 * time.Millisecond):
					}
					c.Write([]byte{k.dribble[i]})
				}
				select {
				case reply := <-closed:
					cuts <- cut{kind, time.Since(start), reply}
				case <-time.After(20 * time.Second):
					cuts <- cut{kind, -1, "never closed"}
				}
			})
		}
	}
	wg.Wait()
	close(cuts)
	p50, worst := probe.finish(t, probeBound)

	slowest := map[string]time.Duration{}
	for c := range cuts {
		limit, first := readTimeout, "HTTP/1.1 400"
		if c.kind == "idle" {
			limit, first = idleTimeout, "HTTP/1.1 200" // its one request, then nothing
		}
		if c.after < limit-100*time.Millisecond || c.after > limit+3*time.Second {
			t.Fatalf("%s: connection closed after %v, want about %v: %q", c.kind, c.after, limit, c.reply)
		}
		if !strings.HasPrefix(c.reply, first) {
			t.Fatalf("%s: server sent %q, want %s...", c.kind, c.reply, first)
		}
		if c.kind != "idle" {
			if _, err := errorShape(400, []byte(c.reply[strings.Index(c.reply, "\r\n\r\n")+4:])); err != nil {
				t.Fatalf("%s: %v", c.kind, err)
			}
		}
		slowest[c.kind] = max(slowest[c.kind], c.after)
	}
	if after := allPools(t, n); !reflect.DeepEqual(before["slow"], after["slow"]) {
		t.Fatalf("a cut-off request changed its pool:\n%v\n%v", before["slow"], after["slow"])
	}
	t.Logf("%d slow-header, %d slow-body, %d idle connections: cut after at most %v, %v, %v; ordinary reserve during the attack: median %v, worst %v",
		perKind, perKind, perKind, slowest["headers"], slowest["body"], slowest["idle"], p50, worst)
}

// raiseFileLimit makes room for n more open files in this process.
func raiseFileLimit(t testing.TB, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	need := n + 4096 // what the nodes, Pebble and the test already hold
	if rl.Cur >= need {
		return
	}
	rl.Cur = need
	rl.Max = max(rl.Max, need) // raising the hard limit needs root (CAP_SYS_RESOURCE)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("this test needs %d open files (RLIMIT_NOFILE): %v", need, err)
	}
}

// idleClientEnv makes the test binary a client holding idle
// connections (see TestHostileIdleClient).
const idleClientEnv = "HOLDFAST_IDLE_CLIENT_ADDR"

// TestHostileIdleConnections: 10,000 kept-alive connections that each
// made one request and then stay silent cost the node a bounded amount
// of memory, and the node keeps answering an ordinary client within the
// bound. The connections are held by a child process (this test binary
// running TestHostileIdleClient), so that each process needs only 10,000
// descriptors and the memory measured here is the node's alone.
func TestHostileIdleConnections(t *testing.T) {
	const idle = 10000
	raiseFileLimit(t, idle)
	n := startCluster(t, 1)[0]
	addr := hostileServer(t, n, api.Limits{})
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/probe", `{"on_hand": 1000000000}`), 201)
	base := measureMemory(t)

	child := exec.Command(os.Args[0], "-test.run=^TestHostileIdleClient$", "-test.count=1")
	child.Env = append(os.Environ(), idleClientEnv+"="+addr, "HOLDFAST_IDLE_CLIENT_CONNS="+strconv.Itoa(idle))
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill() // if a check below fails first
	lines := bufio.NewScanner(stdout)
	ready := false
	for lines.Scan() {
		if l := lines.Text(); strings.HasPrefix(l, "idle-client ") {
			if l != "idle-client ready" {
				t.Fatalf("idle client: %s", l)
			}
			ready = true
			break
		}
	}
	if !ready {
		t.Fatalf("idle client ended before its connections were open: %v", child.Wait())
	}
	opened := time.Since(start)
	held := measureMemory(t)

	probe := startProber(addr, "probe", 50*time.Millisecond)
	time.Sleep(2 * time.Second)
	p50, worst := probe.finish(t, probeBound)

	stdin.Close() // the child closes its connections and exits
	go io.Copy(io.Discard, stdout)
	if err := child.Wait(); err != nil {
		t.Fatalf("idle client: %v", err)
	}
	// The server notices the closes; its worker goroutines, idle, end
	// after fasthttp's MaxIdleWorkerDuration (10 s) and one more sweep.
	closed := time.Now()
	for time.Since(closed) < 30*time.Second && runtime.NumGoroutine() > base.goroutines+100 {
		time.Sleep(250 * time.Millisecond)
	}
	released := measureMemory(t)
	perConnKiB := (held.heapMiB - base.heapMiB) * 1024 / idle
	t.Logf("%d idle connections opened in %v; node heap+stacks %.1f -> %.1f MiB (%.2f KiB per connection), RSS %.1f -> %.1f MiB; "+
		"%v after they closed: heap+stacks %.1f MiB, RSS %.1f MiB, goroutines %d -> %d -> %d; ordinary reserve meanwhile: median %v, worst %v",
		idle, opened.Round(time.Millisecond), base.heapMiB, held.heapMiB, perConnKiB, base.rssMiB, held.rssMiB,
		time.Since(closed).Round(time.Second), released.heapMiB, released.rssMiB, base.goroutines, held.goroutines, released.goroutines, p50, worst)
	// A goroutine's stack is 8 KiB at most while parked; a read buffer
	// held while idle would add 16 KiB.
	if perConnKiB > 12 {
		t.Fatalf("idle connections cost %.1f KiB of heap and stack each, want under 12", perConnKiB)
	}
	if d := released.heapMiB - base.heapMiB; d > 16 {
		t.Fatalf("heap still %.1f MiB above the start after the connections closed", d)
	}
}

// TestHostileIdleClient is the child process of
// TestHostileIdleConnections; run directly it has nothing to do. It opens
// the connections, makes one request on each, reports, and holds them
// until its stdin closes.
func TestHostileIdleClient(t *testing.T) {
	addr := os.Getenv(idleClientEnv)
	if addr == "" {
		return // not started by TestHostileIdleConnections
	}
	idle, _ := strconv.Atoi(os.Getenv("HOLDFAST_IDLE_CLIENT_CONNS"))
	raiseFileLimit(t, uint64(idle))
	conns := make([]net.Conn, idle)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			br := bufio.NewReaderSize(nil, 1024)
			for {
				i := int(next.Add(1)) - 1
				if i >= idle {
					return
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failed.CompareAndSwap(nil, err.Error())
					return
				}
				conns[i] = c
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.WriteString(c, "GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
				br.Reset(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					failed.CompareAndSwap(nil, err.Error())
					return
				}
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != 200 {
					failed.CompareAndSwap(nil, "health: "+resp.Status)
					return
				}
				c.SetDeadline(time.Time{})
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		fmt.Printf("idle-client failed: %v\n", f)
		return
	}
	fmt.Println("idle-client ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.(*net.TCPConn).SetLinger(0) // reset: leave no 10,000 ports in TIME_WAIT
		c.Close()
	}
}

// TestHostileBodies: bodies over 1 MiB are 413 (announced, sent or
// chunked), exactly 1 MiB is read, truncated and malformed requests are
// 400, all in the contract's error format, and none changes a pool.
func TestHostileBodies(t *testing.T) {
	n := startCluster(t, 1)[0]
	addr := hostileServer(t, n, api.Limits{ReadTimeout: time.Second})
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/b", `{"on_hand": 10}`), 201)
	before := allPools(t, n)
	reserve := `{"buyer":"b1","lines":[{"pool":"b","qty":1}]}`
	pad := func(s string, size int) string { return s + strings.Repeat(" ", size-len(s)) }

	wantRawError(t, "1 MiB + 1 sent", rawExchange(t, addr, request("POST", "/v1/reservations", pad(reserve, api.MaxBodyBytes+1))), 413, "payload_too_large")

	// Announced but never sent: refused at once, without waiting for it.
	start := time.Now()
	wantRawError(t, "10 MiB announced", rawExchange(t, addr, []byte("POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Length: 10485760\r\n\r\n")), 413, "payload_too_large")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("an announced oversized body took %v to refuse", d)
	}

	var chunked bytes.Buffer
	chunked.WriteString("POST /v1/reservations HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
	chunk := strings.Repeat(" ", 64<<10)
	for range 17 { // 1 MiB + 64 KiB
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", len(chunk), chunk)
	}
	chunked.WriteString("0\r\n\r\n")
	wantRawError(t, "chunked over 1 MiB", rawExchange(t, addr, chunked.Bytes()), 413, "payload_too_large")

	// Cut short: the client half-closes, or stalls until ReadTimeout.
	full := request("POST", "/v1/reservations", reserve)
	for _, stall := range []bool{false, true} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(full[:len(full)-20])
		if !stall {
			c.(*net.TCPConn).CloseWrite()
		}
		wantRawError(t, fmt.Sprintf("truncated body (stalled %v)", stall), readRaw(t, c), 400, "invalid_argument")
		c.Close()
	}
	wantRawError(t, "truncated JSON", rawExchange(t, addr, request("POST", "/v1/reservations", reserve[:30])), 400, "invalid_argument")
	wantRawError(t, "garbage request line", rawExchange(t, addr, []byte("\x00\xff GARBAGE\r\n\r\n")), 400, "invalid_argument")
	wantRawError(t, "headers over 16 KiB", rawExchange(t, addr, request("GET", "/v1/pools/b", "", "X-Big", strings.Repeat("y", 20<<10))), 400, "invalid_argument")
	wantRawError(t, "bad Content-Length", rawExchange(t, addr, []byte("POST /v1/reservations HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n")), 400, "invalid_argument")

	if after := allPools(t, n); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused request changed the pools:\n%v\n%v", before, after)
	}
	// Exactly 1 MiB is within the limit.
	r := rawExchange(t, addr, request("POST", "/v1/reservations", pad(reserve, api.MaxBodyBytes)))
	if r.status != 201 {
		t.Fatalf("a 1 MiB body: %d %s", r.status, r.body)
	}
}

// TestHostileInvalidUTF8: invalid UTF-8 in path ids (raw and escaped),
// JSON strings and the Idempotency-Key header is refused in the
// contract's format and changes nothing.
func TestHostileInvalidUTF8(t *testing.T) {
	n := startCluster(t, 1)[0]
	addr := hostileServer(t, n, api.Limits{})
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/u", `{"on_hand": 10}`), 201)
	cart := cartID(cartNew(t, n, "user:u"))
	cartAddSKU(t, n, cart, "u", 1)
	beforePools, beforeCart := allPools(t, n), cartContents(t, n, cart)

	for _, c := range []struct {
		what, method, path, body string
		headers                  []string
		status                   int
	}{
		{"raw byte in a pool id", "PUT", "/v1/pools/u\xff", `{"on_hand": 1}`, nil, 400},
		{"escaped byte in a pool id", "PUT", "/v1/pools/u%FF", `{"on_hand": 1}`, nil, 400},
		{"overlong encoding in a pool id", "POST", "/v1/pools/%C0%AF/adjust", `{"delta": 1}`, nil, 400},
		{"escaped byte in a cart id", "GET", "/v1/carts/c_%ff", ``, nil, 404},
		{"escaped byte in a line id", "PATCH", "/v1/carts/" + cart + "/lines/l_%fe", `{"qty":1,"line_version":1}`, nil, 404},
		{"escaped byte in a reservation id", "POST", "/v1/reservations/r_%80/confirm", ``, nil, 404},
		{"escaped byte in a checkout id", "POST", "/v1/checkouts/co_%ff/confirm", ``, nil, 404},
		{"buyer", "POST", "/v1/reservations", `{"buyer":"b\xff","lines":[{"pool":"u","qty":1}]}`, nil, 400},
		{"pool in a line", "POST", "/v1/reservations", `{"buyer":"b","lines":[{"pool":"\xc3\x28","qty":1}]}`, nil, 400},
		{"surrogate half", "POST", "/v1/reservations", "{\"buyer\":\"b\xed\xa0\x80\",\"lines\":[{\"pool\":\"u\",\"qty\":1}]}", nil, 400},
		{"owner", "POST", "/v1/carts", `{"owner":"user:\xff"}`, nil, 400},
		{"sku", "POST", "/v1/carts/" + cart + "/lines", `{"sku":"\xff","qty":1}`, nil, 400},
		{"attrs key", "POST", "/v1/carts/" + cart + "/lines", `{"sku":"s","qty":1,"attrs":{"\xfe":"v"}}`, nil, 400},
		{"merge source", "POST", "/v1/carts/" + cart + "/merge", `{"source":"c_\xff"}`, nil, 400},
		{"draw seed", "PUT", "/v1/pools/u2", `{"on_hand":1,"mode":"draw","draw":{"opens_at":"2030-01-01T00:00:00Z","closes_at":"2030-01-02T00:00:00Z","seed":"\xff"}}`, nil, 400},
		{"idempotency key", "POST", "/v1/pools/u/adjust", `{"delta": 1}`, []string{"Idempotency-Key", "k\xff"}, 400},
	} {
		r := rawExchange(t, addr, request(c.method, c.path, c.body, c.headers...))
		wantRawError(t, c.what, r, c.status, "")
	}
	if after := allPools(t, n); !reflect.DeepEqual(beforePools, after) {
		t.Fatalf("invalid UTF-8 changed the pools:\n%v\n%v", beforePools, after)
	}
	if after := cartContents(t, n, cart); after != beforeCart {
		t.Fatalf("invalid UTF-8 changed the cart:\n%s\n%s", beforeCart, after)
	}
}

// TestHostileFlood: 64 clients hammer one pool with reservations and
// reads as fast as they can; an ordinary client on another pool is still
// answered within the bound, no flood request gets a 5xx, the pool's
// books balance, and the heap is back near where it started afterwards.
func TestHostileFlood(t *testing.T) {
	n := startCluster(t, 1)[0]
	addr := hostileServer(t, n, api.Limits{})
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/hot", `{"on_hand": 500, "per_buyer_limit": 1000000}`), 201)
	wantStatus(t, n, n.call(t, "PUT", "/v1/pools/probe", `{"on_hand": 1000000000}`), 201)
	base := measureMemory(t)
	probe := startProber(addr, "probe", 50*time.Millisecond)

	const clients, duration = 64, 3 * time.Second
	var statuses [600]atomic.Int64
	var errs atomic.Int64
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			hc := &fasthttp.HostClient{Addr: addr, MaxConns: 1, ReadTimeout: 10 * time.Second}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := 0; time.Now().Before(stop); i++ {
				req.Reset()
				if i%2 == 0 {
					req.Header.SetMethod("POST")
					req.SetRequestURI("http://" + addr + "/v1/reservations")
					req.SetBodyString(`{"buyer":"f` + strconv.Itoa(g) + `","lines":[{"pool":"hot","qty":1}],"ttl_ms":500}`)
				} else {
					req.SetRequestURI("http://" + addr + "/v1/pools/hot")
				}
				if err := hc.DoTimeout(req, resp, 10*time.Second); err != nil {
					errs.Add(1)
					continue
				}
				statuses[min(resp.StatusCode(), len(statuses)-1)].Add(1)
			}
		})
	}
	wg.Wait()
	p50, worst := probe.finish(t, probeBound)
	var total int64
	summary := map[int]int64{}
	for code := range statuses {
		if c := statuses[code].Load(); c > 0 {
			summary[code] = c
			total += c
			if code >= 500 {
				t.Errorf("%d flood requests answered %d", c, code)
			}
		}
	}
	if errs.Load() > 0 {
		t.Errorf("%d flood requests failed at the transport", errs.Load())
	}
	for id, p := range allPools(t, n) {
		held, sold, avail, onHand := num(t, p, "held"), num(t, p, "sold"), num(t, p, "available"), num(t, p, "on_hand")
		if held+sold+avail != onHand || avail < 0 {
			t.Fatalf("pool %s unbalanced after the flood: %v", id, p)
		}
	}
	after := measureMemory(t)
	t.Logf("flood: %d requests in %v by %d clients (%.0f/s), statuses %v; ordinary reserve meanwhile: median %v, worst %v; heap+stacks %.1f -> %.1f MiB, RSS %.1f -> %.1f MiB",
		total, duration, clients, float64(total)/duration.Seconds(), summary, p50, worst, base.heapMiB, after.heapMiB, base.rssMiB, after.rssMiB)
	// What stays is the reservations' records and the idempotency-free
	// refusals' demand counters: far below this.
	if d := after.heapMiB - base.heapMiB; d > 64 {
		t.Fatalf("heap grew by %.1f MiB during the flood", d)
	}
}

// TestHostileConnectionLimit: past Limits.MaxConns a new connection is
// answered 503 unavailable in the contract's format (with Retry-After
// and X-Holdfast-Node) and closed; once a connection closes, its place
// serves again.
func TestHostileConnectionLimit(t *testing.T) {
	n := startCluster(t, 1)[0]
	const limit = 5
	addr := hostileServer(t, n, api.Limits{MaxConns: limit})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	health := []byte("GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
	for range limit {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(health)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection within the limit: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("connection over the limit: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	c.Close()
	wantRawError(t, "connection over the limit", rawResponse{resp.StatusCode, body}, 503, "unavailable")
	if resp.Header.Get("Retry-After") != "1" || resp.Header.Get("X-Holdfast-Node") != n.id || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("connection over the limit: headers %v", resp.Header)
	}

	held[0].Close()
	held = held[1:]
	for deadline := time.Now().Add(5 * time.Second); ; {
		r := rawExchange(t, addr, health)
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed place does not serve: %d %s", r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fdServerEnv makes the test binary a node API limited to a few open
// files (see TestHostileFDServer).
const fdServerEnv = "HOLDFAST_FD_SERVER"

// TestHostileDescriptorExhaustion: a connection flood that exhausts the
// node's file descriptors (accept fails with EMFILE) must not end its
// API: once the flood's connections close, the node serves again. The
// node is a child process (TestHostileFDServer) whose open-file limit is
// lowered to a few descriptors above what it uses.
func TestHostileDescriptorExhaustion(t *testing.T) {
	child := exec.Command(os.Args[0], "-test.run=^TestHostileFDServer$", "-test.count=1")
	child.Env = append(os.Environ(), fdServerEnv+"=1")
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		child.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	var addr string
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "fd-server "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("the child server did not start")
	}
	go io.Copy(io.Discard, stdout)
	health := []byte("GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
	if r := rawExchange(t, addr, health); r.status != 200 {
		t.Fatalf("before the flood: %d %s", r.status, r.body)
	}

	// 200 connections against a limit of 32 spare descriptors: the kernel
	// completes the handshakes, the node's accepts fail.
	var flood []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break // the backlog is full too
		}
		flood = append(flood, c)
	}
	time.Sleep(500 * time.Millisecond)
	for _, c := range flood {
		c.Close()
	}
	start := time.Now()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.Write(health)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the node did not serve again within 15 s of the flood ending (%d connections)", len(flood))
		}
	}
	t.Logf("%d flood connections against 32 spare descriptors; serving again %v after they closed", len(flood), time.Since(start).Round(time.Millisecond))
}

// TestHostileFDServer is the child process of
// TestHostileDescriptorExhaustion; run directly it has nothing to do.
func TestHostileFDServer(t *testing.T) {
	if os.Getenv(fdServerEnv) == "" {
		return // not started by TestHostileDescriptorExhaustion
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{Node: &pointingNode{id: "fd", leaderID: "fd", leaderAddr: ln.Addr().String()},
		Registry: prometheus.NewRegistry(), Logger: quietLogger()})
	go srv.Serve(ln)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	rl := syscall.Rlimit{Cur: uint64(len(fds) + 32), Max: uint64(len(fds) + 32)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	fmt.Println("fd-server", ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
}
