package logs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readLines calls Lines calls times and returns every line as a string.
func readLines(t *testing.T, tl *Tailer, calls int) []string {
	t.Helper()
	var out []string
	for range calls {
		lines, err := tl.Lines(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			out = append(out, string(l))
		}
	}
	return out
}

func TestTailer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// steps alternate writes (run) and the lines the next reads
		// (calls Lines calls) must return.
		steps []tailStep
	}{
		{"AppendAndIncompleteLine", []tailStep{
			{run: func(t *testing.T, p string) { appendFile(t, p, "a\nb\nc") }, calls: 1, want: []string{"a", "b"}},
			{run: func(t *testing.T, p string) { appendFile(t, p, "d\r\n") }, calls: 1, want: []string{"cd"}},
			{calls: 2},
		}},
		{"MissingFileAppearsLater", []tailStep{
			{calls: 2},
			{run: func(t *testing.T, p string) { appendFile(t, p, "x\n") }, calls: 1, want: []string{"x"}},
		}},
		{"RotationByRenameReadsTheOldFileToItsEnd", []tailStep{
			{run: func(t *testing.T, p string) { appendFile(t, p, "1\n2\n") }, calls: 1, want: []string{"1", "2"}},
			{run: func(t *testing.T, p string) {
				appendFile(t, p, "3\n")
				if err := os.Rename(p, p+".1"); err != nil {
					t.Fatal(err)
				}
				appendFile(t, p, "new-1\n")
				// nginx writes into the renamed file until it reopens.
				appendFile(t, p+".1", "4\n")
			}, calls: 1, want: []string{"3", "4"}},
			{run: func(t *testing.T, p string) { appendFile(t, p+".1", "5-incomplete") }, calls: 2, want: []string{"5-incomplete", "new-1"}},
			{run: func(t *testing.T, p string) { appendFile(t, p, "new-2\n") }, calls: 1, want: []string{"new-2"}},
		}},
		{"RotationByRenameBeforeTheNewFileExists", []tailStep{
			{run: func(t *testing.T, p string) { appendFile(t, p, "1\n") }, calls: 1, want: []string{"1"}},
			{run: func(t *testing.T, p string) {
				if err := os.Rename(p, p+".1"); err != nil {
					t.Fatal(err)
				}
				appendFile(t, p+".1", "2\n")
			}, calls: 2, want: []string{"2"}},
			{run: func(t *testing.T, p string) { appendFile(t, p, "new\n") }, calls: 2, want: []string{"new"}},
		}},
		{"RotationByTruncation", []tailStep{
			{run: func(t *testing.T, p string) { appendFile(t, p, "long line one\nlong line two\n") }, calls: 1, want: []string{"long line one", "long line two"}},
			{run: func(t *testing.T, p string) {
				if err := os.Truncate(p, 0); err != nil {
					t.Fatal(err)
				}
				appendFile(t, p, "after\n")
			}, calls: 1, want: []string{"after"}},
			{run: func(t *testing.T, p string) { appendFile(t, p, "more\n") }, calls: 1, want: []string{"more"}},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "access.log")
			tl := NewTailer(p, Position{})
			defer tl.Close()
			for i, st := range c.steps {
				if st.run != nil {
					st.run(t, p)
				}
				if got := readLines(t, tl, st.calls); !slices.Equal(got, st.want) {
					t.Fatalf("step %d: lines %q, want %q", i, got, st.want)
				}
			}
		})
	}
}

type tailStep struct {
	run   func(t *testing.T, path string)
	calls int
	want  []string
}

func TestTailerLimit(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "access.log")
	appendFile(t, p, "1\n2\n3\n4\n5\n")
	tl := NewTailer(p, Position{})
	defer tl.Close()
	var got []string
	for range 3 {
		lines, err := tl.Lines(nil, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) > 2 {
			t.Fatalf("%d lines, limit 2", len(lines))
		}
		for _, l := range lines {
			got = append(got, string(l))
		}
	}
	if want := []string{"1", "2", "3", "4", "5"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if fi, _ := os.Stat(p); tl.Position().Offset != fi.Size() {
		t.Errorf("offset %d, file size %d", tl.Position().Offset, fi.Size())
	}
}

// TestTailerResume restarts a Tailer from its saved Position.
func TestTailerResume(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// away happens between the two Tailers.
		away func(t *testing.T, p string)
		want []string
	}{
		{"SameFile", func(t *testing.T, p string) { appendFile(t, p, "3\n") }, []string{"2-rest", "3"}},
		{"RenamedWhileAway", func(t *testing.T, p string) {
			appendFile(t, p, "3\n")
			if err := os.Rename(p, p+".1"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, p, "new\n")
		}, []string{"2-rest", "3", "new"}},
		{"RemovedWhileAway", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			// Shorter than the offset: right even if the inode is reused.
			appendFile(t, p, "n\n")
		}, []string{"n"}},
		{"TruncatedWhileAway", func(t *testing.T, p string) {
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, p, "n\n")
		}, []string{"n"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "error.log")
			appendFile(t, p, "one\n2-")
			first := NewTailer(p, Position{})
			if got := readLines(t, first, 1); !slices.Equal(got, []string{"one"}) {
				t.Fatalf("first lines %q", got)
			}
			pos := first.Position()
			first.Close()
			appendFile(t, p, "rest\n")
			c.away(t, p)
			second := NewTailer(p, pos)
			defer second.Close()
			if got := readLines(t, second, 3); !slices.Equal(got, c.want) {
				t.Errorf("after the restart: %q, want %q", got, c.want)
			}
		})
	}
}
