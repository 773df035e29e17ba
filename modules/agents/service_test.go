package agents

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
)

func TestRegistrationPolicy_Allows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		policy   RegistrationPolicy
		hostname string
		want     bool
	}{
		{"EmptyAllowsAll", RegistrationPolicy{}, "anything", true},
		{"AllowMatch", RegistrationPolicy{Allow: []string{"web-*.internal"}}, "web-01.internal", true},
		{"AllowMiss", RegistrationPolicy{Allow: []string{"web-*.internal"}}, "db-01.internal", false},
		{"CaseInsensitive", RegistrationPolicy{Allow: []string{"Web-*"}}, "WEB-1", true},
		{"TrailingDot", RegistrationPolicy{Allow: []string{"web-1.internal"}}, "web-1.internal.", true},
		{"DenyWinsOverAllow", RegistrationPolicy{Allow: []string{"web-*"}, Deny: []string{"web-bad*"}}, "web-bad-1", false},
		{"DenyOnly", RegistrationPolicy{Deny: []string{"*.dmz"}}, "x.dmz", false},
		{"DenyOnlyOthersAllowed", RegistrationPolicy{Deny: []string{"*.dmz"}}, "x.internal", true},
		{"StarDoesNotCrossSlash", RegistrationPolicy{Allow: []string{"*"}}, "a/b", false},
		{"CharacterClass", RegistrationPolicy{Allow: []string{"node-[0-9]"}}, "node-7", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := c.policy.Allows(c.hostname); got != c.want {
				t.Fatalf("%+v.Allows(%q) = %v", c.policy, c.hostname, got)
			}
		})
	}
}

func TestCheckLabels(t *testing.T) {
	t.Parallel()
	v := &app.Validator{}
	out := checkLabels(v, "labels", map[string]string{"env": "production", "app.kubernetes.io/name": "web"})
	if !v.OK() || len(out) != 2 {
		t.Fatalf("valid labels refused: %v", v.Err())
	}
	for name, in := range map[string]map[string]string{
		"EmptyValue": {"env": ""}, "Space": {"env": "a b"}, "Dollar": {"e$": "x"}, "Long": {"k": strings.Repeat("a", 64)},
	} {
		v := &app.Validator{}
		checkLabels(v, "labels", in)
		if v.OK() {
			t.Fatalf("%s accepted", name)
		}
	}
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[string(rune('a'+i%26))+string(rune('a'+i/26))] = "x"
	}
	v = &app.Validator{}
	checkLabels(v, "labels", many)
	if v.OK() {
		t.Fatalf("%d labels accepted", len(many))
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"web-01":         "web-01",
		"web server":     "'web server'",
		"it's":           `'it'\''s'`,
		"$(rm -rf /)":    "'$(rm -rf /)'",
		"a;b":            "'a;b'",
		"name@host:9443": "name@host:9443",
	} {
		if got := shellQuote(in); got != want {
			t.Fatalf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	t.Parallel()
	cfg := app.DefaultConfig()
	cfg.HTTP.PublicURL = "https://nxmesh.example.com"
	cfg.GRPC.Addr = "0.0.0.0:7443"
	if got := PublicAddr(cfg); got != "nxmesh.example.com:7443" {
		t.Fatalf("derived = %s", got)
	}
	cfg.GRPC.PublicAddr = "agents.example.com:443"
	if got := PublicAddr(cfg); got != "agents.example.com:443" {
		t.Fatalf("configured = %s", got)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	var got []time.Duration
	for a := 1; a <= 6; a++ {
		got = append(got, backoff(a))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("backoff = %v, want %v", got, want)
	}
}

func TestClip(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"a\x00b", 10, "ab"},
		{"héllo", 2, "h"},
		{"bad\xffutf8", 20, "badutf8"},
	} {
		if got := clip(c.in, c.n); got != c.want {
			t.Fatalf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
