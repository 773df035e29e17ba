// Command nxmesh is the NxMesh master: the REST API, the admin, the agents' gRPC
// endpoint and the background jobs, in one binary.
//
//	nxmesh serve                       run the master
//	nxmesh migrate up|down|status      manage the database schema
//	nxmesh users create --email E --password P [--superadmin]
//	nxmesh version
//
// Configuration comes from config.yaml (--config, or NXMESH_CONFIG) and NXMESH_*
// environment variables; see config.yaml for every key.
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
	"syscall"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/wire"
)

// Build information, set with -ldflags "-X main.version=… -X main.commit=… -X main.date=…".
var (
	version = "0.1.0-dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nxmesh:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  nxmesh serve [--config FILE]
  nxmesh migrate up|down|status [--config FILE]
  nxmesh users create --email E --password P [--superadmin] [--config FILE]
  nxmesh version`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "nxmesh %s (commit %s, built %s)\n", version, commit, date)
		return nil
	case "serve":
		fs, cfgPath := flags("serve", stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return serve(ctx, *cfgPath, stdout, stderr)
	case "migrate":
		fs, cfgPath := flags("migrate", stderr)
		if len(args) < 2 {
			return errors.New(usage)
		}
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		return migrate(ctx, *cfgPath, args[1], stdout, stderr)
	case "users":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(usage)
		}
		fs, cfgPath := flags("users create", stderr)
		email := fs.String("email", "", "e-mail address (login)")
		password := fs.String("password", "", "password (8 to 256 characters; common and trivial ones are refused)")
		super := fs.Bool("superadmin", false, "make the user a superadmin")
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		return createUser(ctx, *cfgPath, *email, *password, *super, stdout, stderr)
	case "help", "--help", "-h":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func flags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("NXMESH_CONFIG")
	if def == "" {
		def = "config.yaml"
	}
	return fs, fs.String("config", def, "configuration file (missing file: defaults and environment only)")
}

func load(path string, stderr io.Writer) (app.Config, *slog.Logger, error) {
	cfg, err := app.LoadConfig(path, os.Environ())
	if err != nil {
		return cfg, nil, err
	}
	return cfg, app.NewLogger(cfg.Log, stderr), nil
}

func serve(ctx context.Context, cfgPath string, stdout, stderr io.Writer) error {
	cfg, logger, err := load(cfgPath, stderr)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	mods, err := wire.New(a.Deps)
	if err != nil {
		a.Close(context.Background())
		return err
	}
	if err := bootstrap(ctx, cfg, mods, stdout); err != nil {
		a.Close(context.Background())
		return err
	}
	// app.Run starts the agents hub and the logs ingest (both are app.Runners).
	w := mods.Wiring(version)
	w.Commit = commit
	return a.Run(ctx, mods.List(), w)
}

// bootstrap creates the first administrator when there is no user at all, from
// NXMESH_ADMIN_EMAIL/NXMESH_ADMIN_PASSWORD, or with a generated password printed
// once. There is no sign-up route, so no request can claim the first account.
func bootstrap(ctx context.Context, cfg app.Config, mods wire.Modules, stdout io.Writer) error {
	created, generated, err := mods.Auth.Service().EnsureFirstAdmin(ctx, cfg.Admin.Email, cfg.Admin.Password)
	if err != nil {
		return fmt.Errorf("first administrator: %w", err)
	}
	if !created {
		return nil
	}
	email := cfg.Admin.Email
	if email == "" {
		email = auth.DefaultAdminEmail
	}
	user, err := mods.Auth.Service().UserByEmail(ctx, email)
	if err != nil {
		return fmt.Errorf("first administrator: %w", err)
	}
	if _, _, _, err := mods.Orgs.Service().EnsureDefaultOrganization(ctx, user.ID); err != nil {
		return fmt.Errorf("default organization: %w", err)
	}
	fmt.Fprintf(stdout, "\nFirst administrator created.\n  URL:      %s\n  Email:    %s\n", cfg.HTTP.PublicURL, email)
	if generated != "" {
		fmt.Fprintf(stdout, "  Password: %s\n  (shown once; only its hash is stored)\n\n", generated)
	} else {
		fmt.Fprintf(stdout, "  Password: the one in NXMESH_ADMIN_PASSWORD\n\n")
	}
	return nil
}

func migrate(ctx context.Context, cfgPath, dir string, stdout, stderr io.Writer) error {
	cfg, logger, err := load(cfgPath, stderr)
	if err != nil {
		return err
	}
	a, m, err := app.OpenForMigrations(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close(context.Background())
	switch dir {
	case "up":
		return m.Up(ctx)
	case "down":
		return m.Down(ctx)
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			state := "pending"
			if s.Applied {
				state = "applied " + s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(stdout, "%05d  %-45s %s\n", s.Version, s.File, state)
		}
		return nil
	}
	return fmt.Errorf("unknown migrate direction %q (up, down, status)", dir)
}

func createUser(ctx context.Context, cfgPath, email, password string, super bool, stdout, stderr io.Writer) error {
	cfg, logger, err := load(cfgPath, stderr)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close(context.Background())
	mods, err := wire.New(a.Deps)
	if err != nil {
		return err
	}
	u, err := mods.Auth.Service().CreateUser(ctx, auth.CreateUserParams{Email: email, Password: password, Superadmin: super})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created user %s (%s)\n", u.Email, u.ID)
	return nil
}
