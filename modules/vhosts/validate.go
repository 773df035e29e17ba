package vhosts

import (
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
)

// This file holds the grammar of every user-supplied value that reaches nginx.
// Each check names the bad field by its JSON path. The grammars are narrow on
// purpose: they admit what the feature needs and nothing that could start a
// directive, a block, a comment or a variable nginx would expand. As a last
// gate every value that becomes a directive argument also passes
// render.ValidateArg, the renderer's own quoting check.

// Validation limits.
const (
	MaxNameLength           = 100
	MaxServerNames          = 20
	MaxHostnameLength       = 253
	MaxLocations            = 100
	MaxPathLength           = 1024
	MaxURLLength            = 2048
	MaxHeaders              = 50
	MaxHeaderNameLength     = 128
	MaxHeaderValueLength    = 4096
	MaxRewriteRules         = 20
	MaxPatternLength        = 512
	MaxIndexFiles           = 10
	MaxFileNameLength       = 255
	MaxAccessRules          = 100
	MaxBasicAuthUsers       = 50
	MinPasswordLength       = 8
	MaxPasswordLength       = 72 // bcrypt reads at most 72 bytes
	MaxRealmLength          = 64
	MaxTimeoutSeconds       = 3600
	MaxStreamTimeoutSeconds = 86400
	MaxRequestsPerSecond    = 100000
	MaxBurst                = 100000
	MaxAgentIDs             = 1000
	MaxSelectorTerms        = 20
	MaxLabelLength          = 63
)

// AllowedVariables are the nginx variables a header value or a rewrite
// replacement may use, written $name. $uri is deliberately absent: it holds the
// decoded request path, so "%0d%0a" in a request would put a line break into a
// header (response splitting); $request_uri is the raw, safe form.
var AllowedVariables = []string{
	"args", "host", "http_host", "proxy_add_x_forwarded_for", "remote_addr",
	"request_id", "request_uri", "scheme", "server_name", "server_port",
}

// Location match kinds.
const (
	MatchPrefix = "prefix"
	MatchExact  = "exact"
)

// Rewrite flags.
var rewriteFlags = []string{"last", "break", "redirect", "permanent"}

// Redirect codes of redirect-only hosts.
var redirectCodes = []int{301, 302, 307, 308}

// ---- Generic helpers ----

// checkName validates a (trimmed) display name: 1 to 100 printable characters.
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

// argOK is the renderer's own check that s is written and read back as one
// argument.
func argOK(s string) bool { return render.ValidateArg(s) == nil }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// parseUUID reads a canonical (36-character) UUID.
func parseUUID(s string) (uuid.UUID, bool) {
	if len(s) != 36 {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(s)
	return id, err == nil
}

// ---- Host names and URLs ----

// checkHostname checks an RFC 1123 host name: labels of 1 to 63 letters,
// digits and '-' (not first or last), separated by dots, at most 253
// characters.
func checkHostname(h string) error {
	if h == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(h) > MaxHostnameLength {
		return fmt.Errorf("must be at most %d characters", MaxHostnameLength)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a host name: each dot-separated label must have 1 to 63 characters", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name: labels must not start or end with '-'", h)
		}
		for i := 0; i < len(label); i++ {
			if !isAlnum(label[i]) && label[i] != '-' {
				return fmt.Errorf("%q is not a host name: only letters, digits, '-' and '.' are allowed", h)
			}
		}
	}
	return nil
}

