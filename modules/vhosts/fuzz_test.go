package vhosts

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	crossplane "github.com/nginxinc/nginx-go-crossplane"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
)

// fuzzField is a user field of a virtual host that FuzzVirtualHostInput and
// TestAPI_InjectionCorpusIsRejected put arbitrary strings into.
type fuzzField struct {
	// path is the field's JSON path, as 422 details name it.
	path string
	// placeholder is a valid value that renders as (part of) exactly one
	// argument; empty for fields that render nothing.
	placeholder string
	set         func(in *VirtualHostInput, v string)
	// expect is what the argument holding the placeholder becomes when the
	// field holds the accepted (normalized) host vh; nil when the directive
	// holding it disappears (an optional field left empty).
	expect func(vh VirtualHost) []string
}

var fuzzFields = []fuzzField{
	{"server_name", "fuzz-placeholder.example",
		func(in *VirtualHostInput, v string) { in.ServerName = v },
		func(vh VirtualHost) []string { return strings.Fields(vh.ServerName) }},
	{"locations[0].path", "/fuzz-placeholder",
		func(in *VirtualHostInput, v string) { in.Locations[0].Path = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[0].Path} }},
	{"locations[1].custom_headers[0].name", "X-Fuzz-Placeholder",
		func(in *VirtualHostInput, v string) { in.Locations[1].CustomHeaders[0].Name = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[1].CustomHeaders[0].Name} }},
	{"locations[1].custom_headers[0].value", "fuzz-placeholder-value",
		func(in *VirtualHostInput, v string) { in.Locations[1].CustomHeaders[0].Value = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[1].CustomHeaders[0].Value} }},
	{"locations[0].proxy_pass", "http://fuzz-placeholder.example:8081/p",
		func(in *VirtualHostInput, v string) { in.Locations[0].ProxyPass = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[0].ProxyPass} }},
	{"locations[1].root", "/srv/fuzz-placeholder",
		func(in *VirtualHostInput, v string) { in.Locations[1].Root = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[1].Root} }},
	{"locations[1].index", "fuzz-placeholder.html",
		func(in *VirtualHostInput, v string) { in.Locations[1].Index = v },
		func(vh VirtualHost) []string { return nonEmpty(strings.Fields(vh.Locations[1].Index)) }},
	{"locations[1].rewrite_rules[0].pattern", "^/fuzz-placeholder/(.*)$",
		func(in *VirtualHostInput, v string) { in.Locations[1].RewriteRules[0].Pattern = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[1].RewriteRules[0].Pattern} }},
	{"locations[1].rewrite_rules[0].replacement", "/fuzz-placeholder/$1",
		func(in *VirtualHostInput, v string) { in.Locations[1].RewriteRules[0].Replacement = v },
		func(vh VirtualHost) []string { return []string{vh.Locations[1].RewriteRules[0].Replacement} }},
	{"custom_directives.charset", "fuzz-placeholder",
		func(in *VirtualHostInput, v string) { in.CustomDirectives["charset"] = v },
		func(vh VirtualHost) []string { return strings.Fields(vh.CustomDirectives["charset"]) }},
	{"custom_directives.gzip_types", "text/fuzz-placeholder",
		func(in *VirtualHostInput, v string) { in.CustomDirectives["gzip_types"] = v },
		func(vh VirtualHost) []string { return strings.Fields(vh.CustomDirectives["gzip_types"]) }},
	{"client_max_body_size", "987654k",
		func(in *VirtualHostInput, v string) { in.ClientMaxBodySize = v },
		func(vh VirtualHost) []string { return nonEmpty(strings.Fields(vh.ClientMaxBodySize)) }},
	{"access_list.realm", "Fuzz placeholder realm",
		func(in *VirtualHostInput, v string) { in.AccessList.Realm = v },
		func(vh VirtualHost) []string {
			if vh.AccessList.Realm == "" {
				return []string{"Restricted"} // the renderer's default realm
			}
			return []string{vh.AccessList.Realm}
		}},
	{"target_agents.label_selector", "",
		func(in *VirtualHostInput, v string) { in.TargetAgents.LabelSelector = v },
		nil},
	{"redirect_to", "https://fuzz-placeholder.example",
		func(in *VirtualHostInput, v string) { in.Locations, in.RedirectTo = nil, v },
		func(vh VirtualHost) []string {
			return []string{strings.TrimSuffix(vh.RedirectTo, "/") + "$request_uri"}
		}},
}

func nonEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// fuzzBase is a valid virtual host that uses every fuzzed field.
func fuzzBase() VirtualHostInput {
	port := 8080
	return VirtualHostInput{
		Name:       "fuzz",
		ServerName: "base.example.com",
		ListenPort: &port,
		Locations: []Location{
			{Path: "/", ProxyPass: "http://127.0.0.1:9000/"},
			{Path: "/static", Root: "/var/www/static", Index: "index.html",
				CustomHeaders: []Header{{Name: "X-Base", Value: "base"}},
				RewriteRules:  []RewriteRule{{Pattern: "^/static/old/(.*)$", Replacement: "/static/new/$1", Flag: "last"}}},
		},
		AccessList:        &AccessList{Realm: "Base realm", BasicAuthUsers: []BasicAuthUser{{Username: "alice", Password: "fuzz-password"}}},
		ClientMaxBodySize: "1m",
		CustomDirectives:  map[string]string{"charset": "utf-8", "gzip_types": "text/css"},
		TargetAgents:      &TargetAgents{Type: TargetSelector, LabelSelector: "env=base"},
	}
}

