package render

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// ErrUnsafeArg is wrapped by every error ValidateArg returns.
var ErrUnsafeArg = errors.New("value cannot be written to nginx config faithfully")

// ValidateArg reports whether s can be used as one argument of an nginx
// directive: written out by crossplane.Build and read back, both by nginx and
// by crossplane.Parse, as exactly the one argument s.
//
// It rejects:
//   - invalid UTF-8, NUL and every other control character (crossplane quotes
//     them with Go escapes such as \x00 or \a that nginx does not understand,
//     and its lexer drops carriage returns);
//   - Unicode characters that are not printable (strconv.IsPrint), for the
//     same reason;
//   - anything that does not survive the round trip, checked by tokenizing
//     the quoted form with a reimplementation of nginx's tokenizer and with
//     crossplane's lexer. In practice this rejects a trailing backslash, a
//     backslash before one of " ' \ t r n (nginx unescapes those), a leading
//     "#" (crossplane does not quote it, so nginx would read a comment), and
//     some mixes of quotes and backslashes.
//
// Everything else, including spaces, ";", "{", "}", quotes, "$" and "#"
// after the first byte, is quoted by crossplane in a way both parsers read
// back unchanged. ValidateArg says nothing about whether nginx will accept
// the value for a given directive.
func ValidateArg(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: invalid UTF-8", ErrUnsafeArg)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character %q", ErrUnsafeArg, r)
		}
		if !strconv.IsPrint(r) {
			return fmt.Errorf("%w: non-printable character %q", ErrUnsafeArg, r)
		}
	}
	if plainArg(s) {
		return nil
	}
	enc := crossplane.Enquote(s)
	if simpleArg(s) && (enc == s && !strings.ContainsAny(s, " ;") || enc == `"`+s+`"`) {
		// Without backslashes, quotes, braces and "#", both tokenizers read
		// a bare word up to the next space, ";" or "{" (which crossplane
		// quotes), and a double-quoted string up to the next double quote.
		return nil
	}
	if err := checkNginxReadsBack(enc, s); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafeArg, err)
	}
	if err := checkCrossplaneReadsBack(enc, s); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafeArg, err)
	}
	return nil
}

// plainArg reports whether s consists only of bytes that neither nginx nor
// crossplane treat specially anywhere in a word, so that crossplane writes it
// unquoted and both read it back unchanged. It is a fast path: ValidateArg's
// full check accepts every such string too (the tests make sure of it).
func plainArg(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._/:=,@+*~^%?&!|()[]<>", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// simpleArg reports whether s has none of the bytes whose meaning differs
// between nginx's tokenizer and crossplane's or depends on their position:
// backslash, quotes, braces and "#". Spaces, ";" and "$" are fine: crossplane
// double-quotes strings holding the first two, and "$" matters only next to a
// brace.
func simpleArg(s string) bool {
	return !strings.ContainsAny(s, "\\\"'{}#")
}

// checkNginxReadsBack checks that nginx reads "d <enc>;" as directive d with
// the single argument want, ending exactly at the ";".
func checkNginxReadsBack(enc, want string) error {
	l := &ngxLexer{data: []byte("d " + enc + ";"), line: 1}
	args, tok, err := l.readStatement()
	if err != nil {
		return fmt.Errorf("nginx would read %s as broken config: %w", enc, err)
	}
	if tok != ngxTokOK || l.pos != len(l.data) || len(args) != 2 || args[1] != want {
		return fmt.Errorf("nginx would read %s differently", enc)
	}
	return nil
}

// checkCrossplaneReadsBack checks that crossplane lexes "d <enc>;" as the
// directive d, the argument want and the terminating ";".
func checkCrossplaneReadsBack(enc, want string) error {
	var toks []crossplane.NgxToken
	for t := range crossplane.Lex(strings.NewReader("d " + enc + ";")) {
		toks = append(toks, t)
	}
	ok := len(toks) == 3 && toks[0].Value == "d" &&
		toks[1].Error == nil && toks[1].Value == want &&
		(toks[1].IsQuoted || !strings.ContainsAny(want[:min(1, len(want))], "#;{}")) &&
		toks[2].Value == ";" && !toks[2].IsQuoted && toks[2].Error == nil
	if !ok {
		return fmt.Errorf("crossplane would read %s differently", enc)
	}
	return nil
}