// normalizeServerName checks a server_name value (space-separated host names,
// each optionally "*." + host name) and returns it lower-cased with single
// spaces.
func normalizeServerName(v *app.Validator, field, s string) string {
	if s == "" {
		v.Add(field, app.FieldRequired, "is required")
		return ""
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !('!' <= r && r <= '~') }) {
		v.Add(field, app.FieldInvalidFormat, "must be host names separated by single spaces")
		return ""
	}
	names := strings.Fields(s)
	if len(names) == 0 {
		v.Add(field, app.FieldRequired, "is required")
		return ""
	}
	if len(names) > MaxServerNames {
		v.Add(field, app.FieldInvalidValue, fmt.Sprintf("must list at most %d names", MaxServerNames))
		return ""
	}
	seen := map[string]bool{}
	for i, n := range names {
		n = strings.ToLower(n)
		names[i] = n
		host := strings.TrimPrefix(n, "*.")
		if err := checkHostname(host); err != nil {
			v.Add(field, app.FieldInvalidFormat, "each name must be a host name such as example.com or *.example.com: "+err.Error())
			return ""
		}
		if seen[n] {
			v.Add(field, app.FieldInvalidValue, fmt.Sprintf("lists %q twice", n))
			return ""
		}
		seen[n] = true
	}
	return strings.Join(names, " ")
}

// checkURLHost checks the host of a URL: an IPv4 address, an IPv6 address in
// brackets, or a host name.
func checkURLHost(h string) error {
	if strings.HasPrefix(h, "[") {
		if !strings.HasSuffix(h, "]") {
			return fmt.Errorf("an IPv6 address must be in brackets")
		}
		a, err := netip.ParseAddr(h[1 : len(h)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("%q is not an IPv6 address", h)
		}
		return nil
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if !a.Is4() {
			return fmt.Errorf("an IPv6 address must be in brackets")
		}
		return nil
	}
	if strings.Trim(h, "0123456789.") == "" {
		return fmt.Errorf("%q is not an IPv4 address", h)
	}
	return checkHostname(h)
}

// validPort reports whether s is a port from 1 to 65535 without a leading zero.
func validPort(s string) bool {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return false
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

// pathChars are the characters a URL path may use besides letters, digits and
// %XX escapes. Quotes, ';', '$', '#', '\', braces, spaces and '?' are not among
// them.
const pathChars = "-._~!&()*+,=:@/"

// checkURLPath checks a path that starts with "/" and uses only pathChars,
// letters, digits and %XX escapes.
func checkURLPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("must start with /")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case isAlnum(c) || strings.IndexByte(pathChars, c) >= 0:
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return fmt.Errorf("'%%' must start an escape such as %%20")
			}
			i += 2
		default:
			return fmt.Errorf("must contain only letters, digits, %%XX escapes and %s", pathChars)
		}
	}
	return nil
}

// checkHTTPURL checks http(s)://host[:port][/path]: no user info, query,
// fragment or variables.
func checkHTTPURL(u string) error {
	if len(u) > MaxURLLength {
		return fmt.Errorf("must be at most %d characters", MaxURLLength)
	}
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		if rest, ok = strings.CutPrefix(u, "https://"); !ok {
			return fmt.Errorf("must be an http:// or https:// URL")
		}
	}
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	host, port := authority, ""
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.HasSuffix(authority, "]") {
		host, port = authority[:i], authority[i+1:]
		if !validPort(port) {
			return fmt.Errorf("port must be 1 to 65535")
		}
	}
	if err := checkURLHost(host); err != nil {
		return err
	}
	if path != "" {
		if err := checkURLPath(path); err != nil {
			return fmt.Errorf("path %w", err)
		}
	}
	return nil
}

// ---- Locations ----

// checkLocationPath checks a location's path: "/" followed by URL path
// characters.
func checkLocationPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("is required")
	case len(p) > MaxPathLength:
		return fmt.Errorf("must be at most %d characters", MaxPathLength)
	}
	return checkURLPath(p)
}

// deniedRoots are directories a static root may neither be, lie under nor
// contain: the system's configuration, secrets, state and binaries, which
// include the agent's own credentials and the private keys it installs.
// They hold even when vhosts.static_root_prefixes is set more widely.
var deniedRoots = []string{
	"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
	"/proc", "/root", "/run", "/sbin", "/sys", "/tmp",
	"/usr/bin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/local/bin",
	"/usr/local/etc", "/usr/local/lib", "/usr/local/sbin", "/usr/sbin",
	"/var/backups", "/var/cache", "/var/lib", "/var/log", "/var/mail", "/var/run",
	"/var/spool", "/var/tmp",
}

