package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestErrors_DatabaseUnavailableIs503(t *testing.T) {
	t.Parallel()
	// A real failed connection: nothing listens on the port just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, connectErr := pgx.Connect(ctx, "postgres://nobody@"+addr+"/none?sslmode=disable&connect_timeout=2")
	if connectErr == nil {
		t.Fatal("connected to a closed port")
	}
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"connection refused", fmt.Errorf("list agents: %w", connectErr), http.StatusServiceUnavailable},
		{"admin shutdown", fmt.Errorf("read: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), http.StatusServiceUnavailable},
		{"starting up", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, http.StatusServiceUnavailable},
		{"connection failure", &pgconn.PgError{Code: "08006"}, http.StatusServiceUnavailable},
		{"a query's own error", &pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, http.StatusInternalServerError},
		{"anything else", errors.New("boom"), http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pe := classify(tc.err)
			if pe.Status != tc.status {
				t.Fatalf("status %d (%s), want %d", pe.Status, pe.Code, tc.status)
			}
			if tc.status == http.StatusServiceUnavailable && (pe.RetryAfter == 0 || pe.Code != CodeServiceUnavailable) {
				t.Fatalf("503 without Retry-After or with code %s", pe.Code)
			}
		})
	}
}
