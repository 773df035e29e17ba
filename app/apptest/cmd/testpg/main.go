// Command testpg provides a throwaway PostgreSQL server to a test run.
//
//	testpg [-max-lifetime 80m] [--] command [arg...]
//
// starts an embedded cluster (durability off) in a new temporary directory, runs
// the command with NXMESH_TEST_DATABASE_URL set to the server's URL, then stops
// the server, deletes the directory and exits with the command's exit status.
// The command gets no standard input; SIGINT and SIGTERM are passed on to it.
// The server is stopped after the command ends in every case. `go tool task test`
// runs `go test` this way.
//
// Without a command, testpg prints NXMESH_TEST_DATABASE_URL=<url> on standard
// output and keeps the server until its standard input closes, it gets SIGINT or
// SIGTERM, or the maximum lifetime passes.
//
// Either way the server never outlives testpg: it gets a signal from the kernel
// when testpg dies, and testpg gives up after -max-lifetime (the command is then
// terminated).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/embedpg"
)

func main() {
	maxLifetime := flag.Duration("max-lifetime", 80*time.Minute, "stop everything after this long")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: testpg [-max-lifetime d] [--] [command [arg...]]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(flag.Args(), *maxLifetime))
}

func run(args []string, maxLifetime time.Duration) int {
	apptest.RemoveStaleServers()
	dir, err := os.MkdirTemp("", apptest.TempDirPrefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// Signals are handled from here on, so that the server is always stopped.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	pg, err := embedpg.StartWith(ctx, dir, nil, apptest.TestServerOptions)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		return 1
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		}
	}()

	deadline := time.NewTimer(maxLifetime)
	defer deadline.Stop()

	if len(args) == 0 {
		fmt.Printf("%s=%s\n", apptest.EnvDatabaseURL, pg.URL())
		stdinClosed := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
		select {
		case <-stdinClosed:
		case <-sigs:
		case <-deadline.C:
			fmt.Fprintf(os.Stderr, "testpg: maximum lifetime (%s) reached\n", maxLifetime)
		}
		return 0
	}

	select {
	case sig := <-sigs: // interrupted while the server was starting
		fmt.Fprintf(os.Stderr, "testpg: %v\n", sig)
		return 130
	default:
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), apptest.EnvDatabaseURL+"="+pg.URL())
	// The command goes when testpg does (its server goes too). The parent-death
	// signal comes when the forking thread exits, so that thread stays locked to
	// the goroutine waiting for the command.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		return 1
	}

	var waitErr error
	expired := false
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case <-deadline.C:
			expired = true
			fmt.Fprintf(os.Stderr, "testpg: maximum lifetime (%s) reached, terminating %s\n", maxLifetime, args[0])
			_ = cmd.Process.Signal(syscall.SIGTERM)
			go func() {
				time.Sleep(30 * time.Second)
				_ = cmd.Process.Kill()
			}()
		}
	}
	code := exitCode(waitErr)
	if expired && code == 0 {
		code = 1
	}
	return code
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		if code := exitErr.ExitCode(); code > 0 {
			return code
		}
	}
	fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
	return 1
}
