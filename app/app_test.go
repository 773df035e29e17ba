package app_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
)

func TestMain(m *testing.M) { apptest.Main(m) }

// A failed start returns its cause and no App, and releases what it acquired.
func TestStartupFailureReturnsTheCause(t *testing.T) {
	t.Parallel()
	cfg := app.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = "postgres://nobody@127.0.0.1:1/x?connect_timeout=5"
	cfg.Auth.JWTSecret = "test-jwt-secret-test-jwt-secret-0123456789"
	cfg.Auth.EncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	ctx := context.Background()

	for _, c := range []struct {
		name string
		open func() (*app.App, error)
	}{
		{"New fails", func() (*app.App, error) { return app.New(ctx, cfg, nil) }},
		{"OpenForMigrations fails", func() (*app.App, error) {
			a, _, err := app.OpenForMigrations(ctx, cfg, nil)
			return a, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, err := c.open()
			if err == nil || !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("error %v, want the connection's", err)
			}
			if a != nil {
				t.Fatalf("got an App with the error")
			}
			a.Close(ctx) // a nil App closes as nothing
		})
	}
}
