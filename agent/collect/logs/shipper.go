package logs

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Defaults of ShipperOptions.
const (
	DefaultBatchLines    = 4000
	DefaultBatchInterval = 5 * time.Second
	DefaultPollInterval  = 250 * time.Millisecond
	DefaultAckTimeout    = 30 * time.Second
	DefaultRetryDelay    = 2 * time.Second
	DefaultWindow        = 4
	// DefaultMaxFileBytes is the size at which the Shipper rotates the
	// files it owns (Source.Rotate).
	DefaultMaxFileBytes = 64 << 20
)

// maxBatchBytes closes a batch early when its lines reach this size, so
// that one message on the stream stays well under gRPC's default 4 MiB.
const maxBatchBytes = 2 << 20

// positionsFile keeps the Tailers' positions.
const positionsFile = "positions.json"

// Source is a log file nginx writes and the Shipper follows.
type Source struct {
	// Path is the file.
	Path string
	// Kind says how its lines are parsed: KindAccess (the renderer's JSON
	// formats) or KindError (nginx's error log).
	Kind Kind
	// Rotate lets the Shipper rotate the file (rename it to Path.1 and ask
	// nginx to reopen its logs) once it is read and larger than
	// ShipperOptions.MaxFileBytes; set it only for files the agent owns.
	Rotate bool
}

// Sender sends batches on the stream to the master; the controlplane
// Client is one. The Send methods report whether the batch was handed to
// a stream.
type Sender interface {
	Connected() bool
	SendAccessLogs(*agentv1.AccessLogBatch) bool
	SendLogs(*agentv1.LogBatch) bool
}

// ShipperOptions configure a Shipper.
type ShipperOptions struct {
	// Dir keeps the Shipper's state: positions.json and the spool (Dir/spool).
	Dir string
	// Sources are the files to follow.
	Sources []Source
	// BatchLines closes a batch at that many lines; default
	// DefaultBatchLines.
	BatchLines int
	// BatchInterval closes a batch that long after its first line;
	// default DefaultBatchInterval.
	BatchInterval time.Duration
	// SpoolMax bounds the spool, in bytes; default DefaultSpoolMax.
	SpoolMax int64
	// PollInterval is how often the files are read; default
	// DefaultPollInterval.
	PollInterval time.Duration
	// AckTimeout is how long a sent batch waits for its Ack before it is
	// sent again; default DefaultAckTimeout.
	AckTimeout time.Duration
	// RetryDelay is how long a batch the master refused (Ack success=false)
	// waits before it is sent again; default DefaultRetryDelay.
	RetryDelay time.Duration
	// Window is how many batches may wait for their Ack at once; default
	// DefaultWindow.
	Window int
	// MaxFileBytes is the size at which Rotate sources are rotated;
	// default DefaultMaxFileBytes.
	MaxFileBytes int64
	// Reopen asks nginx to reopen its log files (after a rotation); nil
	// turns rotation off.
	Reopen func(context.Context) error
	// Location is the time zone of the error log's times (nginx writes
	// local time); default time.Local.
	Location *time.Location
	// Logger receives the Shipper's logs; default slog.Default().
	Logger *slog.Logger
}

// Shipper moves nginx's log lines to the master, at least once:
//
//  1. Every PollInterval its Tailers read the new lines of the Sources;
//     access lines are parsed into AccessLogEntry values, error-log lines
//     into LogEntry values with nginx's severity as level.
//  2. A batch of each kind closes at BatchLines lines (or maxBatchBytes) or
//     BatchInterval after its first line. It is written to the spool, and
//     only then are the positions of the files saved: a restart reads
//     again at most the lines of a batch it had not spooled.
//  3. Spooled batches are sent, oldest first and at most Window at a time,
//     while the stream is up; a batch leaves the spool only on the
//     master's Ack(batch_id, success). Batches not acknowledged are sent
//     again after a reconnect, after AckTimeout, or RetryDelay after a
//     refusal. The master stores a batch id once.
//
// Nothing in it waits on nginx or on the configuration path: nginx writes
// plain files, and the Shipper runs in its own goroutines.
type Shipper struct {
	opts  ShipperOptions
	spool *Spool
	log   *slog.Logger
	tails []*Tailer
	wake  chan struct{}
	// posErr and spoolErr keep a failure that repeats from being logged
	// at every poll.
	posErr, spoolErr bool

	mu       sync.Mutex
	inflight map[string]time.Time // batch id → sent at
	retryAt  map[string]time.Time
}

