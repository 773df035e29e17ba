package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()

	t.Run("EnvironmentOverridesFile", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte("http:\n  addr: 127.0.0.1:1\nauth:\n  login_window: 1m\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, []string{"NXMESH_HTTP_ADDR=127.0.0.1:2", "NXMESH_DATABASE_URL=postgres://x", "NXMESH_AUTH_LOGIN_WINDOW=2m", "NXMESH_ADMIN_EMAIL=a@b.c"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.HTTP.Addr != "127.0.0.1:2" || cfg.Database.URL != "postgres://x" || cfg.Auth.LoginWindow != 2*time.Minute || cfg.Admin.Email != "a@b.c" {
			t.Fatalf("overrides not applied: %+v", cfg)
		}
	})

	t.Run("RejectsBadEnvironmentValue", func(t *testing.T) {
		t.Parallel()
		_, err := LoadConfig("", []string{"NXMESH_DATABASE_MAX_CONNS=many"})
		if err == nil || !strings.Contains(err.Error(), "NXMESH_DATABASE_MAX_CONNS") {
			t.Fatalf("want error naming the variable, got %v", err)
		}
	})

	t.Run("ACMEDefaultsAndEnvironment", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig("", []string{"NXMESH_ACME_CA_FILE=/tmp/pebble.pem", "NXMESH_ACME_RENEW_CHECK_INTERVAL=1m", "NXMESH_ACME_EMAIL=ops@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ACME.LetsEncryptURL != "https://acme-v02.api.letsencrypt.org/directory" || cfg.ACME.CAFile != "/tmp/pebble.pem" ||
			cfg.ACME.RenewCheckInterval != time.Minute || cfg.ACME.Email != "ops@example.com" {
			t.Fatalf("acme config: %+v", cfg.ACME)
		}
	})

	t.Run("StaticRootPrefixes", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig("", []string{"NXMESH_VHOSTS_STATIC_ROOT_PREFIXES=/data/sites, /srv/"})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.VHosts.RootPrefixes(); len(got) != 2 || got[0] != "/data/sites" || got[1] != "/srv" {
			t.Errorf("RootPrefixes = %q, want [/data/sites /srv]", got)
		}
		if got := (VHostsConfig{}).RootPrefixes(); strings.Join(got, ",") != DefaultStaticRootPrefixes {
			t.Errorf("empty RootPrefixes = %q, want the defaults", got)
		}
		for _, bad := range []string{"/", "relative/dir", "/var/www/../lib", "/srv,/"} {
			if _, err := LoadConfig("", []string{"NXMESH_VHOSTS_STATIC_ROOT_PREFIXES=" + bad}); err == nil || !strings.Contains(err.Error(), "static_root_prefixes") {
				t.Errorf("prefixes %q: error %v, want one naming static_root_prefixes", bad, err)
			}
		}
	})

	t.Run("MaxMessageBytesDefaultsTo64MiBAndTakesTheEnvironment", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.GRPC.MaxMessageBytes != 64<<20 {
			t.Errorf("default grpc.max_message_bytes = %d, want %d", cfg.GRPC.MaxMessageBytes, 64<<20)
		}
		shipped, err := LoadConfig("../config.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		if shipped.GRPC.MaxMessageBytes != cfg.GRPC.MaxMessageBytes {
			t.Errorf("config.yaml sets grpc.max_message_bytes = %d, the default is %d", shipped.GRPC.MaxMessageBytes, cfg.GRPC.MaxMessageBytes)
		}
		cfg, err = LoadConfig("../config.yaml", []string{"NXMESH_GRPC_MAX_MESSAGE_BYTES=262144"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.GRPC.MaxMessageBytes != 256<<10 {
			t.Errorf("NXMESH_GRPC_MAX_MESSAGE_BYTES=262144 gave %d", cfg.GRPC.MaxMessageBytes)
		}
	})

	t.Run("LogsRetentionDefaultsTo14DaysAndTakesTheEnvironment", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig("../config.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Logs.Retention != 14*24*time.Hour {
			t.Errorf("logs.retention = %s, want 336h", cfg.Logs.Retention)
		}
		cfg, err = LoadConfig("../config.yaml", []string{"NXMESH_LOGS_RETENTION=72h"})
		if err != nil || cfg.Logs.Retention != 72*time.Hour {
			t.Errorf("NXMESH_LOGS_RETENTION=72h gave %s, %v", cfg.Logs.Retention, err)
		}
		if _, err := LoadConfig("", []string{"NXMESH_LOGS_RETENTION=1h"}); err == nil || !strings.Contains(err.Error(), "logs.retention") {
			t.Errorf("retention of 1h: error %v, want one naming logs.retention", err)
		}
	})

	t.Run("MetricsRetentionPerResolution", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig("../config.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Metrics.RetentionMinute != 7*24*time.Hour || cfg.Metrics.RetentionHour != 90*24*time.Hour {
			t.Errorf("metrics retention = %s / %s, want 168h / 2160h", cfg.Metrics.RetentionMinute, cfg.Metrics.RetentionHour)
		}
		cfg, err = LoadConfig("../config.yaml", []string{"NXMESH_METRICS_RETENTION_MINUTE=48h", "NXMESH_METRICS_RETENTION_HOUR=720h"})
		if err != nil || cfg.Metrics.RetentionMinute != 48*time.Hour || cfg.Metrics.RetentionHour != 720*time.Hour {
			t.Errorf("NXMESH_METRICS_RETENTION_* gave %+v, %v", cfg.Metrics, err)
		}
		for env, key := range map[string]string{
			"NXMESH_METRICS_RETENTION_MINUTE=30m": "metrics.retention_minute",
			"NXMESH_METRICS_RETENTION_HOUR=24h":   "metrics.retention_hour",
		} {
			if _, err := LoadConfig("", []string{env}); err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s: error %v, want one naming %s", env, err, key)
			}
		}
	})

	t.Run("ShippedFileListsEveryKey", func(t *testing.T) {
		t.Parallel()
		b, err := os.ReadFile("../config.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for key, env := range EnvNames() {
			if !strings.Contains(string(b), env) {
				t.Errorf("config.yaml does not mention %s (%s)", key, env)
			}
		}
		if _, err := LoadConfig("../config.yaml", nil); err != nil {
			t.Fatalf("shipped config does not load: %v", err)
		}
	})
}
