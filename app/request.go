package app

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
)

// Bind decodes the JSON object in c's body into dst. Unknown fields, a body that is
// not a JSON object, trailing data, type mismatches, strings that are not valid
// UTF-8 (or hold a lone UTF-16 surrogate escape) and keys repeated in an object
// are 422s naming the field. The Content-Type is checked before the handler
// runs (see jsonBody).
func Bind(c *fiber.Ctx, dst any) error {
	return DecodeJSON(c.Body(), dst)
}

// DecodeJSON is Bind for a byte slice. Before decoding, the document is walked
// against dst's type so that unknown fields and type mismatches are reported with
// their full JSON path (servers[1].weight), one detail per bad field.
func DecodeJSON(body []byte, dst any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Invalid("body", FieldInvalidFormat, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Invalid("body", FieldInvalidFormat, "unexpected data after the JSON object")
	}
	v := &Validator{}
	checkStrict(v, trimmed)
	checkShape(v, generic, reflect.TypeOf(dst), "")
	if err := v.Err(); err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	return nil
}

// jsonBody answers, before a /v1 handler runs, a request whose body is not
// strict JSON: 415 when the body comes without a JSON Content-Type
// (application/json or application/*+json, charset utf-8 if any; a missing
// Content-Type is refused too) or with a Content-Encoding, 422 naming the
// field when the JSON holds invalid UTF-8, a lone surrogate escape or a
// repeated key. Malformed JSON is left to the handler's Bind, which names the
// problem. Requests without a body pass.
func jsonBody(c *fiber.Ctx) error {
	if len(c.Request().Body()) == 0 {
		return c.Next()
	}
	if enc := strings.TrimSpace(c.Get(fiber.HeaderContentEncoding)); enc != "" && !strings.EqualFold(enc, "identity") {
		return &HTTPError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
			Message: "Content-Encoding is not supported; send the JSON body uncompressed"}
	}
	if !IsJSONContentType(c.Get(fiber.HeaderContentType)) {
		return &HTTPError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
			Message: "Content-Type must be application/json"}
	}
	body := c.Body()
	if json.Valid(body) {
		v := &Validator{}
		checkStrict(v, body)
		if err := v.Err(); err != nil {
			return err
		}
	}
	return c.Next()
}

// IsJSONContentType reports whether a Content-Type header names JSON:
// application/json or application/<something>+json, with no charset or
// charset=utf-8.
func IsJSONContentType(header string) bool {
	mt, params, err := mime.ParseMediaType(header)
	if err != nil {
		return false
	}
	if mt != fiber.MIMEApplicationJSON && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// checkStrict reports, by JSON path, what encoding/json would silently
// repair in a syntactically valid document: strings (values and keys) that
// are not valid UTF-8 or hold a lone UTF-16 surrogate escape ("\ud800"),
// which it would turn into U+FFFD, and keys repeated within one object, of
// which it would keep the last.
func checkStrict(v *Validator, doc []byte) {
	s := strictScanner{b: doc, v: v}
	s.value("")
}

// strictScanner walks a document that json.Valid accepts; it does not
// check the syntax again.
type strictScanner struct {
	b []byte
	i int
	v *Validator
}

const msgBadEncoding = "must be valid UTF-8 without lone surrogate escapes"

func fieldOf(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

func (s *strictScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *strictScanner) value(path string) {
	s.space()
	if s.i >= len(s.b) {
		return
	}
	switch s.b[s.i] {
	case '{':
		s.object(path)
	case '[':
		s.array(path)
	case '"':
		if _, ok := s.str(); !ok {
			s.v.Add(fieldOf(path), FieldInvalidFormat, msgBadEncoding)
		}
	default: // number, true, false, null
		for s.i < len(s.b) && !bytes.ContainsRune([]byte(",]} \t\n\r"), rune(s.b[s.i])) {
			s.i++
		}
	}
}

func (s *strictScanner) object(path string) {
	s.i++ // {
	seen := map[string]bool{}
	for s.i < len(s.b) {
		s.space()
		switch s.b[s.i] {
		case '}':
			s.i++
			return
		case ',':
			s.i++
			s.space()
		}
		key, ok := s.str()
		field := joinPath(path, strings.ToValidUTF8(key, "\uFFFD"))
		switch {
		case !ok:
			s.v.Add(field, FieldInvalidFormat, "field name "+msgBadEncoding)
		case seen[key]:
			s.v.Add(field, FieldDuplicate, "appears more than once in the object")
		}
		seen[key] = true
		s.space()
		s.i++ // :
		s.value(field)
	}
}

func (s *strictScanner) array(path string) {
	s.i++ // [
	for n := 0; s.i < len(s.b); n++ {
		s.space()
		switch s.b[s.i] {
		case ']':
			s.i++
			return
		case ',':
			s.i++
		}
		s.value(fmt.Sprintf("%s[%d]", path, n))
	}
}

// str reads the string literal at s.i and returns its value; ok is false when
// it holds invalid UTF-8 or a lone surrogate escape.
func (s *strictScanner) str() (string, bool) {
	s.i++ // opening quote
	var out []byte
	ok := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return string(out), ok
		case c == '\\':
			if s.b[s.i+1] != 'u' {
				out = append(out, unescape(s.b[s.i+1]))
				s.i += 2
				continue
			}
			r := hex4(s.b[s.i+2 : s.i+6])
			s.i += 6
			if utf16.IsSurrogate(r) {
				lo := rune(-1)
				if r < 0xdc00 && s.i+6 <= len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					lo = hex4(s.b[s.i+2 : s.i+6])
				}
				if r >= 0xdc00 || lo < 0xdc00 || lo > 0xdfff {
					ok = false
					continue
				}
				r = utf16.DecodeRune(r, lo)
				s.i += 6
			}
			out = utf8.AppendRune(out, r)
		case c < utf8.RuneSelf:
			out = append(out, c)
			s.i++
		default:
			r, size := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && size == 1 {
				ok = false
			}
			out = append(out, s.b[s.i:s.i+size]...)
			s.i += size
		}
	}
	return string(out), ok
}

