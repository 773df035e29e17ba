package render

import (
	"errors"
	"strings"
	"testing"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

func TestValidateArg(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		ok     bool
		quoted string // crossplane's rendering, checked when non-empty
	}{
		{name: "plain word is written as is", in: "example.test", ok: true, quoted: "example.test"},
		{name: "empty string becomes empty quotes", in: "", ok: true, quoted: `""`},
		{name: "space is double quoted", in: "a b", ok: true, quoted: `"a b"`},
		{name: "semicolon is quoted", in: "a;b", ok: true, quoted: `"a;b"`},
		{name: "lone semicolon is quoted", in: ";", ok: true, quoted: `";"`},
		{name: "open brace is quoted", in: "{", ok: true, quoted: `"{"`},
		{name: "close brace is quoted", in: "a}", ok: true, quoted: `"a}"`},
		{name: "double quote switches to single quotes", in: `say "hi"`, ok: true, quoted: `'say "hi"'`},
		{name: "single quote is double quoted", in: "it's", ok: true, quoted: `"it's"`},
		{name: "both quotes escape the single one", in: `a"b'c`, ok: true, quoted: `'a"b\'c'`},
		{name: "hash inside a word is literal", in: "a#b", ok: true, quoted: "a#b"},
		{name: "hash after a space is quoted", in: "a #b", ok: true, quoted: `"a #b"`},
		{name: "variable is left alone", in: "$host", ok: true, quoted: "$host"},
		{name: "braced variable is quoted", in: "${host}x", ok: true, quoted: `"${host}x"`},
		{name: "trailing dollar is quoted", in: "a$", ok: true, quoted: `"a$"`},
		{name: "regex escape is kept", in: `^/a\.b`, ok: true, quoted: `^/a\.b`},
		{name: "regex ending in dollar is quoted", in: `^/a\.b$`, ok: true, quoted: `"^/a\.b$"`},
		{name: "escaped space stays one word", in: `a\ b`, ok: true, quoted: `a\ b`},
		{name: "unicode is kept", in: "café ✓", ok: true, quoted: `"café ✓"`},
		{name: "injection attempt stays one argument", in: "x; include /etc/passwd", ok: true, quoted: `"x; include /etc/passwd"`},
		{name: "leading hash would start a comment", in: "#x", ok: false},
		{name: "trailing backslash would escape the terminator", in: `a\`, ok: false},
		{name: "backslash n would become a newline", in: `a\nb`, ok: false},
		{name: "backslash t would become a tab", in: `a\tb`, ok: false},
		{name: "backslash r would become a carriage return", in: `a\rb`, ok: false},
		{name: "double backslash would collapse", in: `a\\b`, ok: false},
		{name: "escaped quote would lose its backslash", in: `a\"b`, ok: false},
		{name: "newline", in: "a\nb", ok: false},
		{name: "tab", in: "a\tb", ok: false},
		{name: "carriage return", in: "a\rb", ok: false},
		{name: "NUL", in: "a\x00b", ok: false},
		{name: "DEL", in: "a\x7fb", ok: false},
		{name: "invalid UTF-8", in: "a\xffb", ok: false},
		{name: "non-printable unicode", in: "a\u200bb", ok: false},
		{name: "no-break space", in: "a\u00a0b", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateArg(tt.in)
			if tt.ok && err != nil {
				t.Fatalf("ValidateArg(%q) = %v, want nil", tt.in, err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatalf("ValidateArg(%q) = nil, want an error", tt.in)
				}
				if !errors.Is(err, ErrUnsafeArg) {
					t.Fatalf("ValidateArg(%q) = %v, does not wrap ErrUnsafeArg", tt.in, err)
				}
				return
			}
			if tt.quoted != "" {
				if got := crossplane.Enquote(tt.in); got != tt.quoted {
					t.Errorf("crossplane.Enquote(%q) = %s, want %s", tt.in, got, tt.quoted)
				}
			}
			assertDirectiveRoundTrips(t, tt.in)
		})
	}
}

