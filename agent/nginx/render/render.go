package render

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Names of the files Render always produces.
const (
	// HTTPConf is included inside the http{} block.
	HTTPConf = "http.conf"
	// StreamConf is included inside the stream{} block.
	StreamConf = "stream.conf"
)

// Files is the rendered output: path relative to Options.ConfDir → content.
// It is deterministic for a given input.
type Files map[string][]byte

// Options tell the renderer where things live on the agent's disk.
type Options struct {
	// ConfDir is the absolute directory the files will be installed into.
	// It is used for paths inside the config: certificates are referenced
	// as ConfDir/certs/<id>.crt and .key, htpasswd files as
	// ConfDir/htpasswd/<vhost-id>.
	ConfDir string
	// StatusPort, if non-zero, adds a server listening on
	// 127.0.0.1:StatusPort only, with stub_status at /nxmesh_status.
	StatusPort uint32
	// NoDefaultServers leaves out the 404 default servers of ports that
	// have no virtual host marked default_server. The agent sets it when it
	// only manages an include directory: the operator's nginx.conf may
	// declare default servers of its own (Debian's default site does, on
	// port 80), and nginx refuses two on one port.
	NoDefaultServers bool
	// AccessLog, if set, is the absolute path of the agent's own access
	// log: http.conf defines log_format nxmesh_json (and stream.conf
	// nxmesh_stream when there are streams) and every rendered server
	// except the status server logs there in that format, with its
	// virtual host (stream) id as a field. Empty renders no access_log.
	AccessLog string
	// ACMEChallengeDir, if set, is the absolute directory of the agent's
	// ACME HTTP-01 challenge files: every plain-HTTP server (virtual hosts
	// without ssl_enabled, the HTTP-to-HTTPS redirect servers and the 404
	// default servers of plain ports) answers GET
	// /.well-known/acme-challenge/<token> with the file <dir>/<token>
	// (text/plain) and 404 for anything else under that prefix, before
	// the host's redirects, access rules, basic auth and rate limit.
	ACMEChallengeDir string
}

// ErrInvalidConfig is wrapped by every error Render returns for a
// ConfigUpdate it cannot render.
var ErrInvalidConfig = errors.New("invalid config update")

// Render renders u into nginx configuration files. See the package
// documentation for the layout and the rules.
func Render(u *agentv1.ConfigUpdate, opts Options) (Files, error) {
	out, err := render(u, opts)
	if err != nil {
		return nil, err
	}
	return out.files, nil
}

// FileMode returns the permissions a rendered file should be installed with:
// 0600 for private keys (read by nginx's master process, which runs as
// root), 0644 for everything else. htpasswd files are 0644 because nginx's
// worker processes, which usually run as an unprivileged user, read them on
// each request; they hold only password hashes.
func FileMode(p string) os.FileMode {
	if strings.HasSuffix(p, ".key") {
		return 0o600
	}
	return 0o644
}

// output is what render produces: the files and, for each config file, the
// directive tree it was built from.
type output struct {
	files Files
	trees map[string]crossplane.Directives
}

// header is the first line of every rendered config file.
const header = " Managed by the NxMesh agent. Local changes are overwritten."

// wsConnectionVar is the map variable that holds the Connection header for
// WebSocket-enabled locations.
const wsConnectionVar = "$nxmesh_connection_upgrade"

// renderer holds the state of one Render call.
type renderer struct {
	opts      Options
	confDir   string
	acmeDir   string
	upstreams map[string]*agentv1.Upstream
	certs     map[string]*agentv1.Certificate
	usedCerts map[string]bool
	files     Files
	err       error
	// checked memoises validateArg: the same values (variables, defaults)
	// recur thousands of times in a large workspace.
	checked map[string]error
}

// validateArg is ValidateArg with memoisation.
func (r *renderer) validateArg(v string) error {
	err, ok := r.checked[v]
	if !ok {
		err = ValidateArg(v)
		r.checked[v] = err
	}
	return err
}

