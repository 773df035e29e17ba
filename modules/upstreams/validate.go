package upstreams

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nxmesh/nxmesh/app"
)

// Validation limits (inclusive). Lower bounds not listed are 0.
const (
	MaxNameLength        = 100  // characters of a name
	MaxServers           = 1000 // servers of an upstream (at least one)
	MinWeight, MaxWeight = 1, 1000
	MaxMaxFails          = 100
	MaxFailTimeout       = 3600 // seconds
	MaxKeepalive         = 10000
	MaxHealthPathLength  = 1024 // bytes
	MinInterval          = 1    // seconds
	MaxInterval          = 3600 // seconds
	MinTimeout           = 1    // seconds
	MaxTimeout           = 300  // seconds, and at most the interval
	MinThreshold         = 1
	MaxThreshold         = 100
)

const (
	maxHostnameLength       = 253
	maxHostnameLabelLength  = 63
	algorithmChoicesMessage = "must be one of round_robin, least_connections, ip_hash, weighted_round_robin"
)

// checkName validates an upstream's (trimmed) name: 1 to 100 printable
// characters.
func checkName(v *app.Validator, field, name string) {
	switch {
	case name == "":
		v.Add(field, app.FieldRequired, "is required")
	case !utf8.ValidString(name):
		v.Add(field, app.FieldInvalidFormat, "must be valid UTF-8")
	case utf8.RuneCountInString(name) > MaxNameLength:
		v.Add(field, app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxNameLength))
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		v.Add(field, app.FieldInvalidFormat, "must contain only printable characters")
	}
}

// upstreamPaths says where the parts of an upstream being validated came from,
// so that a rule involving two fields names the one the caller sent.
type upstreamPaths struct {
	// serversGiven: servers came from the request (create, or a PATCH that
	// replaces them).
	serversGiven bool
	// timeoutGiven: health_check.timeout came from the request.
	timeoutGiven bool
}

// validateUpstream checks every field of u (defaults already applied) and
// returns a *app.ValidationError naming each bad one by its JSON path.
func validateUpstream(u Upstream, paths upstreamPaths) error {
	v := &app.Validator{}
	checkName(v, "name", u.Name)
	v.Check(u.Algorithm.Valid(), "algorithm", app.FieldInvalidValue, algorithmChoicesMessage)
	checkServers(v, u.Servers, u.Algorithm, paths.serversGiven)
	v.Check(u.KeepaliveConnections >= 0 && u.KeepaliveConnections <= MaxKeepalive,
		"keepalive_connections", app.FieldInvalidValue, fmt.Sprintf("must be between 0 and %d", MaxKeepalive))
	checkHealthCheck(v, u.HealthCheck, paths.timeoutGiven)
	return v.Err()
}

func checkServers(v *app.Validator, servers []Server, alg Algorithm, given bool) {
	switch {
	case len(servers) == 0:
		v.Add("servers", app.FieldRequired, "must list at least one server")
		return
	case len(servers) > MaxServers:
		v.Add("servers", app.FieldInvalidValue, fmt.Sprintf("must list at most %d servers", MaxServers))
		return
	}
	seen := make(map[string]int, len(servers))
	primary := false
	for i, s := range servers {
		p := fmt.Sprintf("servers[%d].", i)
		if key, err := addressKey(s.Address); err != nil {
			code := app.FieldInvalidFormat
			if s.Address == "" {
				code = app.FieldRequired
			}
			v.Add(p+"address", code, err.Error())
		} else if j, dup := seen[key]; dup {
			v.Add(p+"address", app.FieldInvalidValue, fmt.Sprintf("duplicates servers[%d].address", j))
		} else {
			seen[key] = i
		}
		v.Check(s.Weight >= MinWeight && s.Weight <= MaxWeight, p+"weight", app.FieldInvalidValue,
			fmt.Sprintf("must be between %d and %d", MinWeight, MaxWeight))
		v.Check(s.MaxFails >= 0 && s.MaxFails <= MaxMaxFails, p+"max_fails", app.FieldInvalidValue,
			fmt.Sprintf("must be between 0 and %d", MaxMaxFails))
		v.Check(s.FailTimeout >= 0 && s.FailTimeout <= MaxFailTimeout, p+"fail_timeout", app.FieldInvalidValue,
			fmt.Sprintf("must be between 0 and %d seconds", MaxFailTimeout))
		if s.Backup && alg == IPHash {
			if given {
				v.Add(p+"backup", app.FieldInvalidValue, "backup servers cannot be used with the ip_hash algorithm")
			} else {
				v.Add("algorithm", app.FieldInvalidValue, fmt.Sprintf("ip_hash cannot be used with backup servers (servers[%d] is one)", i))
			}
		}
		if !s.Backup {
			primary = true
		}
	}
	if !primary && alg != IPHash {
		// nginx refuses an upstream whose servers are all backups.
		v.Add("servers", app.FieldInvalidValue, "must include at least one server that is not a backup")
	}
}

