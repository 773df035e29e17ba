package agents

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
)

func TestService_RegistrationPolicyCheck(t *testing.T) {
	t.Parallel()
	host := func(h string) Registrant { return Registrant{Hostname: h, PeerAddress: "10.1.2.3"} }
	cases := []struct {
		name   string
		policy RegistrationPolicy
		who    Registrant
		// want is "" when allowed, else the kind of pattern that refuses.
		want string
	}{
		{"EmptyAllowsAll", RegistrationPolicy{}, host("anything"), ""},
		{"AllowMatch", RegistrationPolicy{Allow: []string{"web-*.internal"}}, host("web-01.internal"), ""},
		{"AllowMiss", RegistrationPolicy{Allow: []string{"web-*.internal"}}, host("db-01.internal"), PatternHostname},
		{"CaseInsensitive", RegistrationPolicy{Allow: []string{"Web-*"}}, host("WEB-1"), ""},
		{"TrailingDot", RegistrationPolicy{Allow: []string{"web-1.internal"}}, host("web-1.internal."), ""},
		{"DenyWinsOverAllow", RegistrationPolicy{Allow: []string{"web-*"}, Deny: []string{"web-bad*"}}, host("web-bad-1"), PatternHostname},
		{"DenyOnly", RegistrationPolicy{Deny: []string{"*.dmz"}}, host("x.dmz"), PatternHostname},
		{"DenyOnlyOthersAllowed", RegistrationPolicy{Deny: []string{"*.dmz"}}, host("x.internal"), ""},
		{"StarDoesNotCrossSlash", RegistrationPolicy{Allow: []string{"*"}}, host("a/b"), PatternHostname},
		{"CharacterClass", RegistrationPolicy{Allow: []string{"node-[0-9]"}}, host("node-7"), ""},

		{"AllowCIDRMatchesPeer", RegistrationPolicy{Allow: []string{"10.0.0.0/8"}}, host("any"), ""},
		{"AllowCIDRMissesPeer", RegistrationPolicy{Allow: []string{"192.168.0.0/16"}}, host("any"), PatternPeerAddress},
		{"AllowSingleIP", RegistrationPolicy{Allow: []string{"10.1.2.3"}}, host("any"), ""},
		{"DenyCIDR", RegistrationPolicy{Deny: []string{"10.1.0.0/16"}}, host("web-1"), PatternPeerAddress},
		{"MappedPeerMatchesIPv4CIDR", RegistrationPolicy{Allow: []string{"10.0.0.0/8"}}, Registrant{Hostname: "h", PeerAddress: "::ffff:10.1.2.3"}, ""},
		{"IPv6CIDR", RegistrationPolicy{Allow: []string{"fd00::/8"}}, Registrant{Hostname: "h", PeerAddress: "fd12::1"}, ""},
		{"UnknownPeerFailsAddressAllow", RegistrationPolicy{Allow: []string{"10.0.0.0/8"}}, Registrant{Hostname: "h"}, PatternPeerAddress},
		{"UnknownPeerPassesAddressDeny", RegistrationPolicy{Deny: []string{"10.0.0.0/8"}}, Registrant{Hostname: "h"}, ""},
		{"AddressPatternIgnoresClaimedHostname", RegistrationPolicy{Allow: []string{"192.168.1.0/24"}}, Registrant{Hostname: "192.168.1.5", PeerAddress: "10.1.2.3"}, PatternPeerAddress},
		{"HostnameGlobIgnoresPeer", RegistrationPolicy{Deny: []string{"10.1.2.*"}}, host("web-1"), ""},

		{"KindsCombineWithAnd", RegistrationPolicy{Allow: []string{"web-*", "192.168.0.0/16"}}, host("web-1"), PatternPeerAddress},
		{"KindsCombineWithAndBothMatch", RegistrationPolicy{Allow: []string{"web-*", "10.0.0.0/8"}}, host("web-1"), ""},

		{"AllowLabel", RegistrationPolicy{Allow: []string{"env=prod*"}}, Registrant{Hostname: "h", Labels: map[string]string{"env": "production"}}, ""},
		{"AllowLabelMiss", RegistrationPolicy{Allow: []string{"env=prod*"}}, Registrant{Hostname: "h", Labels: map[string]string{"env": "staging"}}, PatternLabel},
		{"AllowLabelWithoutLabels", RegistrationPolicy{Allow: []string{"env=prod*"}}, Registrant{Hostname: "h"}, PatternLabel},
		{"DenyLabel", RegistrationPolicy{Deny: []string{"env=dev"}}, Registrant{Hostname: "h", Labels: map[string]string{"ENV": "Dev"}}, PatternLabel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := c.policy.Check(c.who)
			switch {
			case c.want == "" && d != nil:
				t.Fatalf("%+v refuses %+v: %+v", c.policy, c.who, d)
			case c.want != "" && d == nil:
				t.Fatalf("%+v allows %+v, want a refusal by %s", c.policy, c.who, c.want)
			case c.want != "" && (d.Kind != c.want || d.Detail == ""):
				t.Fatalf("%+v refuses %+v with %+v, want kind %s and a reason", c.policy, c.who, d, c.want)
			}
		})
	}
}

func TestService_CheckPatterns(t *testing.T) {
	t.Parallel()
	v := &app.Validator{}
	got := checkPatterns(v, "allow", []string{"Web-*", "10.1.2.3/8", "::ffff:10.0.0.0/104", "FD00::1", "Env=Prod*", "role=web-?"})
	want := []string{"web-*", "10.0.0.0/8", "10.0.0.0/8", "fd00::1", "env=prod*", "role=web-?"}
	if !v.OK() || !slices.Equal(got, want) {
		t.Fatalf("checkPatterns = %v (%v), want %v", got, v.Err(), want)
	}
	for _, bad := range []string{"web-[", "=prod", "env=", "env=[", "e$v=x", "fe80::1%eth0"} {
		v := &app.Validator{}
		if checkPatterns(v, "allow", []string{bad}); v.OK() {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestService_CheckLabels(t *testing.T) {
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

func TestService_ShellQuote(t *testing.T) {
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

func TestService_PublicAddr(t *testing.T) {
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

func TestService_Backoff(t *testing.T) {
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

func TestService_Clip(t *testing.T) {
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