// fail records the first error.
func (r *renderer) fail(field string, format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %w", ErrInvalidConfig, field, fmt.Errorf(format, a...))
	}
}

// arg validates a user-supplied argument and returns it unchanged.
func (r *renderer) arg(field, v string) string {
	if err := r.validateArg(v); err != nil {
		r.fail(field, "%w", err)
	}
	return v
}

func render(u *agentv1.ConfigUpdate, opts Options) (*output, error) {
	if u == nil {
		return nil, fmt.Errorf("%w: nil ConfigUpdate", ErrInvalidConfig)
	}
	r := &renderer{
		opts:      opts,
		upstreams: map[string]*agentv1.Upstream{},
		certs:     map[string]*agentv1.Certificate{},
		usedCerts: map[string]bool{},
		files:     Files{},
		checked:   map[string]error{},
	}
	if opts.ConfDir == "" || !filepath.IsAbs(opts.ConfDir) {
		return nil, fmt.Errorf("%w: Options.ConfDir must be an absolute path, got %q", ErrInvalidConfig, opts.ConfDir)
	}
	r.confDir = path.Clean(opts.ConfDir)
	if err := ValidateArg(r.confDir); err != nil {
		return nil, fmt.Errorf("%w: Options.ConfDir: %w", ErrInvalidConfig, err)
	}
	if opts.AccessLog != "" {
		if !filepath.IsAbs(opts.AccessLog) {
			return nil, fmt.Errorf("%w: Options.AccessLog must be an absolute path, got %q", ErrInvalidConfig, opts.AccessLog)
		}
		if err := ValidateArg(opts.AccessLog); err != nil {
			return nil, fmt.Errorf("%w: Options.AccessLog: %w", ErrInvalidConfig, err)
		}
	}
	if opts.ACMEChallengeDir != "" {
		d, err := checkACMEDir(opts.ACMEChallengeDir)
		if err != nil {
			return nil, err
		}
		r.acmeDir = d
	}
	if opts.StatusPort > 65535 {
		return nil, fmt.Errorf("%w: Options.StatusPort %d out of range", ErrInvalidConfig, opts.StatusPort)
	}
	r.indexUpstreams(u.GetUpstreams())
	r.indexCertificates(u.GetCertificates())
	if r.err != nil {
		return nil, r.err
	}

	httpTree := r.httpConf(u)
	streamTree := r.streamConf(u)
	r.writeCertificates()
	if r.err != nil {
		return nil, r.err
	}

	out := &output{files: r.files, trees: map[string]crossplane.Directives{
		HTTPConf:   httpTree,
		StreamConf: streamTree,
	}}
	for name, tree := range out.trees {
		// Every argument of user origin was checked where it was read; this
		// second pass covers arguments assembled from several parts.
		if err := validateTree(tree, r.validateArg); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, name, err)
		}
		text, err := buildConf(tree)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		out.files[name] = text
	}
	return out, nil
}

