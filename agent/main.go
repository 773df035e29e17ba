// Command nxmesh-agent runs beside an nginx server: it receives the
// desired configuration from the NxMesh master over a gRPC stream, installs
// it into nginx (validate, swap, reload, verify, roll back), keeps nginx
// running, and reports health.
//
// Start-up, in order:
//
//  1. Read flags, NXMESH_AGENT_* variables and the --config file.
//  2. Check that the agent can reach the master at all: an identity in
//     <data-dir>/identity or a registration token.
//  3. Bring nginx up with the last good configuration on disk (supervise
//     mode: adopt the running nginx or start it) — before, and
//     independently of, the master being reachable.
//  4. Start the upstreams' active health checks (agent/health); they probe
//     the servers of the configuration the master sends once it applied.
//     Start the log shipper (agent/collect/logs): it follows nginx's access
//     and error logs and sends them whenever the master is connected.
//  5. Connect to the master and stay connected until SIGINT or SIGTERM.
//
// See `nxmesh-agent --help` for the flags and the two nginx modes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nxmesh/nxmesh/agent/acmechallenge"
	"github.com/nxmesh/nxmesh/agent/collect"
	"github.com/nxmesh/nxmesh/agent/collect/logs"
	"github.com/nxmesh/nxmesh/agent/controlplane"
	"github.com/nxmesh/nxmesh/agent/health"
	"github.com/nxmesh/nxmesh/agent/nginx"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Set at link time:
//
//	go build -ldflags "-X main.version=1.2.3 -X main.commit=$(git rev-parse HEAD) -X main.buildDate=$(date -u +%FT%TZ)" ./agent
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its inputs and outputs explicit; it returns the exit
// status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nxmesh-agent: %v\n", err)
		return 2
	}
	if cfg.Version {
		fmt.Fprintf(stdout, "nxmesh-agent %s (commit %s, built %s)\n", version, commit, buildDate)
		return 0
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nxmesh-agent: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("agent stopped", "error", err)
		return 1
	}
	return 0
}

// newLogger builds the slog logger from --log-level and --log-format.
func newLogger(cfg *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", cfg.LogFormat)
	}
}

// serve runs the agent until ctx ends.
func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	// 2. Without identity or token the agent could never connect.
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	id, err := controlplane.LoadIdentity(cfg.DataDir)
	if err != nil {
		return err
	}
	if id == nil && cfg.Token == "" {
		return errors.New("this agent has not registered yet: pass --token (NXMESH_AGENT_TOKEN) with a registration token from the master")
	}
	// After registration the master's CA is stored with the identity; before
	// it, the operator must say how to trust the master.
	if (id == nil || len(id.CAPEM) == 0) && cfg.CAFile == "" && cfg.CAFingerprint == "" {
		return errors.New("set --ca-file or --ca-fingerprint (NXMESH_AGENT_CA_FILE / NXMESH_AGENT_CA_FINGERPRINT) to trust the master; the install command shown by the master has the fingerprint")
	}

	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	a := &agent{
		info:     buildInfo{Version: version, Commit: commit, BuildDate: buildDate},
		hostname: hostname,
		started:  time.Now(),
		log:      log,
		coll:     collect.New(collect.Options{DiskPath: cfg.DataDir}),
	}

	// ACME HTTP-01 challenges are served from <data-dir>/acme-challenge.
	if a.acme, err = acmechallenge.Open(filepath.Join(cfg.DataDir, "acme-challenge")); err != nil {
		return err
	}

	// 3. nginx first: it serves the last good version whatever the master
	// does.
	accessLog, err := accessLogPath(cfg)
	if err != nil {
		return err
	}
	mgr, err := nginx.New(nginx.Options{
		ACMEChallengeDir:   a.acme.Dir(),
		Binary:             cfg.NginxBinary,
		Prefix:             prefixIf(cfg),
		User:               cfg.NginxUser,
		StopOnClose:        cfg.NginxStopOnExit,
		DisableAutoRestart: !cfg.AutoRestart,
		Conf:               cfg.NginxConf,
		IncludeDir:         cfg.IncludeDir,
		PIDFile:            cfg.NginxPIDFile,
		ErrorLog:           cfg.NginxErrorLog,
		StatusPort:         cfg.StatusPort,
		AccessLog:          accessLog,
		ProtectedDirs:      []string{cfg.DataDir},
		Logger:             log,
		EventFunc:          a.onEvent,
	})
	if err != nil {
		return err
	}
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := mgr.Close(cctx); err != nil {
			log.Error("stop nginx", "error", err)
		}
	}()
	a.mgr = mgr
	if mgr.Mode() == nginx.ModeManage {
		httpLine, streamLine := nginx.IncludeLines(cfg.IncludeDir)
		log.Info("manage mode: nginx.conf must include the agent's files", "http", httpLine, "stream", streamLine)
	}

	// 4. Health checks: a change re-applies the configuration and sends a
	// health report at once.
	changed := make(chan struct{}, 1)
	a.health = health.New(health.Options{Logger: log, OnChange: func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}})
	hctx, stopHealth := context.WithCancel(ctx)
	var healthDone sync.WaitGroup
	defer healthDone.Wait()
	defer stopHealth()
	healthDone.Go(func() { a.health.Run(hctx) })
	healthDone.Go(func() { a.watchHealth(hctx, changed) })
	healthDone.Go(func() {
		a.acme.Run(hctx, func(err error) { log.Error("expire ACME challenges", "error", err) })
	})

	// Logs: read, spooled and sent on their own goroutines.
	var shipper *logs.Shipper
	if accessLog != "" {
		if shipper, err = newShipper(cfg, mgr, accessLog, log); err != nil {
			return err
		}
	}

	// 5. The master.
	var onAck func(*agentv1.Ack)
	if shipper != nil {
		onAck = shipper.Ack
	}
	client, err := controlplane.New(controlplane.Options{
		Master:          cfg.Master,
		Token:           cfg.Token,
		CAFile:          cfg.CAFile,
		CAFingerprint:   cfg.CAFingerprint,
		DataDir:         cfg.DataDir,
		Hostname:        hostname,
		Name:            cfg.Name,
		Labels:          cfg.Labels,
		DeploymentMode:  cfg.DeploymentMode,
		Version:         version,
		Capabilities:    mgr.Build().Features,
		Heartbeat:       cfg.Heartbeat,
		MaxMessageBytes: cfg.MaxMessageBytes,
		Handler:         a,
		OnAck:           onAck,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	a.client.Store(client)
	if shipper != nil {
		healthDone.Go(func() { shipper.Run(hctx, client) })
	}
	healthDone.Go(func() { a.sendMetrics(hctx, collect.New(collect.Options{DiskPath: cfg.DataDir}), metricsInterval) })
	log.Info("nxmesh-agent started", "version", version, "master", cfg.Master, "nginx_mode", mgr.Mode(), "data_dir", cfg.DataDir)
	return client.Run(ctx)
}

// prefixIf returns the supervise-mode prefix, empty in manage mode.
func prefixIf(cfg *config) string {
	if cfg.supervise() {
		return cfg.NginxPrefix
	}
	return ""
}