// underDir reports whether the clean absolute path p is dir or lies under it.
func underDir(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// checkRoot checks a static root: an absolute path of plain segments (letters,
// digits, '.', '_', '-', not starting with '.'), so no "." or ".." segments,
// no empty ones and nothing to resolve; one of prefixes or under one of them
// (app.VHostsConfig.RootPrefixes); and neither in, nor a parent of, a
// deniedRoots directory.
func checkRoot(p string, prefixes []string) error {
	switch {
	case len(p) > MaxPathLength:
		return fmt.Errorf("must be at most %d characters", MaxPathLength)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("must be an absolute path")
	}
	trimmed := strings.TrimSuffix(p, "/")
	if trimmed == "" {
		return fmt.Errorf("must not be the file system root")
	}
	for _, seg := range strings.Split(trimmed[1:], "/") {
		if err := checkFileName(seg); err != nil {
			return fmt.Errorf("must be a canonical absolute path of plain directory names: %w", err)
		}
	}
	for _, d := range deniedRoots {
		switch {
		case underDir(trimmed, d):
			return fmt.Errorf("must not be in %s (system files); allowed are %s and directories under them", d, strings.Join(prefixes, ", "))
		case underDir(d, trimmed):
			return fmt.Errorf("must not contain %s (system files); allowed are %s and directories under them", d, strings.Join(prefixes, ", "))
		}
	}
	if !slices.ContainsFunc(prefixes, func(pre string) bool { return underDir(trimmed, pre) }) {
		return fmt.Errorf("must be one of %s or a directory under one of them (vhosts.static_root_prefixes)", strings.Join(prefixes, ", "))
	}
	return nil
}

// checkFileName checks one path segment or index file name: letters, digits,
// '.', '_' and '-', not starting with '.'.
func checkFileName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty name")
	case len(s) > MaxFileNameLength:
		return fmt.Errorf("name longer than %d characters", MaxFileNameLength)
	case s[0] == '.':
		return fmt.Errorf("%q starts with '.'", s)
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-' {
			return fmt.Errorf("%q contains a character other than letters, digits, '.', '_' and '-'", s)
		}
	}
	return nil
}

// normalizeIndex checks space-separated index file names and returns them
// joined by single spaces.
func normalizeIndex(s string) (string, error) {
	if strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !('!' <= r && r <= '~') }) {
		return "", fmt.Errorf("must be file names separated by single spaces")
	}
	names := strings.Fields(s)
	if len(names) == 0 {
		return "", fmt.Errorf("must name at least one file")
	}
	if len(names) > MaxIndexFiles {
		return "", fmt.Errorf("must name at most %d files", MaxIndexFiles)
	}
	for _, n := range names {
		if err := checkFileName(n); err != nil {
			return "", fmt.Errorf("must be plain file names such as index.html: %w", err)
		}
	}
	return strings.Join(names, " "), nil
}

// checkHeaderName checks a header name: a letter or digit followed by letters,
// digits, '-', '_' and '.' (a subset of RFC 7230's token).
func checkHeaderName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case len(s) > MaxHeaderNameLength:
		return fmt.Errorf("must be at most %d characters", MaxHeaderNameLength)
	case !isAlnum(s[0]):
		return fmt.Errorf("must start with a letter or digit")
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.' {
			return fmt.Errorf("must contain only letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

// variableName returns the name of the variable that starts at s[i] == '$'
// (letters, digits and '_' as far as they go).
func variableName(s string, i int) string {
	j := i + 1
	for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
		j++
	}
	return s[i+1 : j]
}

// checkVariables checks every '$' of s: it must start the name of an allowed
// variable ($host), or with captures set a regex capture $1 to $9. The ${name}
// form is not accepted.
func checkVariables(s string, captures bool) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		name := variableName(s, i)
		switch {
		case name == "":
			return fmt.Errorf("'$' must start a variable: one of %s", variableList(captures))
		case captures && len(name) == 1 && name[0] >= '1' && name[0] <= '9':
		case slices.Contains(AllowedVariables, name):
		default:
			return fmt.Errorf("$%s is not an allowed variable: use one of %s", name, variableList(captures))
		}
		i += len(name)
	}
	return nil
}