// fuzzHostID is the id hosts are rendered with.
var fuzzHostID = uuid.MustParse("00000000-0000-4000-8000-000000000001")

// renderInput validates in and, if accepted, renders it. It returns ok=false
// when validation rejects in.
func renderInput(t *testing.T, in VirtualHostInput) (VirtualHost, crossplane.Directives, bool) {
	t.Helper()
	vh, passwords, v := checkVirtualHost(in, nil, app.VHostsConfig{}.RootPrefixes())
	if !v.OK() {
		return vh, nil, false
	}
	vh.ID = fuzzHostID
	hashes := map[string]string{}
	for user := range passwords {
		hashes[user] = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
	}
	snap := storedSnapshot{
		Snapshot:       Snapshot{VirtualHosts: []VirtualHost{vh}},
		PasswordHashes: map[string]map[string]string{vh.ID.String(): hashes},
	}
	u := snap.configUpdate(uuid.Nil, 1, nil)
	files, err := render.CheckRoundTrip(u, RenderOptions)
	if err != nil {
		t.Fatalf("accepted input does not render faithfully: %v\ninput: %+v", err, in)
	}
	return vh, parseConf(t, files[render.HTTPConf]), true
}

// parseConf parses http.conf text with crossplane.
func parseConf(t *testing.T, text []byte) crossplane.Directives {
	t.Helper()
	payload, err := crossplane.Parse(render.HTTPConf, &crossplane.ParseOptions{
		Open: func(string) (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(string(text))), nil
		},
		SingleFile:                true,
		StopParsingOnError:        true,
		SkipDirectiveContextCheck: true,
		SkipDirectiveArgsCheck:    true,
	})
	if err != nil || len(payload.Errors) > 0 || len(payload.Config) != 1 {
		t.Fatalf("crossplane cannot parse rendered http.conf (%v, %v):\n%s", err, payload.Errors, text)
	}
	return payload.Config[0].Parsed
}

// substitute returns a copy of tree in which the argument containing
// placeholder is replaced by with (nil: its directive is dropped), and how
// many arguments contained it.
func substitute(tree crossplane.Directives, placeholder string, with []string) (crossplane.Directives, int) {
	out := make(crossplane.Directives, 0, len(tree))
	n := 0
	for _, d := range tree {
		c := &crossplane.Directive{Directive: d.Directive}
		drop := false
		for _, a := range d.Args {
			if placeholder != "" && strings.Contains(a, placeholder) {
				c.Args = append(c.Args, with...)
				drop = with == nil
				n++
				continue
			}
			c.Args = append(c.Args, a)
		}
		if drop {
			continue
		}
		if d.Block != nil {
			var m int
			c.Block, m = substitute(d.Block, placeholder, with)
			n += m
		}
		out = append(out, c)
	}
	return out, n
}

// treeDiff describes the first difference between two directive trees, or
// returns "".
func treeDiff(want, got crossplane.Directives) string {
	for i := range max(len(want), len(got)) {
		if i >= len(want) {
			return fmt.Sprintf("extra directive %s %q", got[i].Directive, got[i].Args)
		}
		if i >= len(got) {
			return fmt.Sprintf("missing directive %s %q", want[i].Directive, want[i].Args)
		}
		w, g := want[i], got[i]
		if w.Directive != g.Directive || strings.Join(w.Args, "\x00") != strings.Join(g.Args, "\x00") || len(w.Args) != len(g.Args) {
			return fmt.Sprintf("%s %q instead of %s %q", g.Directive, g.Args, w.Directive, w.Args)
		}
		if (len(w.Block) > 0) != (len(g.Block) > 0) {
			return fmt.Sprintf("%s %q: block presence differs", g.Directive, g.Args)
		}
		if d := treeDiff(w.Block, g.Block); d != "" {
			return fmt.Sprintf("%s in %s %q", d, w.Directive, w.Args)
		}
	}
	return ""
}

// referenceTrees are the parsed renderings of fuzzBase with each field set to
// its placeholder, computed once.
var (
	referenceOnce  sync.Once
	referenceTrees []crossplane.Directives
)

func references(t *testing.T) []crossplane.Directives {
	t.Helper()
	referenceOnce.Do(func() {
		for _, f := range fuzzFields {
			in := fuzzBase()
			if f.placeholder != "" {
				f.set(&in, f.placeholder)
			}
			_, tree, ok := renderInput(t, in)
			if !ok {
				t.Fatalf("reference input for %s is rejected", f.path)
			}
			referenceTrees = append(referenceTrees, tree)
		}
	})
	if len(referenceTrees) != len(fuzzFields) {
		t.Fatal("reference trees could not be built")
	}
	return referenceTrees
}

