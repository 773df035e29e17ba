package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nxmesh/nxmesh/agent/collect/logs"
	"github.com/nxmesh/nxmesh/agent/controlplane"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// envPrefix prefixes the environment variable of every flag:
// --nginx-binary ↔ NXMESH_AGENT_NGINX_BINARY.
const envPrefix = "NXMESH_AGENT_"

// defaultDataDir is where the agent keeps its identity and, without other
// nginx flags, its nginx.
const defaultDataDir = "/var/lib/nxmesh-agent"

// config is the agent's configuration, from flags, the environment and
// the optional YAML file, in that order of precedence.
type config struct {
	ConfigFile string

	Master        string
	Token         string
	CAFile        string
	CAFingerprint string
	DataDir       string
	Labels        map[string]string
	Name          string

	NginxBinary     string
	NginxPrefix     string
	NginxUser       string
	NginxStopOnExit bool
	AutoRestart     bool
	NginxConf       string
	IncludeDir      string
	NginxPIDFile    string
	NginxErrorLog   string
	StatusPort      uint32

	DeploymentMode  agentv1.DeploymentMode
	Heartbeat       time.Duration
	MaxMessageBytes int

	LogLevel  string
	LogFormat string

	// Logs: nginx's access and error logs sent to the master.
	Logs             bool
	LogBatchLines    int
	LogBatchInterval time.Duration
	LogSpoolMax      int64
	LogFileMax       int64

	Version bool
}

// supervise reports whether the agent runs its own nginx.
func (c *config) supervise() bool { return c.NginxConf == "" }

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// labelsValue is a flag.Value for "k=v,k2=v2".
type labelsValue struct{ m *map[string]string }

func (l labelsValue) String() string {
	if l.m == nil || len(*l.m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(*l.m))
	for k := range *l.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*l.m)[k]
	}
	return strings.Join(parts, ",")
}

func (l labelsValue) Set(s string) error {
	m := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("label %q: want key=value", part)
		}
		m[k] = strings.TrimSpace(v)
	}
	*l.m = m
	return nil
}

// modeValue is a flag.Value for the deployment mode.
type modeValue struct{ m *agentv1.DeploymentMode }

var deploymentModes = map[string]agentv1.DeploymentMode{
	"standalone":         agentv1.DeploymentMode_STANDALONE,
	"docker-sidecar":     agentv1.DeploymentMode_DOCKER_SIDECAR,
	"kubernetes-sidecar": agentv1.DeploymentMode_KUBERNETES_SIDECAR,
}

func (v modeValue) String() string {
	if v.m == nil {
		return ""
	}
	for name, m := range deploymentModes {
		if m == *v.m {
			return name
		}
	}
	return ""
}

func (v modeValue) Set(s string) error {
	key := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "_", "-"))
	m, ok := deploymentModes[key]
	if !ok {
		return fmt.Errorf("deployment mode %q: want standalone, docker-sidecar or kubernetes-sidecar", s)
	}
	*v.m = m
	return nil
}

// portValue is a flag.Value for a TCP port (0 allowed).
type portValue struct{ p *uint32 }

func (v portValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatUint(uint64(*v.p), 10)
}

func (v portValue) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: want 0-65535", s)
	}
	*v.p = uint32(n)
	return nil
}

// bytesValue is a flag.Value for a size: bytes, or a number with KiB,
// MiB or GiB.
// mastersValue is --master: repeatable, each a host:port or a
// comma-separated list of them, kept as one comma-separated list.
type mastersValue struct{ s *string }

func (v mastersValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v mastersValue) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	if *v.s != "" {
		s = *v.s + "," + s
	}
	list, err := controlplane.ParseMasters(s)
	if err != nil {
		return err
	}
	*v.s = strings.Join(list, ",")
	return nil
}

type bytesValue struct{ n *int64 }

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

