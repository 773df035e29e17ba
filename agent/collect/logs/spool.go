package logs

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Kind is the kind of a batch: access-log entries or error-log lines.
type Kind string

// Kinds of batches.
const (
	KindAccess Kind = "access"
	KindError  Kind = "error"
)

// DefaultSpoolMax is the default bound of a Spool: 512 MiB.
const DefaultSpoolMax = 512 << 20

// droppedFile keeps, across restarts, the lines dropped since the last
// batch of each kind.
const droppedFile = "dropped.json"

// SpooledBatch is one batch waiting in the spool for the master's Ack.
type SpooledBatch struct {
	Seq   uint64
	Kind  Kind
	ID    string
	Lines int
	Size  int64
	name  string
	// dropped is the batch's dropped_lines: lines dropped before it, which
	// are counted again should the batch itself be dropped.
	dropped uint64
}

// Spool is a bounded directory of batches waiting for the master's
// acknowledgement, one file per batch (<seq>-<kind>-<batch id>.pb, the
// marshalled AccessLogBatch or LogBatch). When adding a batch would exceed
// the bound, the oldest batches are deleted and their lines are reported
// in the next batch of their kind as dropped_lines. It is safe for
// concurrent use.
type Spool struct {
	dir string
	max int64

	mu      sync.Mutex
	batches []SpooledBatch // by Seq
	total   int64
	seq     uint64
	dropped map[Kind]uint64
	// recent holds the messages of the last batches added, so that sending
	// them does not read and decode their files again.
	recent map[string]proto.Message
	// notify receives a value (without blocking) when a batch is added.
	notify chan struct{}
}

// OpenSpool opens (creating it) the spool in dir, bounded to limit bytes
// (<= 0: DefaultSpoolMax), with the batches a previous run left there.
func OpenSpool(dir string, limit int64) (*Spool, error) {
	if limit <= 0 {
		limit = DefaultSpoolMax
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log spool: %w", err)
	}
	s := &Spool{dir: dir, max: limit, dropped: map[Kind]uint64{}, recent: map[string]proto.Message{}, notify: make(chan struct{}, 1)}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("log spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		b, ok := parseBatchName(name)
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		b.Size = fi.Size()
		b.Lines = -1 // counted when read, if it must be dropped
		s.batches = append(s.batches, b)
		s.total += b.Size
		s.seq = max(s.seq, b.Seq)
	}
	slices.SortFunc(s.batches, func(a, b SpooledBatch) int { return cmpU64(a.Seq, b.Seq) })
	if data, err := os.ReadFile(filepath.Join(dir, droppedFile)); err == nil {
		_ = json.Unmarshal(data, &s.dropped)
	}
	return s, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseBatchName parses "<seq>-<kind>-<id>.pb".
func parseBatchName(name string) (SpooledBatch, bool) {
	base, ok := strings.CutSuffix(name, ".pb")
	if !ok {
		return SpooledBatch{}, false
	}
	parts := strings.SplitN(base, "-", 3)
	if len(parts) != 3 || (Kind(parts[1]) != KindAccess && Kind(parts[1]) != KindError) || parts[2] == "" {
		return SpooledBatch{}, false
	}
	seq, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return SpooledBatch{}, false
	}
	return SpooledBatch{Seq: seq, Kind: Kind(parts[1]), ID: parts[2], name: name}, true
}

// Notify returns a channel that receives a value when a batch is added.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// newBatchID returns a random batch id.
func newBatchID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// AddAccess spools an access-log batch of entries. Its dropped_lines are
// the access lines dropped since the previous access batch.
func (s *Spool) AddAccess(entries []*agentv1.AccessLogEntry) (SpooledBatch, error) {
	return s.add(KindAccess, len(entries), func(id string, dropped uint64) proto.Message {
		return &agentv1.AccessLogBatch{BatchId: id, Entries: entries, DroppedLines: dropped}
	})
}

// AddErrors spools an error-log batch of entries, with dropped_lines as
// AddAccess.
func (s *Spool) AddErrors(entries []*agentv1.LogEntry) (SpooledBatch, error) {
	return s.add(KindError, len(entries), func(id string, dropped uint64) proto.Message {
		return &agentv1.LogBatch{BatchId: id, Entries: entries, DroppedLines: dropped}
	})
}

// errTooLarge is a batch larger than the whole spool.
var errTooLarge = errors.New("a batch larger than the spool")

// droppedMargin covers the bytes dropped_lines may add to a marshalled
// batch.
const droppedMargin = 11