func variableList(captures bool) string {
	vs := make([]string, 0, len(AllowedVariables)+1)
	for _, v := range AllowedVariables {
		vs = append(vs, "$"+v)
	}
	if captures {
		vs = append(vs, "$1 to $9")
	}
	return strings.Join(vs, ", ")
}

// headerValueDenied are printable characters a header value may not contain.
// Semicolons, single quotes and commas stay allowed (Strict-Transport-Security
// and Content-Security-Policy need them); the renderer quotes the value.
const headerValueDenied = "\"\\{}#`"

// checkHeaderValue checks a header value: printable ASCII without
// headerValueDenied, '$' only in an allowed variable, and at most
// MaxHeaderValueLength bytes. The empty value is allowed (proxy_set_header
// with "" removes the header).
func checkHeaderValue(s string) error {
	if len(s) > MaxHeaderValueLength {
		return fmt.Errorf("must be at most %d characters", MaxHeaderValueLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("must contain only printable ASCII characters")
		}
		if strings.IndexByte(headerValueDenied, c) >= 0 {
			return fmt.Errorf("must not contain %q", c)
		}
	}
	if err := checkVariables(s, false); err != nil {
		return err
	}
	if !argOK(s) {
		return fmt.Errorf("cannot be written to nginx configuration unchanged")
	}
	return nil
}

// patternDenied are characters a rewrite pattern may not contain: whitespace
// is excluded separately. A URI never holds them unescaped, and each would
// need quoting rules that differ between nginx and regular expressions.
const patternDenied = "\"'`;#"

// checkRewritePattern checks a rewrite regex: 1 to 512 printable ASCII
// characters without whitespace or patternDenied; '{' and '}' only as a
// repetition ({n}, {n,}, {n,m}); '$' only as an anchor (at the end, or before
// ')' or '|'); and it must compile as a Go regular expression (a sanity check
// of the PCRE syntax nginx uses: look-arounds and back-references are refused).
func checkRewritePattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("is required")
	case len(p) > MaxPatternLength:
		return fmt.Errorf("must be at most %d characters", MaxPatternLength)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c <= 0x20 || c > 0x7e:
			return fmt.Errorf("must contain only printable ASCII characters without spaces")
		case strings.IndexByte(patternDenied, c) >= 0:
			return fmt.Errorf("must not contain %q", c)
		case c == '{':
			n := repetitionLength(p[i:])
			if n == 0 {
				return fmt.Errorf("'{' may only start a repetition such as {2} or {1,3}")
			}
			i += n - 1
		case c == '}':
			return fmt.Errorf("'}' may only end a repetition such as {2} or {1,3}")
		case c == '$':
			if i+1 < len(p) && p[i+1] != ')' && p[i+1] != '|' {
				return fmt.Errorf("'$' may only be an end anchor (last, or before ')' or '|')")
			}
		}
	}
	if _, err := syntax.Parse(p, syntax.Perl); err != nil {
		return fmt.Errorf("is not a valid regular expression: %w", err)
	}
	if !argOK(p) {
		return fmt.Errorf("cannot be written to nginx configuration unchanged (a backslash before \\, t, r or n, or at the end)")
	}
	return nil
}

var repetitionPattern = regexp.MustCompile(`^\{[0-9]{1,4}(,[0-9]{0,4})?\}`)

// repetitionLength returns the length of the repetition s starts with, 0 when
// it does not start with one.
func repetitionLength(s string) int {
	return len(repetitionPattern.FindString(s))
}

// replacementChars are the characters a rewrite replacement may use besides
// letters, digits, %XX escapes and variables.
const replacementChars = "-._~!&()*+,=:@/?"

