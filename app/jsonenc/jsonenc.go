// Package jsonenc appends JSON values to byte slices by hand, for the hot
// paths that encode thousands of small documents a second (health batches,
// event notifications) where encoding/json's reflection dominates. What it
// writes decodes to what encoding/json would have written.
package jsonenc

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"

	"github.com/google/uuid"
)

// AppendString appends s as a JSON string. Strings that need escaping
// (control characters, quotes, backslashes, non-ASCII and the characters
// encoding/json escapes for HTML) are left to encoding/json.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendObject appends m as a JSON object, keys in order as encoding/json
// sorts them. ok is false, and b is returned as it came, when a value is of
// a type other than string, bool, an integer, uuid.UUID or nil; the caller
// then encodes m with encoding/json.
func AppendObject(b []byte, m map[string]any) (_ []byte, ok bool) {
	start := len(b)
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, k)
		b = append(b, ':')
		switch v := m[k].(type) {
		case nil:
			b = append(b, "null"...)
		case string:
			b = AppendString(b, v)
		case bool:
			b = strconv.AppendBool(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case int32:
			b = strconv.AppendInt(b, int64(v), 10)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case uint32:
			b = strconv.AppendUint(b, uint64(v), 10)
		case uuid.UUID:
			b = append(b, '"')
			b = append(b, v.String()...)
			b = append(b, '"')
		default:
			return b[:start], false
		}
	}
	return append(b, '}'), true
}
