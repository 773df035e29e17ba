package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the master's configuration. Every key is documented in config.yaml and
// can be overridden by an environment variable named NXMESH_ followed by the key's
// path in upper case with dots replaced by underscores (database.url →
// NXMESH_DATABASE_URL).
type Config struct {
	// DataDir holds generated secrets and the embedded PostgreSQL cluster.
	DataDir string `yaml:"data_dir"`

	Database DatabaseConfig `yaml:"database"`
	HTTP     HTTPConfig     `yaml:"http"`
	GRPC     GRPCConfig     `yaml:"grpc"`
	Auth     AuthConfig     `yaml:"auth"`
	Admin    AdminConfig    `yaml:"admin"`
	SMTP     SMTPConfig     `yaml:"smtp"`
	Log      LogConfig      `yaml:"log"`
	VHosts   VHostsConfig   `yaml:"vhosts"`
	Logs     LogsConfig     `yaml:"logs"`
	Metrics  MetricsConfig  `yaml:"metrics"`
	ACME     ACMEConfig     `yaml:"acme"`
	// Downloads are the agent binaries the master serves at /downloads/.
	Downloads DownloadsConfig `yaml:"downloads"`
}

// DownloadsConfig is where the master finds the agent binaries it serves.
type DownloadsConfig struct {
	// Dir holds nxmesh-agent-linux-amd64 and nxmesh-agent-linux-arm64 (built by
	// `go tool task build-agents`); empty: data_dir/downloads.
	Dir string `yaml:"dir"`
}

// DownloadsDir is downloads.dir, or data_dir/downloads when it is empty.
func (c Config) DownloadsDir() string {
	if c.Downloads.Dir != "" {
		return c.Downloads.Dir
	}
	return filepath.Join(c.DataDir, "downloads")
}

// ACMEConfig is certificate issuance through ACME (the certs module).
type ACMEConfig struct {
	// LetsEncryptURL is the directory of provider "letsencrypt".
	LetsEncryptURL string `yaml:"letsencrypt_url"`
	// LetsEncryptStagingURL is the directory of provider "letsencrypt_staging".
	LetsEncryptStagingURL string `yaml:"letsencrypt_staging_url"`
	// ZeroSSLURL is the directory of provider "zerossl" (needs EAB credentials).
	ZeroSSLURL string `yaml:"zerossl_url"`
	// CAFile holds extra PEM roots trusted for the ACME servers' HTTPS.
	CAFile string `yaml:"ca_file"`
	// DNSResolvers are comma-separated host:port resolvers for DNS-01 propagation checks.
	DNSResolvers string `yaml:"dns_resolvers"`
	// RenewCheckInterval is the period of the renewal scan.
	RenewCheckInterval time.Duration `yaml:"renew_check_interval"`
	// Email is the ACME account contact when an organization sets none.
	Email string `yaml:"email"`
}

// DatabaseConfig selects the PostgreSQL server.
type DatabaseConfig struct {
	// URL of an external PostgreSQL; empty starts the embedded one under data_dir.
	URL string `yaml:"url"`
	// MaxConns caps the shared pgx pool.
	MaxConns int `yaml:"max_conns"`
}

// HTTPConfig configures the REST API, the admin and the operational endpoints.
type HTTPConfig struct {
	Addr string `yaml:"addr"`
	// PublicURL is the externally visible base URL, used in links and e-mails.
	PublicURL string `yaml:"public_url"`
	// SecureCookies marks the admin session cookie Secure.
	SecureCookies bool `yaml:"secure_cookies"`
	// ShutdownTimeout bounds how long in-flight requests may take after SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// BodyLimit is the largest accepted request body in bytes.
	BodyLimit int `yaml:"body_limit"`
	// TrustedProxies are comma-separated IPs or CIDRs of reverse proxies whose
	// X-Forwarded-For header gives the client IP (throttling, audit). Empty: the
	// peer address is the client.
	TrustedProxies string `yaml:"trusted_proxies"`
}