func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // " \\ /
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
var jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

// checkShape reports values of doc that t cannot hold, and object keys t does not
// have, by JSON path.
func checkShape(v *Validator, doc any, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		if doc == nil {
			return
		}
		t = t.Elem()
	}
	if doc == nil {
		return
	}
	field := path
	if field == "" {
		field = "body"
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		str, ok := doc.(string)
		if !ok {
			v.Add(field, FieldInvalidFormat, "must be a string")
			return
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(str)); err != nil {
			msg := "has an invalid format"
			if t == uuidType {
				msg = "must be a UUID"
			}
			v.Add(field, FieldInvalidFormat, msg)
		}
		return
	}
	switch t.Kind() {
	case reflect.Interface:
		return
	case reflect.String:
		if _, ok := doc.(string); !ok {
			v.Add(field, FieldInvalidFormat, "must be a string")
		}
	case reflect.Bool:
		if _, ok := doc.(bool); !ok {
			v.Add(field, FieldInvalidFormat, "must be a boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := doc.(json.Number)
		if !ok {
			v.Add(field, FieldInvalidFormat, "must be an integer")
			return
		}
		i, err := n.Int64()
		if err != nil || reflect.Zero(t).OverflowInt(i) {
			v.Add(field, FieldInvalidValue, "must be an integer in range")
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := doc.(json.Number)
		if !ok {
			v.Add(field, FieldInvalidFormat, "must be an integer")
			return
		}
		i, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil || reflect.Zero(t).OverflowUint(i) {
			v.Add(field, FieldInvalidValue, "must be a non-negative integer in range")
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := doc.(json.Number); !ok {
			v.Add(field, FieldInvalidFormat, "must be a number")
		}
	case reflect.Slice, reflect.Array:
		arr, ok := doc.([]any)
		if !ok {
			if t.Elem().Kind() == reflect.Uint8 {
				if _, ok := doc.(string); ok {
					return
				}
			}
			v.Add(field, FieldInvalidFormat, "must be an array")
			return
		}
		for i, e := range arr {
			checkShape(v, e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			v.Add(field, FieldInvalidFormat, "must be an object")
			return
		}
		for k, e := range obj {
			checkShape(v, e, t.Elem(), joinPath(path, k))
		}
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			v.Add(field, FieldInvalidFormat, "must be an object")
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				v.Add(joinPath(path, k), FieldUnknown, "unknown field")
				continue
			}
			checkShape(v, obj[k], ft, joinPath(path, k))
		}
	}
}

// jsonFields maps the JSON names of t's fields (embedded structs flattened) to
// their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return Invalid(field, FieldInvalidFormat, fmt.Sprintf("must be %s", jsonKind(te.Type.Kind().String())))
	case errors.As(err, &se):
		return Invalid("body", FieldInvalidFormat, fmt.Sprintf("malformed JSON at byte %d", se.Offset))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return Invalid(name, FieldUnknown, "unknown field")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Invalid("body", FieldInvalidFormat, "truncated JSON")
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve
	}
	return Invalid("body", FieldInvalidFormat, "malformed JSON")
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	}
	return "of another type"
}

