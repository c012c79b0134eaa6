package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/raftstore"
)

// securityFlags are serve's auth and TLS flags (docs/operations.md, "Auth"
// and "TLS").
type securityFlags struct {
	authFile, tlsCert, tlsKey, tlsCA *string
	peerCA, peerCert, peerKey        *string
}

func addSecurityFlags(fs *flag.FlagSet) *securityFlags {
	return &securityFlags{
		authFile: fs.String("auth-file", "", "token file (role name sha256:HEX per line); reloaded on SIGHUP. Without it the API serves only on loopback"),
		tlsCert:  fs.String("tls-cert", "", "PEM certificate of the API (HTTPS); with --tls-key; reloaded on SIGHUP"),
		tlsKey:   fs.String("tls-key", "", "PEM key of --tls-cert"),
		tlsCA:    fs.String("tls-ca", "", "PEM CA bundle that verifies the other nodes' API certificates when forwarding (default: the system's roots)"),
		peerCA:   fs.String("peer-ca", "", "PEM CA of the nodes' Raft certificates: Raft over mutual TLS (with --peer-cert and --peer-key)"),
		peerCert: fs.String("peer-cert", "", "PEM certificate of this node for Raft (serverAuth and clientAuth, SAN = the --raft host)"),
		peerKey:  fs.String("peer-key", "", "PEM key of --peer-cert"),
	}
}

// security is what the flags loaded: nil fields are features turned off.
type security struct {
	auth       *auth.Store
	apiCert    atomic.Pointer[tls.Certificate]
	apiTLS     *tls.Config // serving the API
	forwardTLS *tls.Config // forwarding to the leader's API
	peerTLS    *tls.Config // Raft
	certFile   string
	keyFile    string
}

// isLoopback reports whether a listen address only accepts connections
// from this host: localhost or a loopback IP. An empty host (all
// interfaces) is not.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// load checks the flags together and loads their files. Without an auth
// file the API must listen on loopback: anything else is refused, so a
// node is never exposed without authentication by accident.
func (f *securityFlags) load(httpAddr, raftAddr string, log *slog.Logger) (*security, error) {
	s := &security{certFile: *f.tlsCert, keyFile: *f.tlsKey}
	if (*f.tlsCert == "") != (*f.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if *f.tlsCA != "" && *f.tlsCert == "" {
		return nil, errors.New("--tls-ca verifies the other nodes' HTTPS API: it needs --tls-cert and --tls-key")
	}
	if n := countSet(*f.peerCA, *f.peerCert, *f.peerKey); n != 0 && n != 3 {
		return nil, errors.New("--peer-ca, --peer-cert and --peer-key go together")
	}

	if *f.authFile == "" {
		if !isLoopback(httpAddr) {
			return nil, fmt.Errorf("--http %s is not a loopback address, and without --auth-file anyone who reaches it could change stock: "+
				"pass --auth-file (see docs/operations.md, \"Auth\") or listen on 127.0.0.1", httpAddr)
		}
	} else {
		st, err := auth.Open(*f.authFile)
		if err != nil {
			return nil, fmt.Errorf("--auth-file: %w", err)
		}
		s.auth = st
		log.Info("auth on: bearer tokens required", "file", st.Path(), "tokens", st.Len())
	}

	if *f.tlsCert != "" {
		if err := s.loadAPICert(); err != nil {
			return nil, err
		}
		s.apiTLS = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.apiCert.Load(), nil },
		}
		s.forwardTLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if *f.tlsCA != "" {
			pem, err := os.ReadFile(*f.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found", *f.tlsCA)
			}
			s.forwardTLS.RootCAs = pool
		}
	}

	if *f.peerCA != "" {
		c, err := raftstore.LoadPeerTLS(*f.peerCA, *f.peerCert, *f.peerKey)
		if err != nil {
			return nil, fmt.Errorf("--peer-ca/--peer-cert/--peer-key: %w", err)
		}
		s.peerTLS = c
	} else if !isLoopback(raftAddr) {
		log.Warn("Raft traffic is plain TCP: any host that reaches --raft can talk to this node as a peer; use --peer-ca, --peer-cert and --peer-key", "raft", raftAddr)
	}
	if s.auth == nil {
		log.Warn("no --auth-file: the API accepts requests without a token, so it listens on loopback only", "http", httpAddr)
	}
	return s, nil
}

func countSet(vals ...string) int {
	n := 0
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	return n
}

func (s *security) loadAPICert() error {
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	s.apiCert.Store(&c)
	return nil
}

// authenticator is the API's Authenticator: nil (a nil interface, not a
// nil *auth.Store) when auth is off.
func (s *security) authenticator() api.Authenticator {
	if s.auth == nil {
		return nil
	}
	return s.auth
}

// listener serves TLS on ln when the API has a certificate.
func (s *security) listener(ln net.Listener) net.Listener {
	if s.apiTLS == nil {
		return ln
	}
	return tls.NewListener(ln, s.apiTLS)
}

// reload re-reads the auth file and the API certificate. A file that
// fails to load leaves what was loaded before in force.
func (s *security) reload(log *slog.Logger) {
	if s.auth == nil && s.certFile == "" {
		log.Info("SIGHUP: nothing to reload (no --auth-file, no --tls-cert)")
	}
	if s.auth != nil {
		if err := s.auth.Reload(); err != nil {
			log.Error("auth file reload failed; the previous tokens stay in force", "file", s.auth.Path(), "err", err)
		} else {
			log.Info("auth file reloaded", "file", s.auth.Path(), "tokens", s.auth.Len())
		}
	}
	if s.certFile != "" {
		if err := s.loadAPICert(); err != nil {
			log.Error("TLS certificate reload failed; the previous certificate stays in use", "err", err)
		} else {
			log.Info("TLS certificate reloaded", "file", s.certFile)
		}
	}
}

// reloadOnSIGHUP reloads on every SIGHUP until stop is called. SIGHUP is
// caught even with nothing to reload, so a stray one never kills a node.
func (s *security) reloadOnSIGHUP(log *slog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				s.reload(log)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