func checkHealthCheck(v *app.Validator, h HealthCheck, timeoutGiven bool) {
	const p = "health_check."
	if err := checkHealthPath(h.Path); err != nil {
		code := app.FieldInvalidFormat
		switch {
		case h.Path == "":
			code = app.FieldRequired
		case len(h.Path) > MaxHealthPathLength:
			code = app.FieldTooLong
		}
		v.Add(p+"path", code, err.Error())
	}
	okInterval := v.Check(h.Interval >= MinInterval && h.Interval <= MaxInterval, p+"interval", app.FieldInvalidValue,
		fmt.Sprintf("must be between %d and %d seconds", MinInterval, MaxInterval))
	okTimeout := v.Check(h.Timeout >= MinTimeout && h.Timeout <= MaxTimeout, p+"timeout", app.FieldInvalidValue,
		fmt.Sprintf("must be between %d and %d seconds", MinTimeout, MaxTimeout))
	if okInterval && okTimeout && h.Timeout > h.Interval {
		if timeoutGiven {
			v.Add(p+"timeout", app.FieldInvalidValue, fmt.Sprintf("must not exceed interval (%d seconds)", h.Interval))
		} else {
			v.Add(p+"interval", app.FieldInvalidValue, fmt.Sprintf("must be at least timeout (%d seconds)", h.Timeout))
		}
	}
	v.Check(h.HealthyThreshold >= MinThreshold && h.HealthyThreshold <= MaxThreshold, p+"healthy_threshold",
		app.FieldInvalidValue, fmt.Sprintf("must be between %d and %d", MinThreshold, MaxThreshold))
	v.Check(h.UnhealthyThreshold >= MinThreshold && h.UnhealthyThreshold <= MaxThreshold, p+"unhealthy_threshold",
		app.FieldInvalidValue, fmt.Sprintf("must be between %d and %d", MinThreshold, MaxThreshold))
}

// addressKey checks a server address and returns its canonical form, used to
// find duplicates: host:port, where host is an IPv4 address, an IPv6 address
// in brackets or a DNS name (RFC 1123 labels, at most 253 characters), and the
// port is 1 to 65535 without leading zeros. Names compare case-insensitively
// and IPv6 addresses by value. Unix sockets, bare IPv6 addresses, zones,
// schemes, paths and anything else are refused: the address is written into
// nginx's configuration, so nothing but these grammars may pass.
func addressKey(addr string) (string, error) {
	const want = "must be host:port (IPv4 address, [IPv6] address or DNS name, and a port from 1 to 65535)"
	if addr == "" {
		return "", fmt.Errorf("is required")
	}
	var host, port string
	if strings.HasPrefix(addr, "[") {
		end := strings.IndexByte(addr, ']')
		if end < 0 {
			return "", fmt.Errorf("%s: missing ']'", want)
		}
		host, port = addr[1:end], addr[end+1:]
		if !strings.HasPrefix(port, ":") {
			return "", fmt.Errorf("%s: missing port", want)
		}
		port = port[1:]
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", fmt.Errorf("%s: %q is not an IPv6 address", want, host)
		}
		host = "[" + ip.String() + "]"
	} else {
		i := strings.LastIndexByte(addr, ':')
		if i < 0 {
			return "", fmt.Errorf("%s: missing port", want)
		}
		host, port = addr[:i], addr[i+1:]
		switch {
		case strings.Contains(host, ":"):
			return "", fmt.Errorf("%s: put IPv6 addresses in brackets", want)
		case host == "":
			return "", fmt.Errorf("%s: missing host", want)
		case isDigitsAndDots(host):
			ip, err := netip.ParseAddr(host)
			if err != nil || !ip.Is4() {
				return "", fmt.Errorf("%s: %q is not an IPv4 address", want, host)
			}
			host = ip.String()
		default:
			if err := checkHostname(host); err != nil {
				return "", fmt.Errorf("%s: %w", want, err)
			}
			host = strings.ToLower(host)
		}
	}
	if !validPort(port) {
		return "", fmt.Errorf("%s: port %q is not a number from 1 to 65535", want, port)
	}
	return host + ":" + port, nil
}

func isDigitsAndDots(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// validPort accepts 1 to 65535 in plain decimal without leading zeros.
func validPort(s string) bool {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

// checkHostname accepts a DNS name of RFC 1123 labels (letters, digits and
// inner hyphens, 1 to 63 characters each), at most 253 characters, without a
// trailing dot.
func checkHostname(h string) error {
	if len(h) > maxHostnameLength {
		return fmt.Errorf("host name is longer than %d characters", maxHostnameLength)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return fmt.Errorf("host name %q has an empty label", h)
		}
		if len(label) > maxHostnameLabelLength {
			return fmt.Errorf("host name label %q is longer than %d characters", label, maxHostnameLabelLength)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("host %q may contain only letters, digits, '-' and '.'", h)
			}
		}
	}
	return nil
}

// checkHealthPath accepts an origin-form request target: "/" followed by RFC
// 3986 path and query characters ("?" starts the query). Percent signs must
// start a %XX escape; spaces, control characters and non-ASCII characters must
// be percent-encoded. "$" and ";" are refused
// as well (percent-encode them), so that no value can look like an nginx
// variable or end a directive, wherever it is used.
func checkHealthPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("is required")
	case len(p) > MaxHealthPathLength:
		return fmt.Errorf("must be at most %d characters", MaxHealthPathLength)
	case p[0] != '/':
		return fmt.Errorf("must start with '/'")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!&'()*+,=:@/?", c) >= 0:
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return fmt.Errorf("'%%' must start a %%XX escape")
			}
			i += 2
		case c >= utf8.RuneSelf:
			return fmt.Errorf("must be ASCII; percent-encode other characters")
		default:
			return fmt.Errorf("must be a URL path of letters, digits and -._~!&'()*+,=:@/?%%; %q is not allowed (percent-encode it)", rune(c))
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