// NewShipper opens the Shipper's state in opts.Dir.
func NewShipper(opts ShipperOptions) (*Shipper, error) {
	if opts.Dir == "" {
		return nil, errors.New("logs: a state directory is required")
	}
	if opts.BatchLines <= 0 {
		opts.BatchLines = DefaultBatchLines
	}
	if opts.BatchInterval <= 0 {
		opts.BatchInterval = DefaultBatchInterval
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = DefaultRetryDelay
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	spool, err := OpenSpool(filepath.Join(opts.Dir, "spool"), opts.SpoolMax)
	if err != nil {
		return nil, err
	}
	s := &Shipper{
		opts: opts, spool: spool, log: opts.Logger.With("component", "logs"),
		wake: make(chan struct{}, 1), inflight: map[string]time.Time{}, retryAt: map[string]time.Time{},
	}
	positions := map[string]Position{}
	if data, err := os.ReadFile(filepath.Join(opts.Dir, positionsFile)); err == nil {
		if err := json.Unmarshal(data, &positions); err != nil {
			s.log.Warn("log positions unreadable; the log files are read from their start", "error", err)
		}
	}
	for _, src := range opts.Sources {
		s.tails = append(s.tails, NewTailer(src.Path, positions[src.Path]))
	}
	return s, nil
}

// Spool returns the Shipper's spool.
func (s *Shipper) Spool() *Spool { return s.spool }

// Run reads, batches and sends until ctx ends; the lines read by then are
// spooled before it returns.
func (s *Shipper) Run(ctx context.Context, sender Sender) {
	var wg sync.WaitGroup
	wg.Go(func() { s.collect(ctx) })
	wg.Go(func() { s.send(ctx, sender) })
	wg.Wait()
	for _, t := range s.tails {
		t.Close()
	}
}

// Ack handles the master's acknowledgement of a batch (Ack.message_id is
// the batch id); acks of other messages are ignored. It never blocks.
func (s *Shipper) Ack(a *agentv1.Ack) {
	id := a.GetMessageId()
	if id == "" {
		return
	}
	s.mu.Lock()
	_, sent := s.inflight[id]
	delete(s.inflight, id)
	if !a.GetSuccess() && sent {
		s.retryAt[id] = time.Now().Add(s.opts.RetryDelay)
	}
	s.mu.Unlock()
	if a.GetSuccess() {
		s.spool.Remove(id)
	} else if sent {
		s.log.Debug("the master refused a log batch; sending it again later", "batch_id", id, "error", a.GetErrorMessage())
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pending is the open batch of one kind.
type pending struct {
	access []*agentv1.AccessLogEntry
	errors []*agentv1.LogEntry
	bytes  int
	first  time.Time
}

func (p *pending) lines() int { return len(p.access) + len(p.errors) }

// collect is step 1–2 of the Shipper.
func (s *Shipper) collect(ctx context.Context) {
	open := map[Kind]*pending{KindAccess: {}, KindError: {}}
	var lines [][]byte
	lastErr := make([]string, len(s.tails))
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	for {
		busy := false
		for i, t := range s.tails {
			kind := s.opts.Sources[i].Kind
			p := open[kind]
			room := s.opts.BatchLines - p.lines()
			if room <= 0 || p.bytes >= maxBatchBytes {
				continue // a batch that failed to spool is retried first
			}
			var err error
			lines, err = t.Lines(lines[:0], room)
			if msg := errText(err); msg != lastErr[i] {
				if err != nil {
					s.log.Warn("read log file", "path", t.Path(), "error", err)
				}
				lastErr[i] = msg
			}
			if len(lines) == room {
				busy = true
			}
			if len(lines) > 0 && p.first.IsZero() {
				p.first = time.Now()
			}
			for _, l := range lines {
				s.addLine(kind, p, l)
			}
			if len(lines) < room {
				s.maybeRotate(ctx, i)
			}
		}
		for _, kind := range []Kind{KindAccess, KindError} {
			p := open[kind]
			if p.lines() > 0 && (p.lines() >= s.opts.BatchLines || p.bytes >= maxBatchBytes || time.Since(p.first) >= s.opts.BatchInterval) {
				s.flush(kind, p)
			}
		}
		if ctx.Err() != nil {
			for _, kind := range []Kind{KindAccess, KindError} {
				if p := open[kind]; p.lines() > 0 {
					s.flush(kind, p)
				}
			}
			return
		}
		if busy {
			continue
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// addLine parses one line into the open batch.
func (s *Shipper) addLine(kind Kind, p *pending, line []byte) {
	if len(line) == 0 {
		return
	}
	p.bytes += len(line)
	if kind == KindError {
		p.errors = append(p.errors, ParseErrorLine(string(line), s.opts.Location))
		return
	}
	e, err := ParseAccessLine(line)
	if err != nil {
		s.log.Debug("skip an access log line not in the agent's format", "error", err)
		return
	}
	p.access = append(p.access, e)
}

// flush spools the open batch of kind and saves the positions of its
// sources. A batch the spool cannot write stays open and is tried again.
func (s *Shipper) flush(kind Kind, p *pending) {
	var err error
	if kind == KindAccess {
		_, err = s.spool.AddAccess(p.access)
	} else {
		_, err = s.spool.AddErrors(p.errors)
	}
	if err != nil && !errors.Is(err, errTooLarge) {
		if !s.spoolErr {
			s.log.Error("spool a log batch; retrying", "kind", kind, "lines", p.lines(), "error", err)
		}
		s.spoolErr = true
		return
	}
	s.spoolErr = false
	if err != nil {
		s.log.Warn("log batch dropped", "kind", kind, "error", err)
	}
	*p = pending{}
	s.savePositions()
}

// savePositions writes the positions of every Tailer. A Tailer's position
// is past the lines of the batches already spooled: the lines of an open
// batch of a kind are always flushed with all of that kind.
func (s *Shipper) savePositions() {
	positions := make(map[string]Position, len(s.tails))
	for _, t := range s.tails {
		positions[t.Path()] = t.Position()
	}
	data, _ := json.Marshal(positions)
	if err := writeSynced(filepath.Join(s.opts.Dir, positionsFile), data); err != nil {
		if !s.posErr {
			s.log.Error("save log positions", "error", err)
		}
		s.posErr = true
		return
	}
	s.posErr = false
}

// maybeRotate rotates source i when it is read to its end, larger than
// MaxFileBytes and the Shipper's to rotate.
func (s *Shipper) maybeRotate(ctx context.Context, i int) {
	src, t := s.opts.Sources[i], s.tails[i]
	if !src.Rotate || s.opts.Reopen == nil || t.f == nil || t.renamed {
		return
	}
	pos := t.Position()
	if pos.Offset < s.opts.MaxFileBytes || len(t.buf) > 0 {
		return
	}
	fi, err := os.Stat(src.Path)
	if err != nil {
		return
	}
	if dev, ino := fileID(fi); dev != pos.Dev || ino != pos.Ino || fi.Size() != pos.Offset {
		return
	}
	if err := os.Rename(src.Path, src.Path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("rotate log file", "path", src.Path, "error", err)
		return
	}
	if err := s.opts.Reopen(ctx); err != nil {
		s.log.Warn("ask nginx to reopen its logs after a rotation", "path", src.Path, "error", err)
	}
	s.log.Info("log file rotated", "path", src.Path, "bytes", pos.Offset)
}

// send is step 3 of the Shipper.
func (s *Shipper) send(ctx context.Context, sender Sender) {
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	wasConnected := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
		case <-s.spool.Notify():
		}
		if !sender.Connected() {
			if wasConnected {
				s.forgetInflight()
			}
			wasConnected = false
			continue
		}
		if !wasConnected {
			// A new stream: what was sent on the old one is sent again.
			s.forgetInflight()
			wasConnected = true
		}
		s.sendSpooled(sender)
	}
}

func (s *Shipper) forgetInflight() {
	s.mu.Lock()
	clear(s.inflight)
	s.mu.Unlock()
}

// sendSpooled sends the spooled batches that may be sent now.
func (s *Shipper) sendSpooled(sender Sender) {
	batches := s.spool.Batches()
	now := time.Now()
	s.mu.Lock()
	present := make(map[string]bool, len(batches))
	for _, b := range batches {
		present[b.ID] = true
	}
	for id := range s.inflight {
		if !present[id] {
			delete(s.inflight, id) // dropped from a full spool
		}
	}
	for id, at := range s.retryAt {
		if !present[id] || !now.Before(at) {
			delete(s.retryAt, id)
		}
	}
	s.mu.Unlock()
	for _, b := range batches {
		s.mu.Lock()
		sentAt, sent := s.inflight[b.ID]
		_, waiting := s.retryAt[b.ID]
		full := len(s.inflight) >= s.opts.Window
		s.mu.Unlock()
		if sent && now.Sub(sentAt) < s.opts.AckTimeout || waiting {
			continue
		}
		if full && !sent {
			return
		}
		msg, err := s.spool.Read(b)
		if err != nil {
			continue // removed meanwhile
		}
		// In flight before the send: the Ack may come before Send returns.
		s.mu.Lock()
		s.inflight[b.ID] = time.Now()
		s.mu.Unlock()
		var ok bool
		switch m := msg.(type) {
		case *agentv1.AccessLogBatch:
			ok = sender.SendAccessLogs(m)
		case *agentv1.LogBatch:
			ok = sender.SendLogs(m)
		}
		if !ok {
			s.mu.Lock()
			delete(s.inflight, b.ID)
			s.mu.Unlock()
			return
		}
	}
}
