package jsonenc

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "tab\there", "<b>&amp;</b>", "é ünïcode", "\u2028", "nul\x00"} {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestAppendObject(t *testing.T) {
	id := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	for _, tc := range []struct {
		name string
		m    map[string]any
		ok   bool
	}{
		{"empty", map[string]any{}, true},
		{"scalars", map[string]any{"z": "last", "a": 1, "m": int64(-7), "b": true, "n": nil, "u": uint64(18446744073709551615), "i32": int32(3), "u32": uint32(4)}, true},
		{"uuid and escapes", map[string]any{"id": id, "msg": "a \"quoted\" <tag>", "k\"ey": "v"}, true},
		{"a float goes to encoding/json", map[string]any{"x": 1.5}, false},
		{"a nested map goes to encoding/json", map[string]any{"x": map[string]any{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := AppendObject([]byte("prefix"), tc.m)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				if string(got) != "prefix" {
					t.Fatalf("b = %q after a refusal, want the prefix alone", got)
				}
				return
			}
			want, _ := json.Marshal(tc.m)
			if string(got) != "prefix"+string(want) {
				t.Fatalf("got %s, want %s", got[len("prefix"):], want)
			}
		})
	}
}