// GRPCConfig configures the agent-facing gRPC listener and the agents' CA.
type GRPCConfig struct {
	Addr string `yaml:"addr"`
	// PublicAddr is host:port agents dial, shown in install commands; empty:
	// the host the admin was reached at (the request's Host) with the port of
	// Addr, or, when that is a loopback name, the host of http.public_url.
	PublicAddr string `yaml:"public_addr"`
	// TLSHosts are extra names and addresses (comma-separated) in the server
	// certificate, besides localhost, 127.0.0.1, ::1 and the machine's hostname.
	TLSHosts string `yaml:"tls_hosts"`
	// CACertFile and CAKeyFile hold the agents' CA (PEM). Empty: the CA under
	// data_dir/agents-ca/, generated on first start.
	CACertFile string `yaml:"ca_cert_file"`
	CAKeyFile  string `yaml:"ca_key_file"`
	// HeartbeatInterval is how often agents report health; an agent is offline
	// after three missed heartbeats.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// MaxMessageBytes bounds one gRPC message between the master and an agent,
	// both ways (the master's MaxRecvMsgSize and MaxSendMsgSize). A
	// configuration change whose update for the workspace's agents would be
	// larger is refused with a 422; agents must accept at least as much
	// (nxmesh-agent --max-message-bytes, same default).
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// AuthConfig holds authentication secrets and limits.
type AuthConfig struct {
	// JWTSecret signs access tokens; generated into data_dir when empty.
	JWTSecret string `yaml:"jwt_secret"`
	// EncryptionKey (32 bytes, base64 or hex) encrypts private keys at rest;
	// generated into data_dir when empty.
	EncryptionKey string `yaml:"encryption_key"`
	// AccessTokenTTL is the lifetime of access JWTs.
	AccessTokenTTL time.Duration `yaml:"access_token_ttl"`
	// RefreshTokenTTL is the lifetime of refresh tokens and admin sessions.
	RefreshTokenTTL time.Duration `yaml:"refresh_token_ttl"`
	// RateLimitPerMinute is the request budget of one credential.
	RateLimitPerMinute int `yaml:"rate_limit_per_minute"`
	// LoginAttemptsPerAccount is the number of failed logins allowed per account
	// within LoginWindow before further attempts are refused.
	LoginAttemptsPerAccount int `yaml:"login_attempts_per_account"`
	// LoginAttemptsPerIP is the same budget per client IP. It also bounds the
	// bad tokens one client IP may send as a live socket's first message
	// within LoginWindow (Router.Socket, counted per replica).
	LoginAttemptsPerIP int `yaml:"login_attempts_per_ip"`
	// LoginWindow is the throttling window.
	LoginWindow time.Duration `yaml:"login_window"`
	// PasswordHashConcurrency caps the password hashes (argon2id, 19 MiB each)
	// computed at once by one replica; 0 means twice GOMAXPROCS.
	PasswordHashConcurrency int `yaml:"password_hash_concurrency"`
	// RequireEmailCode makes the emailed one-time code mandatory for every user.
	RequireEmailCode bool `yaml:"require_email_code"`
}

// AdminConfig names the first administrator created on first start.
type AdminConfig struct {
	Email    string `yaml:"email"`
	Password string `yaml:"password"`
}

// SMTPConfig configures outgoing mail (one-time codes, invitations).
type SMTPConfig struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	From     string `yaml:"from"`
	// TLS is "none", "starttls" or "tls".
	TLS string `yaml:"tls"`
}

// LogConfig configures slog.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// VHostsConfig limits what virtual hosts may configure.
type VHostsConfig struct {
	// StaticRootPrefixes are comma-separated absolute directories; the root
	// of a static location must be one of them or lie under one. Empty
	// means DefaultStaticRootPrefixes.
	StaticRootPrefixes string `yaml:"static_root_prefixes"`
}

// LogsConfig configures the stored access and error logs.
type LogsConfig struct {
	// Retention is how long log lines are kept (whole days; partitions older
	// than that are dropped). A workspace may keep its own lines for less.
	Retention time.Duration `yaml:"retention"`
}

// DefaultLogsRetention is logs.retention when it is not set: 14 days.
const DefaultLogsRetention = 14 * 24 * time.Hour

