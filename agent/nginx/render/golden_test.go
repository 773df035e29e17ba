package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

var update = flag.Bool("update", false, "rewrite the expected output sections of testdata/golden/*.txtar")

// goldenConfDir is the ConfDir the golden outputs are rendered with.
const goldenConfDir = "/etc/nxmesh/nginx"

// goldenAccessLog is the access log the golden outputs are rendered with.
const goldenAccessLog = "/var/lib/nxmesh-agent/logs/access.log"

// Sections of a golden file that are inputs rather than expected output.
const (
	inputSection   = "input.json"
	optionsSection = "options.json"
)

// goldenCase is one testdata/golden/<name>.txtar file.
type goldenCase struct {
	name    string
	path    string
	archive *txtar.Archive
	input   *agentv1.ConfigUpdate
	opts    Options
}

// loadGoldenCases reads every golden file.
func loadGoldenCases(t testing.TB) []goldenCase {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "golden", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no golden files found")
	}
	var cases []goldenCase
	for _, p := range paths {
		a, err := txtar.ParseFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		c := goldenCase{
			name:    strings.TrimSuffix(filepath.Base(p), ".txtar"),
			path:    p,
			archive: a,
			input:   &agentv1.ConfigUpdate{},
			opts:    Options{ConfDir: goldenConfDir, AccessLog: goldenAccessLog},
		}
		in, ok := section(a, inputSection)
		if !ok {
			t.Fatalf("%s: no %s section", p, inputSection)
		}
		if err := protojson.Unmarshal(in, c.input); err != nil {
			t.Fatalf("%s: %s: %v", p, inputSection, err)
		}
		if o, ok := section(a, optionsSection); ok {
			dec := json.NewDecoder(bytes.NewReader(o))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&c.opts); err != nil {
				t.Fatalf("%s: %s: %v", p, optionsSection, err)
			}
		}
		cases = append(cases, c)
	}
	return cases
}

func section(a *txtar.Archive, name string) ([]byte, bool) {
	for _, f := range a.Files {
		if f.Name == name {
			return f.Data, true
		}
	}
	return nil, false
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, c := range loadGoldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			files, err := CheckRoundTrip(c.input, c.opts)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			again, err := Render(c.input, c.opts)
			if err != nil {
				t.Fatalf("second render: %v", err)
			}
			if !equalFiles(files, again) {
				t.Fatal("two renders of the same input differ")
			}

			if *update {
				writeGolden(t, c, files)
				return
			}
			want := map[string][]byte{}
			for _, f := range c.archive.Files {
				if f.Name != inputSection && f.Name != optionsSection {
					want[f.Name] = f.Data
				}
			}
			for _, name := range sortedKeys(files) {
				w, ok := want[name]
				switch {
				case !ok:
					t.Errorf("unexpected output file %s:\n%s", name, files[name])
				case !bytes.Equal(w, files[name]):
					t.Errorf("%s differs (run go test -update to accept):\n--- got ---\n%s\n--- want ---\n%s", name, files[name], w)
				}
			}
			for name := range want {
				if _, ok := files[name]; !ok {
					t.Errorf("missing output file %s", name)
				}
			}
		})
	}
}

func equalFiles(a, b Files) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// writeGolden replaces the output sections of a golden file, keeping its
// comment and input sections.
func writeGolden(t *testing.T, c goldenCase, files Files) {
	t.Helper()
	a := &txtar.Archive{Comment: c.archive.Comment}
	for _, f := range c.archive.Files {
		if f.Name == inputSection || f.Name == optionsSection {
			a.Files = append(a.Files, f)
		}
	}
	names := sortedKeys(files)
	// Config files first, then the files they refer to.
	slices.SortStableFunc(names, func(x, y string) int {
		return strings.Count(x, "/") - strings.Count(y, "/")
	})
	for _, name := range names {
		a.Files = append(a.Files, txtar.File{Name: name, Data: files[name]})
	}
	if err := os.WriteFile(c.path, txtar.Format(a), 0o644); err != nil {
		t.Fatal(err)
	}
}
