package agents

import (
	"slices"
	"testing"
)

func TestService_TextArray(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want []string
	}{
		{`{}`, []string{}},
		{`{http2,websocket}`, []string{"http2", "websocket"}},
		{`{"a b","c,d","e\"f","g\\h",NULL}`, []string{"a b", "c,d", `e"f`, `g\h`, ""}},
		{`{""}`, []string{""}},
	}
	for _, c := range cases {
		var a textArray
		if err := a.Scan(c.in); err != nil || !slices.Equal([]string(a), c.want) {
			t.Fatalf("Scan(%s) = %q, %v; want %q", c.in, a, err, c.want)
		}
		if err := a.Scan([]byte(c.in)); err != nil || !slices.Equal([]string(a), c.want) {
			t.Fatalf("Scan([]byte %s) = %q, %v", c.in, a, err)
		}
	}
	for _, bad := range []string{``, `{`, `{"a}`, `{"a"b}`, `x`} {
		var a textArray
		if err := a.Scan(bad); err == nil {
			t.Fatalf("Scan(%q) accepted", bad)
		}
	}
	// Value round-trips through Scan.
	in := textArray{"a b", `q"uote`, `back\slash`, "", "plain"}
	v, err := in.Value()
	if err != nil {
		t.Fatal(err)
	}
	var out textArray
	if err := out.Scan(v); err != nil || !slices.Equal(in, out) {
		t.Fatalf("round trip %q -> %v -> %q, %v", in, v, out, err)
	}
}