// MetricsConfig configures the stored traffic rollups and host metrics.
type MetricsConfig struct {
	// RetentionMinute is how long per-minute traffic rollups and the agents'
	// host metric samples are kept.
	RetentionMinute time.Duration `yaml:"retention_minute"`
	// RetentionHour is how long hourly traffic rollups are kept.
	RetentionHour time.Duration `yaml:"retention_hour"`
	// AlertInterval is how often the elected leader evaluates the alert
	// rules.
	AlertInterval time.Duration `yaml:"alert_interval"`
}

// Defaults of the metrics retention: 7 days of minutes, 90 days of hours.
const (
	DefaultMetricsRetentionMinute = 7 * 24 * time.Hour
	DefaultMetricsRetentionHour   = 90 * 24 * time.Hour
	// DefaultMetricsAlertInterval is metrics.alert_interval when it is not set.
	DefaultMetricsAlertInterval = 30 * time.Second
)

// DefaultStaticRootPrefixes are the usual homes of static sites.
const DefaultStaticRootPrefixes = "/var/www,/srv,/usr/share/nginx,/opt/www"

// RootPrefixes returns StaticRootPrefixes (or DefaultStaticRootPrefixes)
// as a list of cleaned paths.
func (c VHostsConfig) RootPrefixes() []string {
	s := c.StaticRootPrefixes
	if strings.TrimSpace(s) == "" {
		s = DefaultStaticRootPrefixes
	}
	var out []string
	for _, p := range splitList(s) {
		out = append(out, filepath.Clean(p))
	}
	return out
}

// validate checks every prefix: absolute, already clean, not "/".
func (c VHostsConfig) validate() error {
	for _, p := range splitList(c.StaticRootPrefixes) {
		clean := filepath.Clean(p)
		if !filepath.IsAbs(p) || clean == "/" || (p != clean && p != clean+"/") {
			return fmt.Errorf("vhosts.static_root_prefixes: %q must be a clean absolute path other than /", p)
		}
	}
	return nil
}

// DefaultMaxMessageBytes is grpc.max_message_bytes when it is not set: 64 MiB,
// 16 times gRPC's own default receive limit.
const DefaultMaxMessageBytes = 64 << 20

// DefaultConfig returns the configuration used for keys that are not set.
func DefaultConfig() Config {
	return Config{
		DataDir:  "./data",
		Database: DatabaseConfig{MaxConns: 20},
		HTTP: HTTPConfig{
			Addr:            "127.0.0.1:8080",
			PublicURL:       "http://127.0.0.1:8080",
			SecureCookies:   true,
			ShutdownTimeout: 15 * time.Second,
			BodyLimit:       1 << 20,
		},
		GRPC: GRPCConfig{Addr: "127.0.0.1:9443", HeartbeatInterval: 10 * time.Second, MaxMessageBytes: DefaultMaxMessageBytes},
		Auth: AuthConfig{
			AccessTokenTTL:          time.Hour,
			RefreshTokenTTL:         30 * 24 * time.Hour,
			RateLimitPerMinute:      1000,
			LoginAttemptsPerAccount: 5,
			LoginAttemptsPerIP:      20,
			LoginWindow:             15 * time.Minute,
		},
		SMTP:   SMTPConfig{Port: 25, From: "nxmesh@localhost", TLS: "none"},
		Log:    LogConfig{Level: "info", Format: "text"},
		VHosts: VHostsConfig{StaticRootPrefixes: DefaultStaticRootPrefixes},
		Logs:   LogsConfig{Retention: DefaultLogsRetention},
		Metrics: MetricsConfig{
			RetentionMinute: DefaultMetricsRetentionMinute,
			RetentionHour:   DefaultMetricsRetentionHour,
			AlertInterval:   DefaultMetricsAlertInterval,
		},
		ACME: ACMEConfig{
			LetsEncryptURL:        "https://acme-v02.api.letsencrypt.org/directory",
			LetsEncryptStagingURL: "https://acme-staging-v02.api.letsencrypt.org/directory",
			ZeroSSLURL:            "https://acme.zerossl.com/v2/DV90",
			RenewCheckInterval:    10 * time.Minute,
		},
	}
}

