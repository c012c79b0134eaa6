// Package ctl is the operator's command line, holdfast ctl: pools,
// reservations, cluster membership, backups and restores, over the HTTP API
// of any node (followers forward to the leader). Output is a table by
// default and JSON with --json.
package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is the node ctl talks to without HOLDFAST_ADDR or --addr.
const DefaultAddr = "http://127.0.0.1:8080"

// Client calls one node's HTTP API.
type Client struct {
	// Base is the node's URL, e.g. http://127.0.0.1:8080 or https://db1:8443.
	Base string
	// Token, if set, is sent as "Authorization: Bearer TOKEN".
	Token string
	// HTTP does the requests; Timeout bounds ordinary calls (backups use
	// their own context instead).
	HTTP *http.Client
	// Retries is how many times a 503 (leader change, node draining) is
	// retried, honouring Retry-After; only for requests safe to repeat.
	Retries int
}

// NewClient returns a Client for addr ("host:port" means http://host:port).
// caFile, if set, is a PEM bundle trusted for https in place of the
// system roots (self-signed deployments).
func NewClient(addr, token, caFile string) (*Client, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ctl: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ctl: CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{
		Base:    strings.TrimRight(addr, "/"),
		Token:   token,
		HTTP:    &http.Client{Transport: tr, Timeout: 30 * time.Second},
		Retries: 5,
	}, nil
}

// APIError is an error answer of the API.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the Retry-After header of a 503, if any.
	RetryAfter time.Duration
}

// Error renders the status, code and message.
func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// newIdempotencyKey makes a key for one ctl invocation, so that its own
// retries never apply a change twice.
func newIdempotencyKey() string {
	var b [12]byte
	rand.Read(b[:])
	return "ctl-" + hex.EncodeToString(b[:])
}

// request is one call.
type request struct {
	method, path string
	body         any  // marshalled as JSON when non-nil
	retry        bool // safe to repeat on 503
	idempotent   bool // send an Idempotency-Key (POST)
}

// do runs a request and decodes a 2xx JSON answer into out (a
// *json.RawMessage keeps it raw). Non-2xx answers are *APIError.
func (c *Client) do(ctx context.Context, r request, out any) error {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return err
		}
	}
	key := ""
	if r.idempotent {
		key = newIdempotencyKey()
	}
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, r.method, r.path, body, key)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("ctl: reading %s %s: %w", r.method, r.path, err)
		}
		if resp.StatusCode/100 == 2 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("ctl: %s %s: bad JSON answer: %w", r.method, r.path, err)
			}
			return nil
		}
		e := apiError(resp, b)
		if e.Status != http.StatusServiceUnavailable || !r.retry || attempt >= c.Retries {
			return e
		}
		wait := max(e.RetryAfter, 200*time.Millisecond)
		select {
		case <-ctx.Done():
			return e
		case <-time.After(wait):
		}
	}
}

func (c *Client) send(ctx context.Context, method, path string, body []byte, key string) (*http.Response, error) {
	return c.sendWith(ctx, c.HTTP, method, path, body, key)
}

func (c *Client) sendWith(ctx context.Context, hc *http.Client, method, path string, body []byte, key string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ctl: %s %s: %w", method, c.Base+path, err)
	}
	return resp, nil
}

func apiError(resp *http.Response, b []byte) *APIError {
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(b, &v) == nil && v.Error.Code != "" {
		e.Code, e.Message = v.Error.Code, v.Error.Message
	} else {
		e.Code, e.Message = http.StatusText(resp.StatusCode), strings.TrimSpace(string(b))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// Get fetches path into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, request{method: "GET", path: path, retry: true}, out)
}

// Member is one member as POST /v1/cluster/members takes it.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr,omitempty"`
	Voter    *bool  `json:"voter,omitempty"`
}

// ClusterStatus is GET /v1/cluster.
type ClusterStatus struct {
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
		APIAddr  string `json:"api_addr"`
		Suffrage string `json:"suffrage"`
		Leader   bool   `json:"leader"`
	} `json:"members"`
}

// AddMember asks the cluster to add (or promote) a member; it returns
// the leader's view of the cluster after the change.
func (c *Client) AddMember(ctx context.Context, m Member) (*ClusterStatus, error) {
	var st ClusterStatus
	if err := c.do(ctx, request{method: "POST", path: "/v1/cluster/members", body: m, retry: true}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ErrBackupIncomplete: the stream ended before the size announced.
var ErrBackupIncomplete = errors.New("ctl: backup stream ended early")

// Backup streams GET /v1/backup to w and returns the bytes written.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	// No overall timeout: a large backup takes as long as it takes; ctx
	// bounds it.
	hc := &http.Client{Transport: c.HTTP.Transport}
	for attempt := 0; ; attempt++ {
		resp, err := c.sendWith(ctx, hc, "GET", "/v1/backup", nil, "")
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			e := apiError(resp, b)
			if e.Status == http.StatusServiceUnavailable && attempt < c.Retries {
				time.Sleep(max(e.RetryAfter, 200*time.Millisecond))
				continue
			}
			return 0, e
		}
		k, err := io.Copy(w, resp.Body)
		resp.Body.Close()
		if err != nil {
			return k, fmt.Errorf("ctl: backup stream: %w", err)
		}
		if resp.ContentLength >= 0 && k != resp.ContentLength {
			return k, fmt.Errorf("%w: %d of %d bytes", ErrBackupIncomplete, k, resp.ContentLength)
		}
		return k, nil
	}
}
