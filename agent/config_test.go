package main

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// env is a fake environment for parseConfig.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

var trust = []string{"--master", "m:9090", "--ca-fingerprint", "sha256:" + strings.Repeat("ab", 32)}

func TestParseConfig(t *testing.T) {
	t.Parallel()

	t.Run("AppliesDefaults", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig(trust, env{}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.DataDir != defaultDataDir || cfg.NginxBinary != "nginx" || !cfg.AutoRestart || cfg.StatusPort != 0 {
			t.Errorf("defaults: %+v", cfg)
		}
		if !cfg.supervise() || cfg.NginxPrefix != filepath.Join(defaultDataDir, "nginx") {
			t.Errorf("default mode: supervise=%v prefix=%q", cfg.supervise(), cfg.NginxPrefix)
		}
		if cfg.DeploymentMode != agentv1.DeploymentMode_STANDALONE {
			t.Errorf("deployment mode = %v", cfg.DeploymentMode)
		}
		if cfg.MaxMessageBytes != 64<<20 {
			t.Errorf("max message bytes = %d, want 64 MiB like the master's grpc.max_message_bytes", cfg.MaxMessageBytes)
		}
	})

	t.Run("LogSettings", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig(trust, env{}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.Logs || cfg.LogBatchLines != 4000 || cfg.LogBatchInterval != 5*time.Second || cfg.LogSpoolMax != 512<<20 || cfg.LogFileMax != 64<<20 {
			t.Errorf("log defaults: %+v", cfg)
		}
		file := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(file, []byte("log-batch-lines: 200\nlog_spool_max: 2GiB\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err = parseConfig(append([]string{"--log-batch-interval", "1s", "--log-file-max", "16777216", "--logs=false"}, trust...),
			env{"NXMESH_AGENT_CONFIG": file}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Logs || cfg.LogBatchLines != 200 || cfg.LogBatchInterval != time.Second || cfg.LogSpoolMax != 2<<30 || cfg.LogFileMax != 16<<20 {
			t.Errorf("log settings: %+v", cfg)
		}
	})

	t.Run("MaxMessageBytesFromEnvironment", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig(trust, env{"NXMESH_AGENT_MAX_MESSAGE_BYTES": "134217728"}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MaxMessageBytes != 128<<20 {
			t.Errorf("max message bytes = %d, want 128 MiB", cfg.MaxMessageBytes)
		}
	})

	t.Run("FlagWinsOverEnvWinsOverFile", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "agent.yaml")
		yaml := "nginx-binary: /from/file\nname: file-name\nstatus_port: 8081\nlabels:\n  env: prod\n  zone: a\nheartbeat: 5s\nauto-restart: false\n"
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		e := env{
			"NXMESH_AGENT_CONFIG":       file,
			"NXMESH_AGENT_NGINX_BINARY": "/from/env",
			"NXMESH_AGENT_NAME":         "env-name",
		}
		cfg, err := parseConfig(append([]string{"--name", "flag-name"}, trust...), e.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Name != "flag-name" || cfg.NginxBinary != "/from/env" || cfg.StatusPort != 8081 || cfg.Heartbeat != 5*time.Second || cfg.AutoRestart {
			t.Errorf("precedence: %+v", cfg)
		}
		if !maps.Equal(cfg.Labels, map[string]string{"env": "prod", "zone": "a"}) {
			t.Errorf("labels = %v", cfg.Labels)
		}
	})

	t.Run("SeveralMasters", func(t *testing.T) {
		t.Parallel()
		fp := []string{"--ca-fingerprint", "sha256:" + strings.Repeat("ab", 32)}
		cfg, err := parseConfig(append([]string{"--master", "a:9090, b:9090", "--master", "c:9090", "--master", "a:9090"}, fp...), env{}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Master != "a:9090,b:9090,c:9090" {
			t.Errorf("masters from flags = %q", cfg.Master)
		}
		file := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(file, []byte("master:\n  - x:1\n  - y:2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err = parseConfig(fp, env{"NXMESH_AGENT_CONFIG": file}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Master != "x:1,y:2" {
			t.Errorf("masters from the file = %q", cfg.Master)
		}
		if _, err := parseConfig(append([]string{"--master", "a:9090,nope"}, fp...), env{}.lookup, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Errorf("bad address: err = %v", err)
		}
	})

	t.Run("ManageMode", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig(append([]string{"--nginx-conf", "/etc/nginx/nginx.conf", "--include-dir", "/etc/nginx/nxmesh",
			"--labels", "a=1, b=2", "--deployment-mode", "KUBERNETES_SIDECAR"}, trust...), env{}.lookup, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.supervise() || cfg.NginxPrefix != "" || cfg.IncludeDir != "/etc/nginx/nxmesh" {
			t.Errorf("manage mode: %+v", cfg)
		}
		if !maps.Equal(cfg.Labels, map[string]string{"a": "1", "b": "2"}) || cfg.DeploymentMode != agentv1.DeploymentMode_KUBERNETES_SIDECAR {
			t.Errorf("labels %v mode %v", cfg.Labels, cfg.DeploymentMode)
		}
	})

	t.Run("HelpNamesEnvironmentVariablesAndIncludeLines", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		_, err := parseConfig([]string{"--help"}, env{}.lookup, &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("err = %v", err)
		}
		for _, want := range []string{"NXMESH_AGENT_NGINX_BINARY", "--nginx-prefix", "include /etc/nginx/nxmesh/http.conf;", "include /etc/nginx/nxmesh/stream.conf;"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("help lacks %q", want)
			}
		}
	})

	t.Run("VersionNeedsNothingElse", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig([]string{"--version"}, env{}.lookup, &bytes.Buffer{})
		if err != nil || !cfg.Version {
			t.Fatalf("--version: %v", err)
		}
	})

	rejects := []struct {
		name string
		args []string
		env  env
		file string
		want string
	}{
		{name: "RejectsMissingMaster", args: []string{"--ca-file", "/ca.pem"}, want: "--master"},
		{name: "RejectsBothModes", args: append([]string{"--nginx-prefix", "/x", "--nginx-conf", "/n", "--include-dir", "/i"}, trust...), want: "cannot be combined"},
		{name: "RejectsHalfManageMode", args: append([]string{"--nginx-conf", "/n"}, trust...), want: "both --nginx-conf and --include-dir"},
		{name: "RejectsBadLabels", args: append([]string{"--labels", "novalue"}, trust...), want: "key=value"},
		{name: "RejectsBadPortFromEnv", args: trust, env: env{"NXMESH_AGENT_STATUS_PORT": "70000"}, want: "NXMESH_AGENT_STATUS_PORT"},
		{name: "RejectsUnknownFileKey", args: trust, file: "nginx_binary: x\nbogus: 1\n", want: `unknown key "bogus"`},
		{name: "RejectsBadDeploymentMode", args: append([]string{"--deployment-mode", "vm"}, trust...), want: "deployment mode"},
		{name: "RejectsZeroLogBatchLines", args: append([]string{"--log-batch-lines", "0"}, trust...), want: "--log-batch-lines must be positive"},
		{name: "RejectsBadSpoolSize", args: append([]string{"--log-spool-max", "lots"}, trust...), want: "KiB, MiB or GiB"},
		{name: "RejectsTinySpool", args: trust, env: env{"NXMESH_AGENT_LOG_SPOOL_MAX": "100KiB"}, want: "--log-spool-max must be at least 1MiB"},
		{name: "RejectsZeroMaxMessageBytes", args: append([]string{"--max-message-bytes", "0"}, trust...), want: "--max-message-bytes must be positive"},
	}
	for _, c := range rejects {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := c.env
			if e == nil {
				e = env{}
			}
			if c.file != "" {
				p := filepath.Join(t.TempDir(), "agent.yaml")
				if err := os.WriteFile(p, []byte(c.file), 0o644); err != nil {
					t.Fatal(err)
				}
				e["NXMESH_AGENT_CONFIG"] = p
			}
			_, err := parseConfig(c.args, e.lookup, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}
