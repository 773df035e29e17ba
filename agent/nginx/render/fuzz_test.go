package render

import (
	"errors"
	"slices"
	"strings"
	"testing"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// fuzzSeeds are injection attempts and quoting edge cases.
var fuzzSeeds = []string{
	"", "a", "/", ";", "}", "{", "{}", "\n", "\r\n", "\t", `"`, `'`, `"'`, "#", "# comment", "$", "$host", "${host}", "a${b}c",
	"include /etc/passwd;", "x; include /etc/passwd;", "x;\ninclude /etc/passwd;", "}\nserver {\nlisten 81;\n}",
	"\"; } server { listen 81; } #", "'; return 200 pwned; '", `\`, `\\`, `a\`, `\n`, `\"`, `\'`, `a\;b`, `a\ b`,
	"café", "日本語", "\u200b", "\u00a0", "\ufeff", "\x00", "a\x00b", "\xff\xfe", "\x7f",
	"~ ^/api/(.*)$", "= /exact", "^~ /prefix/", "~* \\.(png|jpg)$", "~", "~ ", "@named", "( )", "(", ")",
	"*.example.test example.test", "http://127.0.0.1:8080/", "127.0.0.1:8080 backup", "a b c", "  spaced  ",
}

// fuzzTarget is one field the fuzzer writes into, with the directive the
// value must come back as.
type fuzzTarget struct {
	name string
	// build returns a ConfigUpdate with v in the field.
	build func(v string) *agentv1.ConfigUpdate
	// file is the config file the value is rendered into.
	file string
	// directive and want describe the one directive that must carry v.
	directive string
	want      func(v string) []string
	// match selects the directive among those named directive.
	match func(d *crossplane.Directive) bool
}

func fuzzHost(mut func(vh *agentv1.VirtualHost, loc *agentv1.Location)) *agentv1.ConfigUpdate {
	loc := &agentv1.Location{Path: "/", ProxyPass: "http://127.0.0.1:8080"}
	vh := &agentv1.VirtualHost{Id: "vh", ServerName: "fuzz.test", Locations: []*agentv1.Location{loc}}
	mut(vh, loc)
	return &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{vh}}
}