func (v bytesValue) String() string {
	if v.n == nil || *v.n == 0 {
		return "0"
	}
	for _, u := range byteUnits {
		if *v.n%u.mult == 0 {
			if u.mult == 1 {
				return strconv.FormatInt(*v.n, 10)
			}
			return strconv.FormatInt(*v.n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v bytesValue) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("size %q: want bytes, or a number with KiB, MiB or GiB", s)
	}
	*v.n = n * mult
	return nil
}

// newFlagSet defines every flag on cfg.
func newFlagSet(cfg *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nxmesh-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.ConfigFile, "config", "", "optional YAML `file` whose keys are the flag names below, e.g. \"nginx-binary: /usr/sbin/nginx\"")
	fs.Var(mastersValue{&cfg.Master}, "master", "the master's gRPC address, `host:port` (required); repeat the flag or separate addresses by commas "+
		"for several replicas, tried in turn when the connection fails")
	fs.StringVar(&cfg.Token, "token", "", "registration `token` (nxmesh_agent_...), needed until the agent has registered")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "PEM `file` of the master's agent CA, to trust the master before registration")
	fs.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "`sha256:<64 hex>` fingerprint of the master's agent CA certificate (alternative to --ca-file)")
	fs.StringVar(&cfg.DataDir, "data-dir", defaultDataDir, "`directory` for the agent's identity (identity/) and, by default, its nginx (nginx/)")
	fs.Var(labelsValue{&cfg.Labels}, "labels", "agent labels, `k=v,k2=v2`")
	fs.StringVar(&cfg.Name, "name", "", "display `name` of the agent (default: the hostname)")
	fs.StringVar(&cfg.NginxBinary, "nginx-binary", "nginx", "nginx `executable` (looked up in PATH)")
	fs.StringVar(&cfg.NginxPrefix, "nginx-prefix", "", "supervise mode: `directory` of the nginx the agent runs itself (default <data-dir>/nginx)")
	fs.StringVar(&cfg.NginxUser, "nginx-user", "", "supervise mode: `user` nginx's worker processes run as (nginx's user directive)")
	fs.BoolVar(&cfg.NginxStopOnExit, "nginx-stop-on-exit", false, "supervise mode: stop nginx when the agent exits (by default it keeps serving)")
	fs.BoolVar(&cfg.AutoRestart, "auto-restart", true, "supervise mode: restart nginx with the last good configuration when it dies (--auto-restart=false to turn off)")
	fs.StringVar(&cfg.NginxConf, "nginx-conf", "", "manage mode: the operator's nginx.conf `file` (with --include-dir)")
	fs.StringVar(&cfg.IncludeDir, "include-dir", "", "manage mode: the `directory` the agent owns, included from nginx.conf (e.g. /etc/nginx/nxmesh)")
	fs.StringVar(&cfg.NginxPIDFile, "nginx-pid-file", "", "manage mode: nginx's pid `file` (default: nginx.conf's pid directive, then nginx's compiled default)")
	fs.StringVar(&cfg.NginxErrorLog, "nginx-error-log", "", "manage mode: nginx's error log `file` (default: nginx.conf's error_log directive)")
	fs.Var(portValue{&cfg.StatusPort}, "status-port", "loopback `port` of the stub_status server the agent adds (0 = pick a free one and keep it)")
	cfg.DeploymentMode = agentv1.DeploymentMode_STANDALONE
	fs.Var(modeValue{&cfg.DeploymentMode}, "deployment-mode", "`mode`: standalone, docker-sidecar or kubernetes-sidecar")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 0, "heartbeat `interval`, overriding the master's (0 = the master's, 10s by default)")
	fs.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", controlplane.DefaultMaxMessageBytes,
		"largest message, in `bytes`, accepted from the master (uncompressed); keep it at least the master's grpc.max_message_bytes")
	fs.BoolVar(&cfg.Logs, "logs", true, "send nginx's access log (<data-dir>/logs/access.log, written by every server the agent renders) and error log to the master (--logs=false to turn off)")
	fs.IntVar(&cfg.LogBatchLines, "log-batch-lines", logs.DefaultBatchLines, "send a log batch at this many `lines`")
	fs.DurationVar(&cfg.LogBatchInterval, "log-batch-interval", logs.DefaultBatchInterval, "send a log batch at most this `interval` after its first line")
	cfg.LogSpoolMax = logs.DefaultSpoolMax
	fs.Var(bytesValue{&cfg.LogSpoolMax}, "log-spool-max", "`size` of the spool (<data-dir>/logs/spool) of log batches the master has not acknowledged; when full, the oldest are dropped (e.g. 512MiB)")
	cfg.LogFileMax = logs.DefaultMaxFileBytes
	fs.Var(bytesValue{&cfg.LogFileMax}, "log-file-max", "`size` at which the agent rotates the log files it owns (access.log, and error.log in supervise mode) once they are sent")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log `format`: text or json")
	fs.BoolVar(&cfg.Version, "version", false, "print the version and exit")
	fs.Usage = func() { usage(fs) }
	return fs
}