// checkRewriteReplacement checks a rewrite replacement: a path ("/..."), an
// http(s):// URL or "$scheme://...", of letters, digits, replacementChars,
// %XX escapes and variables (allowed variables and $1 to $9).
func checkRewriteReplacement(r string) error {
	switch {
	case r == "":
		return fmt.Errorf("is required")
	case len(r) > MaxURLLength:
		return fmt.Errorf("must be at most %d characters", MaxURLLength)
	case !strings.HasPrefix(r, "/") && !strings.HasPrefix(r, "http://") &&
		!strings.HasPrefix(r, "https://") && !strings.HasPrefix(r, "$scheme://"):
		return fmt.Errorf("must be a path starting with / or an http://, https:// or $scheme:// URL")
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case isAlnum(c) || strings.IndexByte(replacementChars, c) >= 0:
		case c == '%':
			if i+2 >= len(r) || !isHex(r[i+1]) || !isHex(r[i+2]) {
				return fmt.Errorf("'%%' must start an escape such as %%20")
			}
			i += 2
		case c == '$':
		default:
			return fmt.Errorf("must contain only letters, digits, %%XX escapes, variables and %s", replacementChars)
		}
	}
	return checkVariables(r, true)
}

// ---- Access lists ----

// normalizeAddressRule checks an allow/deny entry: an IP address or a CIDR
// network (host bits zero), returned in canonical form.
func normalizeAddressRule(s string) (string, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return "", fmt.Errorf("must be an IP address or a CIDR network such as 10.0.0.0/8")
		}
		if p.Masked() != p {
			return "", fmt.Errorf("must be a network address: %s", p.Masked())
		}
		return p.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("must be an IP address or a CIDR network such as 10.0.0.0/8")
	}
	return a.String(), nil
}

// checkUsername checks a basic-auth user name: 1 to 64 letters, digits, '.',
// '_', '@' and '-'.
func checkUsername(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	if len(s) > 64 {
		return fmt.Errorf("must be at most 64 characters")
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte("._@-", s[i]) < 0 {
			return fmt.Errorf("must contain only letters, digits, '.', '_', '@' and '-'")
		}
	}
	return nil
}

// checkPassword checks a basic-auth password: 8 to 72 bytes of UTF-8 without
// control characters.
func checkPassword(s string) error {
	switch {
	case len(s) < MinPasswordLength:
		return fmt.Errorf("must be at least %d characters", MinPasswordLength)
	case len(s) > MaxPasswordLength:
		return fmt.Errorf("must be at most %d bytes", MaxPasswordLength)
	case !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl):
		return fmt.Errorf("must be UTF-8 text without control characters")
	}
	return nil
}

// checkRealm checks a basic-auth realm: up to 64 letters, digits, spaces and
// ".,:_()/-", not "off" (which would switch authentication off).
func checkRealm(s string) error {
	if len(s) > MaxRealmLength {
		return fmt.Errorf("must be at most %d characters", MaxRealmLength)
	}
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return fmt.Errorf(`must not be "off"`)
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte(" .,:_()/-", s[i]) < 0 {
			return fmt.Errorf("must contain only letters, digits, spaces and . , : _ ( ) / -")
		}
	}
	return nil
}

// ---- Sizes, durations and custom directives ----

var (
	sizePattern     = regexp.MustCompile(`^[0-9]{1,6}[kKmMgG]?$`)
	durationPattern = regexp.MustCompile(`^[0-9]{1,6}(ms|s|m|h|d|w|M|y)?$`)
	expiresPattern  = regexp.MustCompile(`^(off|epoch|max|-?[0-9]{1,6}(ms|s|m|h|d|w|M|y)?)$`)
	buffersPattern  = regexp.MustCompile(`^[0-9]{1,4} [0-9]{1,6}[kKmM]?$`)
	charsetPattern  = regexp.MustCompile(`^(off|[A-Za-z0-9][A-Za-z0-9._-]{0,39})$`)
	mimePattern     = regexp.MustCompile(`^(\*|[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9*][a-z0-9.+*-]{0,127})$`)
	integerPattern  = regexp.MustCompile(`^[0-9]{1,6}$`)
)

// checkSize checks an nginx size: 1 to 6 digits and an optional k, m or g.
func checkSize(s string) error {
	if !sizePattern.MatchString(s) {
		return fmt.Errorf("must be a size such as 512, 64k, 10m or 1g")
	}
	return nil
}

