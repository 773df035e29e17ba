package app

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/nxmesh/nxmesh/migrations"
)

// Database is the one pgx pool and the GORM and database/sql handles over it.
type Database struct {
	Pool *pgxpool.Pool
	SQL  *sql.DB
	Gorm *gorm.DB
}

// OpenDatabase connects to url with at most maxConns connections.
func OpenDatabase(ctx context.Context, url string, maxConns int) (*Database, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		pcfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect database: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect database: %w", err)
	}
	sqlDB := stdlib.OpenDBFromPool(pool)
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{
		Logger:                 logger.Discard,
		PrepareStmt:            false,
		SkipDefaultTransaction: true,
		TranslateError:         true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open gorm: %w", err)
	}
	return &Database{Pool: pool, SQL: sqlDB, Gorm: gdb}, nil
}

// Close releases the pool.
func (d *Database) Close() {
	_ = d.SQL.Close()
	d.Pool.Close()
}

// Migrator applies the SQL migrations in migrations/ and River's own.
type Migrator struct {
	db     *Database
	goose  *goose.Provider
	logger *slog.Logger
}

// NewMigrator prepares both migration sets.
func NewMigrator(db *Database, logger *slog.Logger) (*Migrator, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db.SQL, migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return &Migrator{db: db, goose: p, logger: logger}, nil
}

func (m *Migrator) river() (*rivermigrate.Migrator[pgxTx], error) {
	return rivermigrate.New(riverpgxv5.New(m.db.Pool), nil)
}

// Up applies every pending migration: River's first, then the application's.
func (m *Migrator) Up(ctx context.Context) error {
	rm, err := m.river()
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	res, err := m.goose.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	for _, r := range res {
		m.logger.InfoContext(ctx, "migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// Down rolls back the newest application migration.
func (m *Migrator) Down(ctx context.Context) error {
	r, err := m.goose.Down(ctx)
	if err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	if r != nil {
		m.logger.InfoContext(ctx, "migration rolled back", "version", r.Source.Version, "file", r.Source.Path)
	}
	return nil
}

// DownTo rolls back the application migrations newer than version.
func (m *Migrator) DownTo(ctx context.Context, version int64) error {
	res, err := m.goose.DownTo(ctx, version)
	if err != nil {
		return fmt.Errorf("migrate down to %d: %w", version, err)
	}
	for _, r := range res {
		m.logger.InfoContext(ctx, "migration rolled back", "version", r.Source.Version, "file", r.Source.Path)
	}
	return nil
}

// MigrationStatus is one migration and whether it is applied.
type MigrationStatus struct {
	Version   int64
	File      string
	Applied   bool
	AppliedAt time.Time
}

// Status lists the application migrations.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	st, err := m.goose.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationStatus{Version: s.Source.Version, File: s.Source.Path, Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt})
	}
	return out, nil
}

// Current reports whether no migration is pending.
func (m *Migrator) Current(ctx context.Context) (bool, error) {
	pending, err := m.goose.HasPending(ctx)
	if err != nil {
		return false, fmt.Errorf("migration status: %w", err)
	}
	return !pending, nil
}