// assertDirectiveRoundTrips builds a small tree using s as a directive
// argument, a block argument and a map key, and checks that both parsers
// read it back.
func assertDirectiveRoundTrips(t *testing.T, s string) {
	t.Helper()
	tree := crossplane.Directives{
		headerComment(),
		dir("a", s, s),
		block("b", []string{s}, crossplane.Directives{dir("c", s), block("d", []string{"x", s}, nil)}),
		block("map", []string{"$a", "$b"}, crossplane.Directives{dir(s, s)}),
	}
	text, err := buildConf(tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip("test.conf", tree, text); err != nil {
		t.Errorf("%q: %v\n%s", s, err, text)
	}
}

// TestValidateArgExhaustive checks every string of up to four characters
// over an alphabet of the bytes that matter to nginx's and crossplane's
// tokenizers: whatever ValidateArg accepts must round-trip through Build
// and both parsers, and the fast path must agree with the full check.
func TestValidateArgExhaustive(t *testing.T) {
	t.Parallel()
	alphabet := []string{"a", "n", " ", ";", "{", "}", `"`, "'", `\`, "#", "$", "("}
	maxLen := 4
	if testing.Short() {
		maxLen = 3
	}
	accepted, total := 0, 0
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		total++
		if err := ValidateArg(prefix); err == nil {
			accepted++
			assertDirectiveRoundTrips(t, prefix)
		}
		if depth == maxLen {
			return
		}
		for _, c := range alphabet {
			walk(prefix+c, depth+1)
		}
	}
	walk("", 0)
	t.Logf("%d of %d strings accepted", accepted, total)
}

func TestPlainArgAgreesWithFullCheck(t *testing.T) {
	t.Parallel()
	var plain strings.Builder
	for c := byte(0x21); c < 0x7f; c++ {
		if plainArg(string(c)) {
			plain.WriteByte(c)
		}
	}
	chars := plain.String()
	for _, c := range chars {
		for _, d := range chars {
			s := string(c) + string(d) + "x"
			enc := crossplane.Enquote(s)
			if enc != s {
				t.Errorf("plain %q is quoted by crossplane as %s", s, enc)
			}
			if err := checkNginxReadsBack(enc, s); err != nil {
				t.Errorf("plain %q: %v", s, err)
			}
			if err := checkCrossplaneReadsBack(enc, s); err != nil {
				t.Errorf("plain %q: %v", s, err)
			}
		}
	}
}

func TestParseNginx(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want crossplane.Directives
		err  bool
	}{
		{name: "escapes are unescaped", in: `a "x\ty" 'it\'s' b\"c \\ d\.e;`, want: crossplane.Directives{dir("a", "x\ty", "it's", `b"c`, `\`, `d\.e`)}},
		{name: "brace after dollar stays in the word", in: "a b${x}c;", want: crossplane.Directives{dir("a", "b${x}c")}},
		{name: "close brace does not end a word", in: "a b}c;", want: crossplane.Directives{dir("a", "b}c")}},
		{name: "hash inside a word is literal", in: "a b#c;", want: crossplane.Directives{dir("a", "b#c")}},
		{name: "hash at word start is a comment", in: "a #b;\nc;", want: crossplane.Directives{dir("a", "c")}},
		{name: "blocks nest", in: "a { b { c; } d {} }", want: crossplane.Directives{block("a", nil, crossplane.Directives{block("b", nil, crossplane.Directives{dir("c")}), block("d", nil, nil)})}},
		{name: "quoted string must be followed by a space", in: `a "b"c;`, err: true},
		{name: "unterminated quote", in: `a "b;`, err: true},
		{name: "unclosed block", in: "a {", err: true},
		{name: "stray close brace", in: "}", err: true},
		{name: "missing semicolon", in: "a b", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseNginx([]byte(tt.in))
			if tt.err {
				if err == nil {
					t.Fatalf("parseNginx(%q) succeeded, want an error", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := diffTrees(tt.want, got, true); d != "" {
				t.Errorf("parseNginx(%q): %s", tt.in, d)
			}
		})
	}
}