// LoadConfig reads path (if it exists; an empty path means defaults only) and then
// applies NXMESH_* environment overrides from env (os.Environ form).
func LoadConfig(path string, env []string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return cfg, fmt.Errorf("read config %s: %w", path, err)
		default:
			if err := yaml.Unmarshal(b, &cfg); err != nil {
				return cfg, fmt.Errorf("parse config %s: %w", path, err)
			}
		}
	}
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "NXMESH_") {
			vars[k] = v
		}
	}
	if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "NXMESH", vars); err != nil {
		return cfg, err
	}
	if err := cfg.VHosts.validate(); err != nil {
		return cfg, err
	}
	if cfg.Logs.Retention < 24*time.Hour {
		return cfg, fmt.Errorf("logs.retention: %s must be at least 24h", cfg.Logs.Retention)
	}
	if cfg.Metrics.RetentionMinute < time.Hour {
		return cfg, fmt.Errorf("metrics.retention_minute: %s must be at least 1h", cfg.Metrics.RetentionMinute)
	}
	if cfg.Metrics.RetentionHour < cfg.Metrics.RetentionMinute {
		return cfg, fmt.Errorf("metrics.retention_hour: %s must be at least metrics.retention_minute (%s)", cfg.Metrics.RetentionHour, cfg.Metrics.RetentionMinute)
	}
	if cfg.Metrics.AlertInterval < time.Second {
		return cfg, fmt.Errorf("metrics.alert_interval: %s must be at least 1s", cfg.Metrics.AlertInterval)
	}
	if cfg.DataDir != "" {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return cfg, fmt.Errorf("data_dir: %w", err)
		}
		cfg.DataDir = abs
	}
	return cfg, nil
}

// EnvNames lists every configuration key with its environment variable name.
func EnvNames() map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type, key, env string)
	walk = func(t reflect.Type, key, env string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			k, e := strings.TrimPrefix(key+"."+tag, "."), env+"_"+strings.ToUpper(tag)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(f.Type, k, e)
				continue
			}
			out[k] = e
		}
	}
	walk(reflect.TypeOf(Config{}), "", "NXMESH")
	return out
}

func applyEnv(v reflect.Value, prefix string, vars map[string]string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := prefix + "_" + strings.ToUpper(f.Tag.Get("yaml"))
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			if err := applyEnv(fv, name, vars); err != nil {
				return err
			}
			continue
		}
		raw, ok := vars[name]
		if !ok {
			continue
		}
		switch {
		case fv.Type() == reflect.TypeOf(time.Duration(0)):
			d, err := time.ParseDuration(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetInt(int64(d))
		case fv.Kind() == reflect.String:
			fv.SetString(raw)
		case fv.Kind() == reflect.Int:
			n, err := strconv.Atoi(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetInt(int64(n))
		case fv.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetBool(b)
		default:
			return fmt.Errorf("%s: unsupported kind %s", name, fv.Kind())
		}
	}
	return nil
}

// Validate fills zero durations and limits that modules rely on with
// DefaultConfig's values and checks the result. app.New runs it once, so
// modules trust Deps.Config as it is.
func (c *Config) Validate() error {
	def := DefaultConfig()
	if c.Auth.AccessTokenTTL <= 0 {
		c.Auth.AccessTokenTTL = def.Auth.AccessTokenTTL
	}
	if c.Auth.RefreshTokenTTL <= 0 {
		c.Auth.RefreshTokenTTL = def.Auth.RefreshTokenTTL
	}
	if c.Auth.LoginWindow <= 0 {
		c.Auth.LoginWindow = def.Auth.LoginWindow
	}
	if c.GRPC.HeartbeatInterval <= 0 {
		c.GRPC.HeartbeatInterval = def.GRPC.HeartbeatInterval
	}
	if c.GRPC.MaxMessageBytes <= 0 {
		c.GRPC.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if err := c.VHosts.validate(); err != nil {
		return err
	}
	return nil
}