func fuzzTargets() []fuzzTarget {
	one := func(v string) []string {
		if v == "" {
			return nil // an empty field is unset
		}
		return []string{v}
	}
	fields := func(v string) []string { return strings.Fields(v) }
	anyDirective := func(*crossplane.Directive) bool { return true }
	return []fuzzTarget{
		{
			name: "server_name",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(vh *agentv1.VirtualHost, _ *agentv1.Location) { vh.ServerName = v })
			},
			file: HTTPConf, directive: "server_name", want: fields, match: anyDirective,
		},
		{
			name: "location path",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) { l.Path = v })
			},
			file: HTTPConf, directive: "location", want: locationArgs, match: anyDirective,
		},
		{
			name: "proxied header value",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) {
					l.CustomHeaders = []*agentv1.Header{{Name: "X-Fuzz", Value: v}}
				})
			},
			file: HTTPConf, directive: "proxy_set_header",
			want:  func(v string) []string { return []string{"X-Fuzz", v} },
			match: func(d *crossplane.Directive) bool { return d.Args[0] == "X-Fuzz" },
		},
		{
			name: "static header name",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) {
					l.ProxyPass, l.Root = "", "/srv"
					l.CustomHeaders = []*agentv1.Header{{Name: v, Value: "x", Always: true}}
				})
			},
			file: HTTPConf, directive: "add_header",
			want:  func(v string) []string { return []string{v, "x", "always"} },
			match: anyDirective,
		},
		{
			name: "proxy_pass",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) { l.ProxyPass = v })
			},
			file: HTTPConf, directive: "proxy_pass", want: one, match: anyDirective,
		},
		{
			name: "root",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) { l.ProxyPass, l.Root = "", v })
			},
			file: HTTPConf, directive: "root", want: one, match: anyDirective,
		},
		{
			name: "rewrite pattern",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) {
					l.RewriteRules = []*agentv1.RewriteRule{{Pattern: v, Replacement: "/x", Flag: "last"}}
				})
			},
			file: HTTPConf, directive: "rewrite",
			want:  func(v string) []string { return []string{v, "/x", "last"} },
			match: anyDirective,
		},
		{
			name: "custom directive value",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(vh *agentv1.VirtualHost, _ *agentv1.Location) {
					vh.CustomDirectives = map[string]string{"fuzz_directive": v}
				})
			},
			file: HTTPConf, directive: "fuzz_directive", want: fields, match: anyDirective,
		},
		{
			name: "redirect target",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(vh *agentv1.VirtualHost, _ *agentv1.Location) { vh.RedirectTo = v })
			},
			file: HTTPConf, directive: "return",
			want: func(v string) []string {
				if v == "" {
					return nil // no redirect: no return directive
				}
				return []string{"301", strings.TrimSuffix(v, "/") + "$request_uri"}
			},
			// Not the default server's "return 404".
			match: func(d *crossplane.Directive) bool { return d.Args[0] != "404" },
		},
		{
			name: "basic auth realm",
			build: func(v string) *agentv1.ConfigUpdate {
				return fuzzHost(func(vh *agentv1.VirtualHost, _ *agentv1.Location) {
					vh.AccessList = &agentv1.AccessList{Realm: v, BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "u", PasswordHash: "h"}}}
				})
			},
			file: HTTPConf, directive: "auth_basic",
			want: func(v string) []string {
				if v == "" {
					v = "Restricted"
				}
				return []string{v}
			},
			match: anyDirective,
		},
		{
			name: "upstream address",
			build: func(v string) *agentv1.ConfigUpdate {
				u := fuzzHost(func(_ *agentv1.VirtualHost, l *agentv1.Location) { l.UpstreamId = "up" })
				u.Upstreams = []*agentv1.Upstream{{Id: "up", Servers: []*agentv1.UpstreamServer{{Address: v, Weight: 2}}}}
				return u
			},
			file: HTTPConf, directive: "server",
			want:  func(v string) []string { return []string{v, "weight=2"} },
			match: func(d *crossplane.Directive) bool { return !d.IsBlock() },
		},
		{
			name: "stream upstream address",
			build: func(v string) *agentv1.ConfigUpdate {
				return &agentv1.ConfigUpdate{
					Streams:   []*agentv1.Stream{{Id: "st", ListenPort: 5000, UpstreamId: "up"}},
					Upstreams: []*agentv1.Upstream{{Id: "up", Servers: []*agentv1.UpstreamServer{{Address: v, Down: true}}}},
				}
			},
			file: StreamConf, directive: "server",
			want:  func(v string) []string { return []string{v, "down"} },
			match: func(d *crossplane.Directive) bool { return !d.IsBlock() },
		},
	}
}

// findDirectives returns every directive called name in a tree.
func findDirectives(tree crossplane.Directives, name string, match func(*crossplane.Directive) bool) []*crossplane.Directive {
	var out []*crossplane.Directive
	for _, d := range tree {
		if d.Directive == name && match(d) {
			out = append(out, d)
		}
		out = append(out, findDirectives(d.Block, name, match)...)
	}
	return out
}

// checkFuzzValue renders v into every target. Rendering may fail, with
// ErrInvalidConfig; if it succeeds the output must parse back, with both
// nginx's tokenizer and crossplane, into the tree the renderer built, and
// that tree must hold v exactly where it was put.
func checkFuzzValue(t *testing.T, v string) {
	t.Helper()
	for _, target := range fuzzTargets() {
		out, err := render(target.build(v), testOpts)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("%s=%q: error %v does not wrap ErrInvalidConfig", target.name, v, err)
			}
			continue
		}
		for _, name := range sortedKeys(out.trees) {
			if err := roundTrip(name, out.trees[name], out.files[name]); err != nil {
				t.Fatalf("%s=%q: %v\n%s", target.name, v, err, out.files[name])
			}
		}
		parsed, err := parseNginx(out.files[target.file])
		if err != nil {
			t.Fatalf("%s=%q: %v", target.name, v, err)
		}
		found := findDirectives(parsed, target.directive, func(d *crossplane.Directive) bool { return len(d.Args) > 0 && target.match(d) })
		want := target.want(v)
		switch {
		case len(want) == 0 && len(found) == 0:
		case len(found) != 1:
			t.Fatalf("%s=%q: %d %s directives, want 1\n%s", target.name, v, len(found), target.directive, out.files[target.file])
		case !slices.Equal(found[0].Args, want):
			t.Fatalf("%s=%q: %s %q, want %q", target.name, v, target.directive, found[0].Args, want)
		}
	}
}

func FuzzRender(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(checkFuzzValue)
}
