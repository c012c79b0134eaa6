package raftstore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/holdfast/holdfast/raftstore/internal/logstore"
)

// A backup file is:
//
//	holdfast-backup 1\n          magic and format version
//	{"format":1,...}\n           BackupHeader as one line of JSON
//	body                         the state machine's snapshot stream, BodyBytes long
//
// The body is exactly what StateMachine.Snapshot persists, so a restore
// hands it to StateMachine.Restore through an ordinary Raft snapshot.

// BackupFormat is the backup format version this code writes and reads.
const BackupFormat = 1

const backupMagic = "holdfast-backup"

// maxBackupHeaderBytes bounds the header line a reader accepts.
const maxBackupHeaderBytes = 4 << 10

// Backup errors.
var (
	// ErrBadBackup: the file is not a backup this version can read, or
	// its checksum or length does not match.
	ErrBadBackup = errors.New("raftstore: not a valid backup")
	// ErrNotEmpty: a restore needs an empty data directory.
	ErrNotEmpty = errors.New("raftstore: data directory is not empty")
)

// BackupHeader describes a backup.
type BackupHeader struct {
	Format int `json:"format"`
	// ClusterTime is the log clock of the captured state (RFC 3339, ms).
	ClusterTime   string `json:"cluster_time"`
	ClusterTimeMs int64  `json:"cluster_time_ms"`
	// LastIndex is the Raft index the state includes everything up to.
	LastIndex uint64 `json:"last_index"`
	Term      uint64 `json:"term"`
	// BodyBytes and SHA256 are the length and checksum of the body.
	BodyBytes int64  `json:"body_bytes"`
	SHA256    string `json:"sha256"`
	// Node took it, at CreatedAt (wall clock, RFC 3339).
	Node      string `json:"node"`
	CreatedAt string `json:"created_at"`
}

func formatMs(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// BackupStream is an open backup: Header, then Size bytes to read (the
// whole file, header lines included). Close removes its spool file.
type BackupStream struct {
	Header BackupHeader
	Size   int64
	r      io.Reader
	f      *os.File
}

// Read reads the backup file: header lines, then body.
func (b *BackupStream) Read(p []byte) (int, error) { return b.r.Read(p) }

// Close releases the stream.
func (b *BackupStream) Close() error {
	err := b.f.Close()
	os.Remove(b.f.Name())
	return err
}

// OpenBackup captures a consistent copy of the state at a linearizable
// point: it runs on the leader, commits an entry of its own (so every
// write acknowledged before the call is applied here) and then takes a
// Raft snapshot, which includes that entry. The snapshot's body is spooled
// to a file in the data directory while its checksum is computed, so the
// header can come first; the caller streams the result and closes it.
func (n *Node) OpenBackup(ctx context.Context) (*BackupStream, error) {
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	var (
		meta *raft.SnapshotMeta
		rc   io.ReadCloser
		mark *snapMark
	)
	for attempt := 0; ; attempt++ {
		// The entry is the linearization point, and makes sure the
		// snapshot has something new to capture.
		if err := waitFuture(ctx, n.raft.Apply(appendBatchHeader(nil, n.NowMs(), 0), n.cfg.ApplyTimeout)); err != nil {
			return nil, err
		}
		f := n.raft.Snapshot()
		err := waitFuture(ctx, f)
		if err == nil {
			meta, rc, err = f.Open()
		}
		if err != nil {
			return nil, fmt.Errorf("raftstore: backup snapshot: %w", err)
		}
		mark = n.fsm.lastSnap.Load()
		if mark != nil && mark.applied <= meta.Index {
			break
		}
		// An automatic snapshot ran right after ours: its clock is not
		// ours. Rare; take another.
		rc.Close()
		if attempt == 2 {
			return nil, fmt.Errorf("raftstore: backup: snapshots keep racing")
		}
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	if _, err := readMembers(br); err != nil {
		return nil, err
	}
	spool, err := os.CreateTemp(n.cfg.DataDir, "backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("raftstore: backup spool: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			spool.Close()
			os.Remove(spool.Name())
		}
	}()
	h := sha256.New()
	body, err := io.Copy(io.MultiWriter(spool, h), br)
	if err != nil {
		return nil, fmt.Errorf("raftstore: backup spool: %w", err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("raftstore: backup spool: %w", err)
	}
	hdr := BackupHeader{
		Format:        BackupFormat,
		ClusterTime:   formatMs(mark.clockMs),
		ClusterTimeMs: mark.clockMs,
		LastIndex:     meta.Index,
		Term:          meta.Term,
		BodyBytes:     body,
		SHA256:        hex.EncodeToString(h.Sum(nil)),
		Node:          n.cfg.ID,
		CreatedAt:     time.Now().UTC().Format(time.RFC3339),
	}
	head, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	lines := fmt.Sprintf("%s %d\n%s\n", backupMagic, BackupFormat, head)
	ok = true
	n.log.Info("backup taken", "last_index", meta.Index, "cluster_time", hdr.ClusterTime, "bytes", body)
	return &BackupStream{
		Header: hdr,
		Size:   int64(len(lines)) + body,
		r:      io.MultiReader(strings.NewReader(lines), spool),
		f:      spool,
	}, nil
}

// readMembers reads the member registry that starts an FSM snapshot.
func readMembers(r *bufio.Reader) (map[string]string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<16 {
		return nil, fmt.Errorf("%w: snapshot header", errCorruptEntry)
	}
	members := make(map[string]string, n)
	for range n {
		id, err1 := readString(r)
		addr, err2 := readString(r)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: snapshot members", errCorruptEntry)
		}
		members[id] = addr
	}
	return members, nil
}

// ReadBackupHeader reads a backup's two header lines, leaving r at the
// start of the body.
func ReadBackupHeader(r *bufio.Reader) (BackupHeader, error) {
	var hdr BackupHeader
	magic, err := readLine(r)
	if err != nil {
		return hdr, err
	}
	if magic != fmt.Sprintf("%s %d", backupMagic, BackupFormat) {
		if strings.HasPrefix(magic, backupMagic+" ") {
			return hdr, fmt.Errorf("%w: format %q, this version reads %d", ErrBadBackup, strings.TrimPrefix(magic, backupMagic+" "), BackupFormat)
		}
		return hdr, fmt.Errorf("%w: no %q line", ErrBadBackup, backupMagic)
	}
	line, err := readLine(r)
	if err != nil {
		return hdr, err
	}
	if err := json.Unmarshal([]byte(line), &hdr); err != nil {
		return hdr, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	if hdr.Format != BackupFormat || hdr.LastIndex == 0 || hdr.BodyBytes < 0 || len(hdr.SHA256) != 2*sha256.Size {
		return hdr, fmt.Errorf("%w: header fields", ErrBadBackup)
	}
	return hdr, nil
}

func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for len(b) <= maxBackupHeaderBytes {
		c, err := r.ReadByte()
		if err != nil {
			return "", fmt.Errorf("%w: truncated header: %v", ErrBadBackup, err)
		}
		if c == '\n' {
			return string(b), nil
		}
		b = append(b, c)
	}
	return "", fmt.Errorf("%w: header line too long", ErrBadBackup)
}

// copyBody copies a backup's body to w and checks its length and checksum.
func copyBody(w io.Writer, r io.Reader, hdr BackupHeader) error {
	h := sha256.New()
	k, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, hdr.BodyBytes))
	if err != nil {
		return fmt.Errorf("raftstore: reading backup: %w", err)
	}
	if k != hdr.BodyBytes {
		return fmt.Errorf("%w: body is %d bytes, header says %d", ErrBadBackup, k, hdr.BodyBytes)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hdr.SHA256 {
		return fmt.Errorf("%w: checksum %s, header says %s", ErrBadBackup, got, hdr.SHA256)
	}
	return nil
}

