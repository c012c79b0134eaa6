// Package auth holds holdfast's API tokens: the roles they carry, the
// token file that stores them hashed, and a Store that reloads that file
// (on SIGHUP) without ever dropping to an empty or half-read table. It
// knows nothing of HTTP: the api package maps routes to roles.
//
// The token file is text, one token per line:
//
//	# role      name           hash of the token
//	admin       ops-alice      sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//	checkout    checkout-svc   sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9
//	read        dashboard      sha256:baa5a0964d3320fbc0c6a922140453c8513ea24ab8fd0577034804a967248096
//
// Fields are separated by spaces or tabs; blank lines and lines starting
// with # are ignored. The hash is the SHA-256 of the token's bytes, hex
// encoded. Tokens must be long random strings (NewToken makes 256-bit
// ones): an unsalted hash is safe to store only because such a token
// cannot be guessed from it.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
)

// Role is what a token may do. Roles are ordered: admin > checkout > read,
// and a role allows everything a lower one does.
type Role uint8

// Roles, lowest first. None is the role an open endpoint requires (no
// token at all).
const (
	None Role = iota
	Read
	Checkout
	Admin
)

// String is the role's name in the token file.
func (r Role) String() string {
	switch r {
	case None:
		return "none"
	case Read:
		return "read"
	case Checkout:
		return "checkout"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseRole parses a role name: admin, checkout or read.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return Read, nil
	case "checkout":
		return Checkout, nil
	case "admin":
		return Admin, nil
	}
	return None, fmt.Errorf("unknown role %q (want admin, checkout or read)", s)
}

// Allows reports whether a token of role r may call an endpoint that
// requires role need: the hierarchy admin > checkout > read.
func (r Role) Allows(need Role) bool { return r >= need }

// Entry is one token of the file: its role, its name (for logs; never the
// token) and the SHA-256 of the token.
type Entry struct {
	Role Role
	Name string
	Hash [sha256.Size]byte
}

// Limits of a token file: it is read whole at start and on every reload.
const (
	MaxFileBytes  = 1 << 20
	MaxEntries    = 10000
	MaxNameBytes  = 64
	hashPrefix    = "sha256:"
	tokenPrefix   = "hf_"
	tokenRandSize = 32 // bytes of randomness in a NewToken token
)

// Table is a parsed token file. It is immutable.
type Table struct {
	entries []Entry
	byHash  map[[sha256.Size]byte]int // index into entries
}

// Len is the number of tokens.
func (t *Table) Len() int { return len(t.entries) }

// Hash is the SHA-256 of a token, as the file stores it.
func Hash(token []byte) [sha256.Size]byte { return sha256.Sum256(token) }

// Lookup finds the entry of a presented token. The token itself is never
// compared with anything: it is hashed, the hash finds its candidate
// entry, and the two hashes are compared with crypto/subtle. Whatever the
// timing of the lookup reveals is about SHA-256 outputs, which say nothing
// usable about any token (finding a token from its hash is a preimage
// attack). The cost is the same for 3 tokens or 10,000; comparing with
// every entry instead would cost about 100 ns per entry on every request.
func (t *Table) Lookup(token []byte) (Entry, bool) {
	h := Hash(token)
	i, ok := t.byHash[h]
	if !ok {
		return Entry{}, false
	}
	if subtle.ConstantTimeCompare(h[:], t.entries[i].Hash[:]) != 1 {
		return Entry{}, false
	}
	return t.entries[i], true
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@/-", c) >= 0) {
			return false
		}
	}
	return true
}

// Parse reads a token file. Any bad line fails the whole file (with its
// line number): a half-understood file must never be half applied. A file
// without tokens is refused too, as it would lock every client out.
func Parse(r io.Reader) (*Table, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("token file over %d bytes", MaxFileBytes)
	}
	t := &Table{byHash: map[[sha256.Size]byte]int{}}
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]int{} // line numbers
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxFileBytes)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want 3 fields (role name sha256:HEX), got %d", line, len(f))
		}
		role, err := ParseRole(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if !validName(f[1]) {
			return nil, fmt.Errorf("line %d: name must be 1 to %d bytes of [A-Za-z0-9._:@/-]", line, MaxNameBytes)
		}
		hexHash, ok := strings.CutPrefix(f[2], hashPrefix)
		if !ok {
			return nil, fmt.Errorf("line %d: hash must start with %q", line, hashPrefix)
		}
		var e Entry
		// The length first: hex.Decode writes past a short destination.
		if len(hexHash) != 2*sha256.Size {
			return nil, fmt.Errorf("line %d: hash must be %s followed by 64 hex digits", line, hashPrefix)
		}
		if _, err := hex.Decode(e.Hash[:], []byte(hexHash)); err != nil {
			return nil, fmt.Errorf("line %d: hash must be %s followed by 64 hex digits", line, hashPrefix)
		}
		if prev, dup := names[f[1]]; dup {
			return nil, fmt.Errorf("line %d: name %q already used on line %d", line, f[1], prev)
		}
		if prev, dup := hashes[e.Hash]; dup {
			return nil, fmt.Errorf("line %d: same token as line %d", line, prev)
		}
		if len(t.entries) == MaxEntries {
			return nil, fmt.Errorf("line %d: more than %d tokens", line, MaxEntries)
		}
		names[f[1]], hashes[e.Hash] = line, line
		e.Role, e.Name = role, f[1]
		t.byHash[e.Hash] = len(t.entries)
		t.entries = append(t.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.entries) == 0 {
		return nil, errors.New("token file holds no tokens")
	}
	return t, nil
}

// Load reads and parses the token file at path.
func Load(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// FormatEntry is the token file line for a token.
func FormatEntry(role Role, name string, token []byte) string {
	h := Hash(token)
	return role.String() + " " + name + " " + hashPrefix + hex.EncodeToString(h[:])
}

// NewToken returns a fresh token: "hf_" and 256 random bits, base64url.
func NewToken() (string, error) {
	var b [tokenRandSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Store is the live token table of a server, loaded from a file and
// reloaded on demand. Lookups never block on a reload.
type Store struct {
	path string
	cur  atomic.Pointer[Table]
}

// Open loads the token file at path; it fails if the file is unreadable
// or invalid.
func Open(path string) (*Store, error) {
	t, err := Load(path)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path}
	s.cur.Store(t)
	return s, nil
}

// Path is the token file's path.
func (s *Store) Path() string { return s.path }

// Len is the number of tokens in the current table.
func (s *Store) Len() int { return s.cur.Load().Len() }

// Reload reads the file again. On any error the current table stays in
// force and the error is returned; on success the new table replaces it
// at once for every later lookup.
func (s *Store) Reload() error {
	t, err := Load(s.path)
	if err != nil {
		return err
	}
	s.cur.Store(t)
	return nil
}

// Lookup finds a presented token in the current table (see Table.Lookup).
func (s *Store) Lookup(token []byte) (Entry, bool) { return s.cur.Load().Lookup(token) }