func (s *Spool) add(kind Kind, lines int, build func(id string, dropped uint64) proto.Message) (SpooledBatch, error) {
	id := newBatchID()
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := build(id, s.dropped[kind])
	data, err := proto.Marshal(msg)
	if err != nil {
		return SpooledBatch{}, fmt.Errorf("log spool: %w", err)
	}
	size := int64(len(data)) + droppedMargin
	if size > s.max {
		// Larger than the whole spool: this batch is what is dropped.
		s.dropped[kind] += uint64(lines)
		s.saveDropped()
		return SpooledBatch{}, fmt.Errorf("log spool: %w: %d bytes, the spool holds %d; its %d lines are dropped", errTooLarge, size, s.max, lines)
	}
	for len(s.batches) > 0 && s.total+size > s.max {
		s.dropOldest()
	}
	dropped := s.dropped[kind]
	if dropped != msg.(interface{ GetDroppedLines() uint64 }).GetDroppedLines() {
		// Dropping the oldest batches added lines to report.
		msg = build(id, dropped)
		if data, err = proto.Marshal(msg); err != nil {
			return SpooledBatch{}, fmt.Errorf("log spool: %w", err)
		}
	}
	s.seq++
	b := SpooledBatch{Seq: s.seq, Kind: kind, ID: id, Lines: lines, Size: int64(len(data)), dropped: dropped}
	b.name = fmt.Sprintf("%020d-%s-%s.pb", b.Seq, kind, id)
	if err := writeSynced(filepath.Join(s.dir, b.name), data); err != nil {
		return SpooledBatch{}, fmt.Errorf("log spool: %w", err)
	}
	s.batches = append(s.batches, b)
	s.total += b.Size
	s.remember(b, msg)
	if dropped > 0 {
		delete(s.dropped, kind)
		s.saveDropped()
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return b, nil
}

// recentBatches is how many of the last batches' messages the spool keeps
// in memory (the Shipper sends at most DefaultWindow at a time).
const recentBatches = 16

// remember keeps msg, batch b's message, among the recent ones; s.mu is
// held.
func (s *Spool) remember(b SpooledBatch, msg proto.Message) {
	s.recent[b.ID] = msg
	if len(s.recent) <= recentBatches {
		return
	}
	// Forget the oldest remembered batch: the first by sequence.
	for _, old := range s.batches {
		if _, ok := s.recent[old.ID]; ok {
			delete(s.recent, old.ID)
			return
		}
	}
}

// dropOldest deletes the oldest batch and counts its lines as dropped,
// with the dropped lines it was to report. s.mu is held.
func (s *Spool) dropOldest() {
	b := s.batches[0]
	s.batches = s.batches[1:]
	s.total -= b.Size
	delete(s.recent, b.ID)
	if b.Lines < 0 {
		b.Lines, b.dropped = s.countLines(b)
	}
	os.Remove(filepath.Join(s.dir, b.name))
	s.dropped[b.Kind] += uint64(b.Lines) + b.dropped
	s.saveDropped()
}

// countLines reads a batch left by a previous run to count its entries and
// the dropped lines it reports.
func (s *Spool) countLines(b SpooledBatch) (lines int, dropped uint64) {
	msg, err := s.read(b)
	if err != nil {
		return 0, 0
	}
	switch m := msg.(type) {
	case *agentv1.AccessLogBatch:
		return len(m.GetEntries()), m.GetDroppedLines()
	case *agentv1.LogBatch:
		return len(m.GetEntries()), m.GetDroppedLines()
	}
	return 0, 0
}

// saveDropped persists s.dropped; s.mu is held.
func (s *Spool) saveDropped() {
	data, _ := json.Marshal(s.dropped)
	_ = writeSynced(filepath.Join(s.dir, droppedFile), data)
}

// Batches returns the spooled batches, oldest first.
func (s *Spool) Batches() []SpooledBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// Size returns the bytes spooled.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Dropped returns the lines of kind dropped since its last batch.
func (s *Spool) Dropped(kind Kind) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped[kind]
}

// Read returns the batch's message (*agentv1.AccessLogBatch or
// *agentv1.LogBatch); callers must not modify it.
func (s *Spool) Read(b SpooledBatch) (proto.Message, error) {
	s.mu.Lock()
	msg, ok := s.recent[b.ID]
	s.mu.Unlock()
	if ok {
		return msg, nil
	}
	return s.read(b)
}

func (s *Spool) read(b SpooledBatch) (proto.Message, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, b.name))
	if err != nil {
		return nil, fmt.Errorf("log spool: %w", err)
	}
	var msg proto.Message = &agentv1.LogBatch{}
	if b.Kind == KindAccess {
		msg = &agentv1.AccessLogBatch{}
	}
	if err := proto.Unmarshal(data, msg); err != nil {
		return nil, fmt.Errorf("log spool: %s: %w", b.name, err)
	}
	return msg, nil
}

// Remove deletes the batch with that id (acknowledged by the master); it
// reports whether the batch was there.
func (s *Spool) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.batches {
		if b.ID == id {
			s.batches = slices.Delete(s.batches, i, i+1)
			s.total -= b.Size
			delete(s.recent, id)
			_ = os.Remove(filepath.Join(s.dir, b.name))
			return true
		}
	}
	return false
}

// writeSynced writes data to path through a synced temporary file and a
// rename.
func writeSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