// VerifyBackup reads a whole backup and checks its header, length and
// checksum.
func VerifyBackup(r io.Reader) (BackupHeader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	hdr, err := ReadBackupHeader(br)
	if err != nil {
		return hdr, err
	}
	if err := copyBody(io.Discard, br, hdr); err != nil {
		return hdr, err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return hdr, fmt.Errorf("%w: data after the body", ErrBadBackup)
	}
	return hdr, nil
}

// RestoreBackup prepares cfg.DataDir, which must be empty, to start a new
// cluster from a backup: it writes the backup's state as a Raft snapshot at
// the backup's last index, whose configuration is cfg.Peers (or this node
// alone). Open then starts from it instead of bootstrapping. Every node
// listed in cfg.Peers restores the same file, or one node restores alone
// and the others join it. The checksum is checked before anything is
// kept; on any error the data directory is left as it was.
func RestoreBackup(cfg Config, r io.Reader) (BackupHeader, error) {
	cfg.setDefaults()
	if cfg.ID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return BackupHeader{}, errors.New("raftstore: ID, DataDir and RaftAddr are required")
	}
	if ents, err := os.ReadDir(cfg.DataDir); err == nil && len(ents) > 0 {
		return BackupHeader{}, fmt.Errorf("%w: %s", ErrNotEmpty, cfg.DataDir)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	hdr, err := ReadBackupHeader(br)
	if err != nil {
		return hdr, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(filepath.Join(cfg.DataDir, "pebble"))
			os.RemoveAll(filepath.Join(cfg.DataDir, "snapshots"))
		}
	}()
	peers := cfg.Peers
	if len(peers) == 0 {
		peers = []Peer{{ID: cfg.ID, Addr: cfg.RaftAddr}}
	}
	var conf raft.Configuration
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: cfg.RaftLog})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hlog)
	if err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	// The term restarts at 1: a restored cluster is a new cluster.
	const term = 1
	_, trans := raft.NewInmemTransport("") // Create wants one; version 1 snapshots do not use it
	sink, err := snaps.Create(raft.SnapshotVersionMax, hdr.LastIndex, term, conf, hdr.LastIndex, trans)
	if err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	w := bufio.NewWriterSize(sink, 1<<20)
	w.Write(binary.AppendUvarint(nil, 0)) // no member API addresses: leaders announce theirs
	err = copyBody(w, br, hdr)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return hdr, err
	}
	if err := sink.Close(); err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	db, err := logstore.Open(filepath.Join(cfg.DataDir, "pebble"), logstore.Options{})
	if err != nil {
		return hdr, fmt.Errorf("raftstore: open store: %w", err)
	}
	store, err := db.Group(0)
	if err == nil {
		err = store.SetUint64([]byte("CurrentTerm"), term)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	// Marks the restore until its cluster has moved its clock to the time
	// of the restore (see RestorePending).
	if err := os.WriteFile(filepath.Join(cfg.DataDir, restoreMarker), nil, 0o644); err != nil {
		return hdr, fmt.Errorf("raftstore: %w", err)
	}
	ok = true
	return hdr, nil
}

// restoreMarker is the file RestoreBackup leaves in the data directory.
const restoreMarker = "RESTORED"

// RestorePending reports whether dataDir was restored from a backup and
// its cluster's clock has not yet been moved to the time of the restore
// (ClearRestorePending), so a node restarted before that still does it.
func RestorePending(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, restoreMarker))
	return err == nil
}

// ClearRestorePending removes the mark RestoreBackup left in dataDir.
func ClearRestorePending(dataDir string) error {
	if err := os.Remove(filepath.Join(dataDir, restoreMarker)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("raftstore: %w", err)
	}
	return nil
}