// ParamUUID reads a UUID path parameter. A malformed id is reported as 404: no
// object has that id.
func ParamUUID(c *fiber.Ctx, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Params(name))
	if err != nil || len(c.Params(name)) != 36 {
		return uuid.Nil, fmt.Errorf("%w: no such %s", ErrNotFound, strings.TrimSuffix(name, "_id"))
	}
	return id, nil
}

// Page is a pagination request. per_page is capped at MaxPerPage (not rejected).
type Page struct {
	Page    int `json:"page"`
	PerPage int `json:"per_page"`
}

// Pagination bounds.
const (
	DefaultPerPage = 20
	MaxPerPage     = 100
)

// Offset is the number of rows to skip.
func (p Page) Offset() int { return (p.Page - 1) * p.PerPage }

// ParsePage reads page and per_page. Non-numbers and values below 1 are 422s;
// per_page above MaxPerPage is capped to MaxPerPage.
func ParsePage(c *fiber.Ctx) (Page, error) {
	p := Page{Page: 1, PerPage: DefaultPerPage}
	v := &Validator{}
	if s := c.Query("page"); s != "" {
		n, err := strconv.Atoi(s)
		v.Check(err == nil && n >= 1, "page", FieldInvalidValue, "must be an integer of at least 1")
		p.Page = n
	}
	if s := c.Query("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		v.Check(err == nil && n >= 1, "per_page", FieldInvalidValue, "must be an integer of at least 1")
		p.PerPage = min(n, MaxPerPage)
	}
	if p.Page > 1_000_000 {
		v.Add("page", FieldInvalidValue, "is too large")
	}
	return p, v.Err()
}

// ListMeta is the meta object of a paginated list.
type ListMeta struct {
	Page    int   `json:"page"`
	PerPage int   `json:"per_page"`
	Total   int64 `json:"total"`
}

// List is the paginated envelope {data, meta} (docs/API.md, Pagination).
type List[T any] struct {
	Data []T      `json:"data"`
	Meta ListMeta `json:"meta"`
}

// NewList builds the envelope; a nil slice is sent as [].
func NewList[T any](items []T, p Page, total int64) List[T] {
	if items == nil {
		items = []T{}
	}
	return List[T]{Data: items, Meta: ListMeta{Page: p.Page, PerPage: p.PerPage, Total: total}}
}

// Validator collects field errors.
type Validator struct {
	fields []FieldError
}

// Add records a bad field.
func (v *Validator) Add(field, code, message string) {
	v.fields = append(v.fields, FieldError{Field: field, Code: code, Message: message})
}

// Check records a bad field when ok is false and reports ok.
func (v *Validator) Check(ok bool, field, code, message string) bool {
	if !ok {
		v.Add(field, code, message)
	}
	return ok
}

// Merge adds the fields of err when it is a ValidationError (prefixing each field
// with prefix) and returns other errors unchanged.
func (v *Validator) Merge(prefix string, err error) error {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	for _, f := range ve.Fields {
		if prefix != "" {
			f.Field = prefix + "." + f.Field
		}
		v.fields = append(v.fields, f)
	}
	return nil
}

// OK reports whether no field failed.
func (v *Validator) OK() bool { return len(v.fields) == 0 }

// Err returns a *ValidationError listing every bad field, or nil.
func (v *Validator) Err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return &ValidationError{Fields: v.fields}
}

// Time is a timestamp that marshals as RFC 3339 in UTC with second precision.
type Time struct{ time.Time }

// MarshalJSON writes RFC 3339 UTC.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + t.UTC().Format(time.RFC3339) + `"`), nil
}

// TimePtr converts an optional time.
func TimePtr(t *time.Time) *Time {
	if t == nil {
		return nil
	}
	return &Time{*t}
}