// directiveRule is an allowlisted custom directive: what its value may be.
type directiveRule struct {
	// Value describes the grammar for people (OpenAPI, errors).
	Value string
	check func(string) bool
}

func oneOf(vs ...string) func(string) bool {
	return func(s string) bool { return slices.Contains(vs, s) }
}

func matches(re *regexp.Regexp) func(string) bool { return re.MatchString }

func mimeList(s string) bool {
	if strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !('!' <= r && r <= '~') }) {
		return false
	}
	types := strings.Fields(s)
	if len(types) == 0 || len(types) > 50 || strings.Join(types, " ") != s {
		return false
	}
	for _, t := range types {
		if !mimePattern.MatchString(t) {
			return false
		}
	}
	return true
}

func compLevel(s string) bool { return len(s) == 1 && s[0] >= '1' && s[0] <= '9' }

const (
	onOff        = "on | off"
	sizeGrammar  = "size: 1-6 digits with an optional k, m or g"
	durationText = "duration: 1-6 digits with an optional unit ms, s, m, h, d, w, M or y"
)

// CustomDirectives is the allowlist of a virtual host's custom_directives:
// directive name → value grammar. Anything else is refused. Directives with a
// field of their own (client_max_body_size, proxy_*_timeout, add_header via
// custom_headers, ...) are not in the list.
var CustomDirectives = map[string]directiveRule{
	"access_log":                {"off", oneOf("off")},
	"charset":                   {"off or a charset name (letters, digits, . _ -)", matches(charsetPattern)},
	"client_body_buffer_size":   {sizeGrammar, checkSizeOK},
	"client_body_timeout":       {durationText, matches(durationPattern)},
	"client_header_timeout":     {durationText, matches(durationPattern)},
	"etag":                      {onOff, oneOf("on", "off")},
	"expires":                   {"off | epoch | max | [-]" + durationText, matches(expiresPattern)},
	"gzip":                      {onOff, oneOf("on", "off")},
	"gzip_comp_level":           {"1 to 9", compLevel},
	"gzip_min_length":           {sizeGrammar, checkSizeOK},
	"gzip_types":                {"MIME types (type/subtype or *) separated by single spaces, at most 50", mimeList},
	"gzip_vary":                 {onOff, oneOf("on", "off")},
	"keepalive_timeout":         {durationText, matches(durationPattern)},
	"proxy_buffer_size":         {sizeGrammar, checkSizeOK},
	"proxy_buffering":           {onOff, oneOf("on", "off")},
	"proxy_buffers":             {"number and size, e.g. \"8 16k\"", matches(buffersPattern)},
	"proxy_busy_buffers_size":   {sizeGrammar, checkSizeOK},
	"proxy_http_version":        {"1.0 | 1.1", oneOf("1.0", "1.1")},
	"proxy_intercept_errors":    {onOff, oneOf("on", "off")},
	"proxy_next_upstream_tries": {"integer, 0 to 999999", matches(integerPattern)},
	"proxy_request_buffering":   {onOff, oneOf("on", "off")},
	"send_timeout":              {durationText, matches(durationPattern)},
	"sendfile":                  {onOff, oneOf("on", "off")},
	"server_tokens":             {onOff, oneOf("on", "off")},
	"tcp_nopush":                {onOff, oneOf("on", "off")},
}

func checkSizeOK(s string) bool { return checkSize(s) == nil }

// checkCustomDirectives checks a custom_directives map against the allowlist.
func checkCustomDirectives(v *app.Validator, field string, m map[string]string) {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f := fmt.Sprintf("%s.%s", field, name)
		rule, ok := CustomDirectives[name]
		if !ok {
			v.Add(f, app.FieldInvalidValue, "is not an allowed directive; allowed: "+strings.Join(customDirectiveNames(), ", "))
			continue
		}
		value := m[name]
		if !rule.check(value) || !argsOK(strings.Fields(value)) {
			v.Add(f, app.FieldInvalidFormat, "must be "+rule.Value)
		}
	}
}

func argsOK(args []string) bool {
	for _, a := range args {
		if !argOK(a) {
			return false
		}
	}
	return true
}

