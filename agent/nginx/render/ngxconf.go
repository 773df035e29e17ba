package render

import (
	"errors"
	"fmt"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// This file holds a reimplementation of nginx's own configuration tokenizer
// (ngx_conf_read_token in src/core/ngx_conf_file.c, unchanged in substance
// from nginx 1.0 to 1.27). It exists so that the renderer can check what
// nginx itself, not only crossplane, will read back from the text that
// crossplane.Build writes. The two disagree on several inputs: crossplane's
// lexer drops carriage returns, ends a bare word at "}", and leaves "\n",
// "\t" and "\r" escapes alone, while nginx turns them into control bytes.

// ngxToken is what one call to ngx_conf_read_token returns.
type ngxToken int

const (
	ngxTokOK         ngxToken = iota // statement ended by ";"
	ngxTokBlockStart                 // statement ended by "{"
	ngxTokBlockDone                  // "}"
	ngxTokFileDone                   // end of input
)

// ngxLexer is the state that survives between statements.
type ngxLexer struct {
	data []byte
	pos  int
	line int
}

// readStatement returns the words of the next statement and what ended it.
// It follows ngx_conf_read_token step by step, including its quirks: "${"
// does not start a block inside a word, "}" does not end a bare word, a
// backslash protects the next byte from the tokenizer, and only \" \' \\ \t
// \r \n are unescaped when a word is copied out.
func (l *ngxLexer) readStatement() ([]string, ngxToken, error) {
	var (
		args                               []string
		start                              int
		found, needSpace, sharpComment     bool
		variable, quoted, sQuoted, dQuoted bool
		lastSpace                          = true
		isSpace                            = func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
		errorf                             = func(format string, a ...any) error {
			return fmt.Errorf("line %d: "+format, append([]any{l.line}, a...)...)
		}
	)
	for {
		if l.pos >= len(l.data) {
			if len(args) > 0 || !lastSpace {
				return nil, 0, errorf(`unexpected end of file, expecting ";" or "}"`)
			}
			return nil, ngxTokFileDone, nil
		}
		ch := l.data[l.pos]
		l.pos++
		if ch == '\n' {
			l.line++
			sharpComment = false
		}
		if sharpComment {
			continue
		}
		if quoted {
			quoted = false
			continue
		}
		if needSpace {
			switch {
			case isSpace(ch):
				lastSpace, needSpace = true, false
				continue
			case ch == ';':
				return args, ngxTokOK, nil
			case ch == '{':
				return args, ngxTokBlockStart, nil
			case ch == ')':
				lastSpace, needSpace = true, false
			default:
				return nil, 0, errorf("unexpected %q", ch)
			}
		}
		if lastSpace {
			if isSpace(ch) {
				continue
			}
			start = l.pos - 1
			switch ch {
			case ';', '{':
				if len(args) == 0 {
					return nil, 0, errorf("unexpected %q", ch)
				}
				if ch == '{' {
					return args, ngxTokBlockStart, nil
				}
				return args, ngxTokOK, nil
			case '}':
				if len(args) != 0 {
					return nil, 0, errorf(`unexpected "}"`)
				}
				return nil, ngxTokBlockDone, nil
			case '#':
				sharpComment = true
				continue
			case '\\':
				quoted = true
				lastSpace = false
				continue
			case '"':
				start++
				dQuoted = true
				lastSpace = false
				continue
			case '\'':
				start++
				sQuoted = true
				lastSpace = false
				continue
			default:
				lastSpace = false
			}
			continue
		}
		if ch == '{' && variable {
			continue
		}
		variable = false
		if ch == '\\' {
			quoted = true
			continue
		}
		if ch == '$' {
			variable = true
			continue
		}
		switch {
		case dQuoted:
			if ch == '"' {
				dQuoted, needSpace, found = false, true, true
			}
		case sQuoted:
			if ch == '\'' {
				sQuoted, needSpace, found = false, true, true
			}
		case isSpace(ch) || ch == ';' || ch == '{':
			lastSpace, found = true, true
		}
		if !found {
			continue
		}
		args = append(args, ngxUnescape(l.data[start:l.pos-1]))
		switch ch {
		case ';':
			return args, ngxTokOK, nil
		case '{':
			return args, ngxTokBlockStart, nil
		}
		found = false
	}
}

// ngxUnescape copies a word out the way ngx_conf_read_token does.
func ngxUnescape(src []byte) string {
	dst := make([]byte, 0, len(src))
	for i := 0; i < len(src); {
		if src[i] == '\\' && i+1 < len(src) {
			switch src[i+1] {
			case '"', '\'', '\\':
				i++
			case 't':
				dst = append(dst, '\t')
				i += 2
				continue
			case 'r':
				dst = append(dst, '\r')
				i += 2
				continue
			case 'n':
				dst = append(dst, '\n')
				i += 2
				continue
			}
		}
		dst = append(dst, src[i])
		i++
	}
	return string(dst)
}

// parseNginx parses config text into a directive tree the way nginx's
// ngx_conf_parse splits it into statements and blocks. Only Directive, Args
// and Block are filled in; comments are dropped, as nginx drops them.
func parseNginx(data []byte) (crossplane.Directives, error) {
	l := &ngxLexer{data: data, line: 1}
	tree, tok, err := l.parseBlock()
	if err != nil {
		return nil, err
	}
	if tok == ngxTokBlockDone {
		return nil, fmt.Errorf(`line %d: unexpected "}"`, l.line)
	}
	return tree, nil
}

var errNgxEOFInBlock = errors.New(`unexpected end of file, expecting "}"`)

func (l *ngxLexer) parseBlock() (crossplane.Directives, ngxToken, error) {
	block := crossplane.Directives{}
	for {
		args, tok, err := l.readStatement()
		if err != nil {
			return nil, 0, err
		}
		switch tok {
		case ngxTokFileDone, ngxTokBlockDone:
			return block, tok, nil
		case ngxTokOK:
			block = append(block, &crossplane.Directive{Directive: args[0], Args: args[1:]})
		case ngxTokBlockStart:
			inner, end, err := l.parseBlock()
			if err != nil {
				return nil, 0, err
			}
			if end != ngxTokBlockDone {
				return nil, 0, fmt.Errorf("line %d: %w", l.line, errNgxEOFInBlock)
			}
			block = append(block, &crossplane.Directive{Directive: args[0], Args: args[1:], Block: inner})
		}
	}
}