// buildConf serialises a directive tree with crossplane.
func buildConf(tree crossplane.Directives) ([]byte, error) {
	var buf bytes.Buffer
	if err := crossplane.Build(&buf, crossplane.Config{Parsed: tree}, &crossplane.BuildOptions{Indent: 4}); err != nil {
		return nil, fmt.Errorf("crossplane build: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// validateTree runs validate (ValidateArg) over every directive name and
// argument.
func validateTree(tree crossplane.Directives, validate func(string) error) error {
	for _, d := range tree {
		if d.IsComment() {
			if strings.ContainsAny(*d.Comment, "\r\n") {
				return fmt.Errorf("comment %q spans lines", *d.Comment)
			}
			continue
		}
		if err := validate(d.Directive); err != nil {
			return fmt.Errorf("directive name %q: %w", d.Directive, err)
		}
		for _, a := range d.Args {
			if err := validate(a); err != nil {
				return fmt.Errorf("directive %s: argument %q: %w", d.Directive, a, err)
			}
		}
		if err := validateTree(d.Block, validate); err != nil {
			return err
		}
	}
	return nil
}

// dir makes a simple directive.
func dir(name string, args ...string) *crossplane.Directive {
	if args == nil {
		args = []string{}
	}
	return &crossplane.Directive{Directive: name, Args: args}
}

// block makes a block directive; the block is never nil, so that an empty
// block is still written as "{ }".
func block(name string, args []string, body crossplane.Directives) *crossplane.Directive {
	if args == nil {
		args = []string{}
	}
	if body == nil {
		body = crossplane.Directives{}
	}
	return &crossplane.Directive{Directive: name, Args: args, Block: body}
}

// headerComment is the comment every config file starts with. Line 1 keeps
// crossplane.Build from appending it to a previous line.
func headerComment() *crossplane.Directive {
	c := header
	return &crossplane.Directive{Directive: "#", Line: 1, Args: []string{}, Comment: &c}
}

// validID reports whether id may be used in nginx names and file names.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// nginxName derives an nginx identifier (upstream or zone name) from an id.
func nginxName(prefix, id string) string {
	return prefix + strings.ToLower(strings.ReplaceAll(id, "-", "_"))
}

func (r *renderer) indexUpstreams(ups []*agentv1.Upstream) {
	names := map[string]string{}
	for i, up := range ups {
		field := fmt.Sprintf("upstreams[%d].id", i)
		id := up.GetId()
		if !validID(id) {
			r.fail(field, "%q is not a valid id (1-128 of A-Z a-z 0-9 - _)", id)
			return
		}
		name := nginxName("u_", id)
		if other, dup := names[name]; dup {
			r.fail(field, "upstream ids %q and %q map to the same nginx name %s", other, id, name)
			return
		}
		names[name] = id
		r.upstreams[id] = up
	}
}

func (r *renderer) indexCertificates(certs map[string]*agentv1.Certificate) {
	for id, c := range certs {
		field := fmt.Sprintf("certificates[%q]", id)
		if !validID(id) {
			r.fail(field, "%q is not a valid id (1-128 of A-Z a-z 0-9 - _)", id)
			return
		}
		if c.GetId() != "" && c.GetId() != id {
			r.fail(field+".id", "%q differs from its map key", c.GetId())
			return
		}
		r.certs[id] = c
	}
}

// certPaths returns the certificate and key paths of a referenced
// certificate and marks it to be written.
func (r *renderer) certPaths(field, id string) (crt, key string) {
	c, ok := r.certs[id]
	switch {
	case id == "":
		r.fail(field, "ssl is enabled but no certificate is set")
	case !ok:
		r.fail(field, "unknown certificate %q", id)
	case c.GetCertificatePem() == "" || c.GetPrivateKeyPem() == "":
		r.fail(field, "certificate %q has no certificate or private key PEM", id)
	default:
		r.usedCerts[id] = true
	}
	return path.Join(r.confDir, "certs", id+".crt"), path.Join(r.confDir, "certs", id+".key")
}

func (r *renderer) writeCertificates() {
	for id := range r.usedCerts {
		c := r.certs[id]
		r.files["certs/"+id+".crt"] = []byte(withNewline(c.GetCertificatePem()))
		r.files["certs/"+id+".key"] = []byte(withNewline(c.GetPrivateKeyPem()))
	}
}

func withNewline(s string) string {
	if !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// upstream looks up a referenced upstream.
func (r *renderer) upstream(field, id string) *agentv1.Upstream {
	up, ok := r.upstreams[id]
	if !ok {
		r.fail(field, "unknown upstream %q", id)
		return nil
	}
	if len(up.GetServers()) == 0 {
		r.fail(field, "upstream %q has no servers", id)
		return nil
	}
	return up
}

// upstreamBlock renders an upstream{} block for the http or stream context.
func (r *renderer) upstreamBlock(up *agentv1.Upstream, stream bool) *crossplane.Directive {
	field := fmt.Sprintf("upstreams[id=%s]", up.GetId())
	var body crossplane.Directives
	hash := false
	switch up.GetAlgorithm() {
	case agentv1.LoadBalanceAlgorithm_LEAST_CONNECTIONS:
		body = append(body, dir("least_conn"))
	case agentv1.LoadBalanceAlgorithm_IP_HASH:
		hash = true
		if stream {
			body = append(body, dir("hash", "$remote_addr", "consistent"))
		} else {
			body = append(body, dir("ip_hash"))
		}
	case agentv1.LoadBalanceAlgorithm_LOAD_BALANCE_ALGORITHM_UNSPECIFIED,
		agentv1.LoadBalanceAlgorithm_ROUND_ROBIN,
		agentv1.LoadBalanceAlgorithm_WEIGHTED_ROUND_ROBIN:
	default:
		r.fail(field+".algorithm", "unknown algorithm %d", up.GetAlgorithm())
	}
	for i, s := range up.GetServers() {
		sf := fmt.Sprintf("%s.servers[%d]", field, i)
		if s.GetAddress() == "" {
			r.fail(sf+".address", "is empty")
		}
		args := []string{r.arg(sf+".address", s.GetAddress())}
		if s.GetWeight() > 0 {
			args = append(args, "weight="+strconv.FormatUint(uint64(s.GetWeight()), 10))
		}
		if s.GetMaxFails() > 0 {
			args = append(args, "max_fails="+strconv.FormatUint(uint64(s.GetMaxFails()), 10))
		}
		if s.GetFailTimeoutSeconds() > 0 {
			args = append(args, "fail_timeout="+seconds(s.GetFailTimeoutSeconds()))
		}
		if s.GetBackup() {
			if hash {
				r.fail(sf+".backup", "backup servers cannot be used with IP_HASH")
			}
			args = append(args, "backup")
		}
		if s.GetDown() {
			args = append(args, "down")
		}
		body = append(body, dir("server", args...))
	}
	if !stream && up.GetKeepaliveConnections() > 0 {
		body = append(body, dir("keepalive", strconv.FormatUint(uint64(up.GetKeepaliveConnections()), 10)))
	}
	return block("upstream", []string{nginxName("u_", up.GetId())}, body)
}

func seconds(n uint32) string {
	return strconv.FormatUint(uint64(n), 10) + "s"
}

// customDirectives renders a name → value map sorted by name.
func (r *renderer) customDirectives(field string, m map[string]string) crossplane.Directives {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make(crossplane.Directives, 0, len(names))
	for _, name := range names {
		f := fmt.Sprintf("%s[%q]", field, name)
		if !validDirectiveName(name) {
			r.fail(f, "%q is not an allowed directive name", name)
			continue
		}
		value := m[name]
		for _, c := range value {
			if c < 0x20 || c == 0x7f {
				r.fail(f, "value contains control character %q", c)
				break
			}
		}
		args := strings.Fields(value)
		for _, a := range args {
			r.arg(f, a)
		}
		out = append(out, dir(name, args...))
	}
	return out
}

// validDirectiveName accepts plain directive names. "if" is refused because
// crossplane.Build wraps its arguments in parentheses, "include" because it
// would make nginx read arbitrary files.
func validDirectiveName(name string) bool {
	if name == "" || len(name) > 64 || name == "if" || name == "include" {
		return false
	}
	if c := name[0]; c < 'a' || c > 'z' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// sizeArg checks an nginx size such as "10m".
func (r *renderer) sizeArg(field, v string) string {
	n := strings.TrimRight(v, "kKmMgG")
	if len(v)-len(n) > 1 || n == "" || strings.Trim(n, "0123456789") != "" || len(n) > 12 {
		r.fail(field, "%q is not an nginx size (digits with an optional k, m or g suffix)", v)
	}
	return v
}