func customDirectiveNames() []string {
	names := make([]string, 0, len(CustomDirectives))
	for n := range CustomDirectives {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ---- Targeting ----

// checkLabelToken checks a label key or value of a selector.
func checkLabelToken(s string) bool {
	if s == "" || len(s) > MaxLabelLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte("._/-", s[i]) < 0 {
			return false
		}
	}
	return true
}

// SelectorTerm is one requirement of a label selector.
type SelectorTerm struct {
	Key   string
	Value string
	// Not is true for key!=value.
	Not bool
}

// ParseLabelSelector parses "key=value,key!=value": comma-separated terms,
// keys and values of 1 to 63 letters, digits, '.', '_', '/' and '-', at most
// 20 terms, no spaces.
func ParseLabelSelector(s string) ([]SelectorTerm, error) {
	if s == "" {
		return nil, fmt.Errorf("is required")
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxSelectorTerms {
		return nil, fmt.Errorf("must have at most %d terms", MaxSelectorTerms)
	}
	terms := make([]SelectorTerm, 0, len(parts))
	for _, p := range parts {
		t := SelectorTerm{}
		var ok bool
		if t.Key, t.Value, ok = strings.Cut(p, "!="); ok {
			t.Not = true
		} else if t.Key, t.Value, ok = strings.Cut(p, "="); !ok {
			return nil, fmt.Errorf("must be comma-separated key=value or key!=value terms")
		}
		if !checkLabelToken(t.Key) || !checkLabelToken(t.Value) {
			return nil, fmt.Errorf("keys and values must be 1 to %d letters, digits, '.', '_', '/' or '-'", MaxLabelLength)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

// normalizeTargetAgents checks target_agents and returns it in canonical form
// (nil means every agent).
func normalizeTargetAgents(v *app.Validator, field string, in *TargetAgents) TargetAgents {
	if in == nil {
		return TargetAgents{Type: TargetAll}
	}
	out := TargetAgents{Type: in.Type}
	switch in.Type {
	case TargetAll:
		v.Check(in.LabelSelector == "", field+".label_selector", app.FieldInvalidValue, `is only allowed with type "selector"`)
		v.Check(in.AgentIDs == nil, field+".agent_ids", app.FieldInvalidValue, `is only allowed with type "agents"`)
	case TargetSelector:
		if _, err := ParseLabelSelector(in.LabelSelector); err != nil {
			code := app.FieldInvalidFormat
			if in.LabelSelector == "" {
				code = app.FieldRequired
			}
			v.Add(field+".label_selector", code, err.Error())
		}
		v.Check(in.AgentIDs == nil, field+".agent_ids", app.FieldInvalidValue, `is only allowed with type "agents"`)
		out.LabelSelector = in.LabelSelector
	case TargetAgentList:
		v.Check(in.LabelSelector == "", field+".label_selector", app.FieldInvalidValue, `is only allowed with type "selector"`)
		switch {
		case len(in.AgentIDs) == 0:
			v.Add(field+".agent_ids", app.FieldRequired, "must list at least one agent id")
		case len(in.AgentIDs) > MaxAgentIDs:
			v.Add(field+".agent_ids", app.FieldInvalidValue, fmt.Sprintf("must list at most %d agent ids", MaxAgentIDs))
		default:
			seen := map[uuid.UUID]bool{}
			for i, s := range in.AgentIDs {
				f := fmt.Sprintf("%s.agent_ids[%d]", field, i)
				id, ok := parseUUID(s)
				if !v.Check(ok, f, app.FieldInvalidFormat, "must be a UUID") {
					continue
				}
				if !v.Check(!seen[id], f, app.FieldInvalidValue, "is listed twice") {
					continue
				}
				seen[id] = true
				out.AgentIDs = append(out.AgentIDs, id.String())
			}
		}
	case "":
		v.Add(field+".type", app.FieldRequired, `must be "all", "selector" or "agents"`)
	default:
		v.Add(field+".type", app.FieldInvalidValue, `must be "all", "selector" or "agents"`)
	}
	return out
}
