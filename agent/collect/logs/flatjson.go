package logs

import (
	"unicode/utf16"
	"unicode/utf8"
)

// scanFlatObject reads a JSON object whose values are all strings — the
// shape nginx writes for a log_format with escape=json — and calls set for
// each member, in order. It reports false for anything else (a nested
// value, a number, a syntax error, bytes after the object), and the caller
// then falls back to encoding/json, so that its answer is never different
// from the standard decoder's: it is only faster on the lines it accepts.
func scanFlatObject(b []byte, set func(key []byte, val string)) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		// Keys are the renderer's own names: plain ASCII without escapes.
		start := i + 1
		end := start
		for end < len(b) && b[end] != '"' && b[end] != '\\' && b[end] >= 0x20 {
			end++
		}
		if end >= len(b) || b[end] != '"' {
			return false
		}
		key := b[start:end]
		i = skipSpace(b, end+1)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		val, next, ok := scanString(b, i)
		if !ok {
			return false
		}
		set(key, val)
		i = skipSpace(b, next)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString decodes the JSON string starting at b[i] (its opening quote)
// and returns it and the index after its closing quote. Invalid UTF-8 is
// replaced by U+FFFD, as encoding/json does.
func scanString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	start := i + 1
	j := start
	for j < len(b) {
		c := b[j]
		if c == '"' {
			s := b[start:j]
			if !utf8.Valid(s) {
				return "", 0, false // the standard decoder's replacement rules apply
			}
			return string(s), j + 1, true
		}
		if c == '\\' || c < 0x20 {
			break
		}
		j++
	}
	// Slow path: escapes.
	out := make([]byte, 0, j-start+16)
	out = append(out, b[start:j]...)
	for j < len(b) {
		c := b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", 0, false
			}
			return string(out), j + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(b) {
			return "", 0, false
		}
		switch e := b[j+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, j+2)
			if !ok {
				return "", 0, false
			}
			j += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if j+1 < len(b) && b[j] == '\\' && b[j+1] == 'u' {
					r2, ok = hex4(b, j+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					j += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", 0, false
		}
		j += 2
	}
	return "", 0, false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
