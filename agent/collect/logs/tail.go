package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Position is where a Tailer stands in a file: the file's identity
// (device and inode) and the offset just past the last line returned.
type Position struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Offset int64  `json:"offset"`
}

// maxLineBytes bounds one line; a longer line is cut into pieces of this
// size.
const maxLineBytes = 256 << 10

// readChunk is how much a Tailer reads at a time.
const readChunk = 64 << 10

// Tailer follows one log file that nginx appends to, by polling: Lines
// returns the complete lines written since the last call, and never waits
// for more.
//
// Rotation:
//   - by rename (logrotate's default, or the agent's own): when the path
//     names another file, the Tailer reads the file it has open to its
//     end (on two calls, as nginx writes into it until it reopens its
//     logs), then follows the new file from its start;
//   - by truncation (copytruncate): when the file is shorter than the
//     offset, it is read again from its start.
//
// A Tailer created with a saved Position resumes there when the path still
// names that file; when the file was rotated meanwhile, the rest of the old
// file is read first if it is still in the same directory.
type Tailer struct {
	path string
	f    *os.File
	pos  Position
	// buf holds bytes read after pos: at most one incomplete line.
	buf   []byte
	chunk []byte
	// renamed is set when the path was found naming another file while
	// the open one was at its end.
	renamed bool
}

// NewTailer returns a Tailer of path starting at pos; a zero Position
// starts at the beginning of the file path names.
func NewTailer(path string, pos Position) *Tailer {
	return &Tailer{path: path, pos: pos, chunk: make([]byte, readChunk)}
}

// Path returns the followed path.
func (t *Tailer) Path() string { return t.path }

// Position returns the position just past the last line Lines returned.
func (t *Tailer) Position() Position { return t.pos }

// Close closes the open file.
func (t *Tailer) Close() error {
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	return err
}

func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// open opens the file to read: the path's file, or, when pos names
// another file that is still in the directory (rotated while the agent
// was away), that one.
func (t *Tailer) open() error {
	f, err := os.Open(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		if t.pos.Ino != 0 {
			if old := findInode(filepath.Dir(t.path), t.pos.Dev, t.pos.Ino); old != "" {
				if of, err := os.Open(old); err == nil {
					t.f = of
					_, err = of.Seek(t.pos.Offset, io.SeekStart)
					return err
				}
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", t.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", t.path, err)
	}
	dev, ino := fileID(fi)
	switch {
	case t.pos.Ino == 0:
		// First start: from the beginning.
		t.pos = Position{Dev: dev, Ino: ino}
	case t.pos.Dev == dev && t.pos.Ino == ino:
		if fi.Size() < t.pos.Offset {
			t.pos.Offset = 0 // truncated while away
		}
	default:
		// Rotated while away: finish the old file if it is still here.
		if old := findInode(filepath.Dir(t.path), t.pos.Dev, t.pos.Ino); old != "" {
			if of, err := os.Open(old); err == nil {
				f.Close()
				t.f = of
				_, err = of.Seek(t.pos.Offset, io.SeekStart)
				return err
			}
		}
		t.pos = Position{Dev: dev, Ino: ino}
	}
	if _, err := f.Seek(t.pos.Offset, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("seek %s: %w", t.path, err)
	}
	t.f = f
	return nil
}

// findInode returns the file of dir with that device and inode, or "".
func findInode(dir string, dev, ino uint64) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if d, i := fileID(fi); d == dev && i == ino {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}

// Lines appends to dst the complete lines (without their newline) written
// since the last call, at most max of them (max <= 0: no limit), and
// returns dst. The slices stay valid until the next call. A missing file
// is no error: it is looked for again on the next call.
func (t *Tailer) Lines(dst [][]byte, max int) ([][]byte, error) {
	if t.f == nil {
		if err := t.open(); err != nil || t.f == nil {
			return dst, err
		}
	}
	start := len(dst)
	for {
		dst = t.split(dst, start, max)
		if max > 0 && len(dst)-start >= max {
			return dst, nil
		}
		n, err := t.f.Read(t.chunk)
		if n > 0 {
			t.buf = append(t.buf, t.chunk[:n]...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return dst, fmt.Errorf("read %s: %w", t.path, err)
		}
		// At the end of the open file: has it been rotated?
		switched, last, err := t.checkRotation()
		if last != nil {
			dst = append(dst, last)
		}
		if err != nil || !switched {
			return dst, err
		}
	}
}

// split moves the complete lines at the front of buf into dst (up to max
// since start), advancing pos. It keeps buf's storage for later reads only
// when nothing of it is handed out.
func (t *Tailer) split(dst [][]byte, start, max int) [][]byte {
	consumed := 0
	for max <= 0 || len(dst)-start < max {
		rest := t.buf[consumed:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			if len(rest) >= maxLineBytes {
				i = maxLineBytes
				dst = append(dst, rest[:i:i])
				consumed += i
				continue
			}
			break
		}
		line := rest[:i:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[: len(line)-1 : len(line)-1]
		}
		dst = append(dst, line)
		consumed += i + 1
	}
	if consumed > 0 {
		t.pos.Offset += int64(consumed)
		// The returned lines alias the old buffer; keep the rest in a
		// fresh one.
		t.buf = append([]byte(nil), t.buf[consumed:]...)
	}
	return dst
}

// checkRotation looks at the path after the open file is read to its end.
// It reports whether the Tailer switched to another file (renamed) or
// back to the start (truncated), and returns the incomplete last line of
// a renamed file, which nginx will not complete.
func (t *Tailer) checkRotation() (switched bool, last []byte, err error) {
	cur, err := t.f.Stat()
	if err != nil {
		return false, nil, fmt.Errorf("stat %s: %w", t.path, err)
	}
	fi, err := os.Stat(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil, nil // renamed, the new file not created yet
	}
	if err != nil {
		return false, nil, fmt.Errorf("stat %s: %w", t.path, err)
	}
	if !os.SameFile(cur, fi) {
		// Renamed. nginx writes into the old file until it reopens its
		// logs: switch on the next call that finds it still at its end.
		if !t.renamed {
			t.renamed = true
			return false, nil, nil
		}
		t.renamed = false
		if len(t.buf) > 0 {
			last = t.buf
			t.buf = nil
		}
		t.f.Close()
		t.f = nil
		dev, ino := fileID(fi)
		t.pos = Position{Dev: dev, Ino: ino}
		if err := t.open(); err != nil {
			return false, last, err
		}
		return t.f != nil, last, nil
	}
	if cur.Size() < t.pos.Offset+int64(len(t.buf)) {
		// Truncated: start again.
		t.buf = nil
		t.pos.Offset = 0
		if _, err := t.f.Seek(0, io.SeekStart); err != nil {
			return false, nil, fmt.Errorf("seek %s: %w", t.path, err)
		}
		return true, nil, nil
	}
	return false, nil, nil
}