// usage prints the help text.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	httpLine, streamLine := "include /etc/nginx/nxmesh/http.conf;", "include /etc/nginx/nxmesh/stream.conf;"
	fmt.Fprintf(w, `nxmesh-agent keeps an nginx configured as the NxMesh master says.

Usage: nxmesh-agent --master host:port (--ca-file FILE | --ca-fingerprint sha256:HEX) --token TOKEN [flags]
       nxmesh-agent --master host:port [flags]     (once registered)

It runs nginx in one of two modes:

  supervise (default, or --nginx-prefix DIR)
      The agent owns a whole nginx under DIR: it writes DIR/nginx.conf, starts
      nginx as a daemon, adopts it after an agent restart, and restarts it if it
      dies. It serves the last good configuration before the master is reachable.

  manage (--nginx-conf FILE --include-dir DIR)
      An nginx you run yourself. The agent writes only into DIR and reloads with
      nginx's own signal. Add these lines to your nginx.conf (for DIR
      /etc/nginx/nxmesh), then reload nginx:

          http {
              ...
              %s
          }
          stream {
              %s
          }

      Restart and stop commands are refused in this mode.

The first run registers with --token and stores a client certificate in
<data-dir>/identity, with the master's CA; later runs connect with it (mutual
TLS) and need neither the token nor --ca-file/--ca-fingerprint.

Every flag can also be set with an environment variable (NXMESH_AGENT_ + the
flag name in upper case, "-" as "_") or as a key of the --config YAML file.
Flags win over the environment, which wins over the file.

Flags:
`, httpLine, streamLine)
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n      %s\n      env %s", text, envName(f.Name))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, "; default %q", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// parseConfig reads the configuration from args, the environment (through
// lookupEnv) and the YAML file named by --config / NXMESH_AGENT_CONFIG.
func parseConfig(args []string, lookupEnv func(string) (string, bool), out io.Writer) (*config, error) {
	cfg := &config{}
	fs := newFlagSet(cfg, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := lookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
			set[f.Name] = true
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	if cfg.ConfigFile != "" {
		if err := applyFile(fs, cfg.ConfigFile, set); err != nil {
			return nil, err
		}
	}
	if cfg.Version {
		return cfg, nil
	}
	return cfg, cfg.finish()
}

// applyFile sets the flags not set yet from a YAML file.
func applyFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		name := strings.ReplaceAll(key, "_", "-")
		if fs.Lookup(name) == nil || name == "config" || name == "version" {
			return fmt.Errorf("config file %s: unknown key %q", path, key)
		}
		if set[name] {
			continue
		}
		v, err := yamlString(doc[key])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, key, err)
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, key, err)
		}
	}
	return nil
}

// yamlString turns a YAML value into flag syntax; a map becomes k=v,...
func yamlString(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(v), nil
	case []any: // a list of addresses (master)
		parts := make([]string, 0, len(v))
		for _, e := range v {
			s, err := yamlString(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			s, err := yamlString(v[k])
			if err != nil {
				return "", err
			}
			if strings.ContainsAny(k+s, ",=") {
				return "", fmt.Errorf("label %q=%q may not contain ',' or '='", k, s)
			}
			parts = append(parts, k+"="+s)
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("unsupported value %v", v)
	}
}

// finish validates the combination of settings and makes paths absolute.
func (c *config) finish() error {
	var errs []error
	if c.Master == "" {
		errs = append(errs, errors.New("--master is required"))
	}
	if c.CAFile != "" && c.CAFingerprint != "" {
		errs = append(errs, errors.New("set only one of --ca-file and --ca-fingerprint"))
	}
	switch {
	case c.NginxPrefix != "" && (c.NginxConf != "" || c.IncludeDir != ""):
		errs = append(errs, errors.New("--nginx-prefix (supervise mode) cannot be combined with --nginx-conf/--include-dir (manage mode)"))
	case (c.NginxConf == "") != (c.IncludeDir == ""):
		errs = append(errs, errors.New("manage mode needs both --nginx-conf and --include-dir"))
	}
	if c.Heartbeat < 0 {
		errs = append(errs, errors.New("--heartbeat must not be negative"))
	}
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, errors.New("--max-message-bytes must be positive"))
	}
	if c.LogBatchLines <= 0 {
		errs = append(errs, errors.New("--log-batch-lines must be positive"))
	}
	if c.LogBatchInterval <= 0 {
		errs = append(errs, errors.New("--log-batch-interval must be positive"))
	}
	if c.LogSpoolMax < 1<<20 {
		errs = append(errs, errors.New("--log-spool-max must be at least 1MiB"))
	}
	if c.LogFileMax < 1<<20 {
		errs = append(errs, errors.New("--log-file-max must be at least 1MiB"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range []*string{&c.DataDir, &c.NginxPrefix, &c.NginxConf, &c.IncludeDir, &c.CAFile, &c.NginxPIDFile, &c.NginxErrorLog} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("path %q: %w", *p, err)
		}
		*p = abs
	}
	if c.supervise() && c.NginxPrefix == "" {
		c.NginxPrefix = filepath.Join(c.DataDir, "nginx")
	}
	return nil
}
