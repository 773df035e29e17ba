package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nxmesh/nxmesh/agent/collect/logs"
	"github.com/nxmesh/nxmesh/agent/nginx"
)

// logDir is the agent's log directory: nginx writes the access log there
// (accessLogName) and the Shipper keeps its positions and spool beside it.
func logDir(cfg *config) string { return filepath.Join(cfg.DataDir, "logs") }

// accessLogName is the access log every rendered server writes, http
// (render.HTTPLogFormat) and stream (render.StreamLogFormat) alike.
const accessLogName = "access.log"

// accessLogPath returns the access log path nginx is given, "" with
// --logs=false. The directory is created: nginx -t opens the file.
func accessLogPath(cfg *config) (string, error) {
	if !cfg.Logs {
		return "", nil
	}
	dir := logDir(cfg)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create log directory: %w", err)
	}
	return filepath.Join(dir, accessLogName), nil
}

// newShipper builds the log Shipper for the access log and nginx's error
// log (when that is a file). The agent rotates the access log, and the
// error log in supervise mode, where it owns them.
func newShipper(cfg *config, mgr *nginx.Manager, accessLog string, log *slog.Logger) (*logs.Shipper, error) {
	sources := []logs.Source{{Path: accessLog, Kind: logs.KindAccess, Rotate: true}}
	if p := mgr.ErrorLogPath(); p != "" {
		sources = append(sources, logs.Source{Path: p, Kind: logs.KindError, Rotate: mgr.Mode() == nginx.ModeSupervise})
	} else {
		log.Warn("nginx's error log is not a file; its lines are not sent to the master")
	}
	return logs.NewShipper(logs.ShipperOptions{
		Dir:           logDir(cfg),
		Sources:       sources,
		BatchLines:    cfg.LogBatchLines,
		BatchInterval: cfg.LogBatchInterval,
		SpoolMax:      cfg.LogSpoolMax,
		MaxFileBytes:  cfg.LogFileMax,
		Reopen:        func(context.Context) error { return mgr.ReopenLogs() },
		Logger:        log,
	})
}