// FuzzVirtualHostInput puts arbitrary strings into each user field of a
// virtual host. Input the grammars accept must render (render.CheckRoundTrip:
// crossplane and nginx's tokenizer read back exactly what was built) to a
// configuration whose crossplane-parsed directive tree is the reference tree
// with only the fuzzed argument changed: no directive, block or argument
// appears or disappears anywhere else.
//
//	go test -run '^$' -fuzz FuzzVirtualHostInput -fuzztime 30s ./modules/vhosts/
func FuzzVirtualHostInput(f *testing.F) {
	for i := range fuzzFields {
		for _, s := range []string{
			"valid.example.com", "/path", "$host", "$scheme://$host$request_uri", "max-age=1; includeSubDomains",
			"default-src 'self'", "^/(a|b){2,3}$", "\\d+", "10m", "env=prod,tier!=db", "text/css text/html",
			"a;b", "a'b", "a b", "x{1}", "http://[2001:db8::1]:80/", "/var/www/a.b", "index.html  index.htm",
		} {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, field uint8, value string) {
		refs := references(t)
		i := int(field) % len(fuzzFields)
		fd := fuzzFields[i]
		in := fuzzBase()
		fd.set(&in, value)
		vh, got, ok := renderInput(t, in)
		if !ok {
			return
		}
		want := refs[i]
		if fd.placeholder != "" {
			var n int
			want, n = substitute(refs[i], fd.placeholder, fd.expect(vh))
			if n != 1 {
				t.Fatalf("placeholder of %s found in %d arguments of the reference, want 1", fd.path, n)
			}
		}
		if d := treeDiff(want, got); d != "" {
			t.Fatalf("%s = %q renders a different directive tree: %s", fd.path, value, d)
		}
	})
}

// corpusValues reads the string values of the seed corpus in
// testdata/fuzz/FuzzVirtualHostInput.
func corpusValues(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzVirtualHostInput")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read corpus: %v", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 3 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[2], "string(") {
			t.Fatalf("corpus file %s is not (uint8, string): %q", e.Name(), raw)
		}
		v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "string("), ")"))
		if err != nil {
			t.Fatalf("corpus file %s: %v", e.Name(), err)
		}
		out[e.Name()] = v
	}
	if len(out) < 20 {
		t.Fatalf("corpus holds %d values, expected the injection corpus", len(out))
	}
	return out
}

// TestAPI_InjectionCorpusIsRejected posts every value of the fuzz seed corpus (';',
// braces, newlines, quotes, '#', '$', include, backslashes, unicode, NUL, ...)
// into every fuzzed field through the HTTP API and expects a 422 naming
// exactly that field.
func TestAPI_InjectionCorpusIsRejected(t *testing.T) {
	t.Parallel()
	values := corpusValues(t)
	e := newEnv(t)
	b := e.setup(t)
	for name, value := range values {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, fd := range fuzzFields {
				in := fuzzBase()
				fd.set(&in, value)
				status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), in, "")
				if status != http.StatusUnprocessableEntity {
					t.Errorf("%s = %q: status %d, want 422; body %s", fd.path, value, status, raw)
					continue
				}
				if got := fields(t, raw); len(got) != 1 || got[0] != fd.path {
					t.Errorf("%s = %q: details name %v, want [%s]", fd.path, value, got, fd.path)
				}
			}
		})
	}
	t.Cleanup(func() {
		var n int64
		if err := b.db.Model(&vhostRow{}).Where("workspace_id = ?", b.ws).Count(&n).Error; err != nil || n != 0 {
			t.Errorf("%d virtual hosts stored by rejected requests (%v)", n, err)
		}
	})
	// The base host itself is accepted, so each 422 above is the field's.
	t.Run("BaseIsAccepted", func(t *testing.T) {
		t.Parallel()
		other := e.setup(t)
		other.createVHost(t, fuzzBase())
	})
}

// TestService_QuotedHeaderValues shows what header values accept beyond the corpus:
// semicolons, single quotes and commas (Strict-Transport-Security,
// Content-Security-Policy) stay one quoted argument.
func TestService_QuotedHeaderValues(t *testing.T) {
	t.Parallel()
	for _, value := range []string{";", "'", "max-age=63072000; includeSubDomains; preload", "default-src 'self'; script-src 'none'", "a, b"} {
		in := fuzzBase()
		in.Locations[1].CustomHeaders[0].Value = value
		_, tree, ok := renderInput(t, in)
		if !ok {
			t.Fatalf("header value %q rejected", value)
		}
		want, n := substitute(references(t)[3], fuzzFields[3].placeholder, []string{value})
		if n != 1 {
			t.Fatalf("placeholder found %d times", n)
		}
		if d := treeDiff(want, tree); d != "" {
			t.Fatalf("header value %q: %s", value, d)
		}
	}
}
