// Package embedpg runs the master's embedded PostgreSQL: a private cluster
// under the data directory, started when database.url is empty (and by the
// test helpers in app/apptest for throwaway clusters). It listens only on a
// private unix socket; see Server for the layout, running as root, and how it
// is stopped.
package embedpg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrBinariesNotFound is returned (wrapped) when no PostgreSQL server binaries can
// be found on this machine.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries (initdb, postgres) not found in PATH or /usr/lib/postgresql/*/bin: " +
	"install the PostgreSQL server package (`apt-get install postgresql`) or set `database.url` / NXMESH_DATABASE_URL")

const (
	embeddedSuperuser = "nxmesh"
	embeddedDatabase  = "nxmesh"
	embeddedPort      = 5432
	// A unix socket path must fit sun_path (108 bytes with the terminating NUL).
	maxSocketPathLen = 107
	socketFileName   = ".s.PGSQL.5432"
	embeddedReadyIn  = 30 * time.Second
	postgresLibRoot  = "/usr/lib/postgresql"
	// relocatedRoot holds, as <hash of the data directory>/, the clusters of data
	// directories the unprivileged user cannot reach (see Server).
	relocatedRoot = "/var/lib/nxmesh"
	// locationFileName, in a data directory, names its cluster kept under
	// relocatedRoot.
	locationFileName = "postgres.location"
)

// Options tunes an embedded cluster.
type Options struct {
	// Fast trades durability for speed (fsync, synchronous_commit and
	// full_page_writes off, initdb --no-sync). Only for throwaway clusters such as
	// test servers: a crash of the machine can corrupt such a cluster.
	Fast bool
	// MaxConnections overrides PostgreSQL's max_connections when positive.
	MaxConnections int
}

// Server is a private PostgreSQL cluster under a data directory.
//
// Layout, for a data directory D:
//
//	D/postgres          the cluster (PGDATA), created once by initdb
//	D/pgsocket          the unix socket directory (mode 0700), unless that path is
//	                    too long for a unix socket, in which case a directory named
//	                    after a hash of D under os.TempDir() is used instead
//	D/postgres.log      output of initdb and of the server
//
// The server listens on no TCP address (empty listen_addresses), only on the unix
// socket, and trusts local connections; the socket directory is private (0700) to
// the user the server runs as, so only that user and root can connect.
//
// PostgreSQL refuses to run as root. When the current process is root, initdb and
// the server run as the user "postgres" if it exists, else as "nobody"; the cluster
// and socket directories are owned by that user, who must be able to reach them.
// When every directory above D is searchable by that user, the layout stays the
// one above, and D itself is made searchable (search only, no listing) for that
// user: when D belongs to root's group its group becomes the user's primary group
// with g+x, otherwise o+x is added. Files in D keep their own modes, so secrets
// stored there (0600) stay private. Nothing above D is ever changed: when a
// parent such as /root (0700) is in the way, the cluster and socket directories
// are kept where that user can reach them instead:
//
//	/var/lib/nxmesh/H           owned by that user, mode 0700; H is the first 16 hex
//	                            digits of the SHA-256 of D's absolute path with
//	                            symlinks resolved
//	/var/lib/nxmesh/H/postgres  the cluster
//	/var/lib/nxmesh/H/pgsocket  the unix socket directory (mode 0700)
//	D/postgres.location         the path of that cluster, written when it is made
//
// and the start logs a note saying where. The log and the lock stay in D. Once
// D/postgres.location exists it decides: the same D finds its cluster there on
// every start, even once D has become reachable. A cluster under /var/lib/nxmesh
// that D does not record (D was removed and made again, with new secrets), a
// location file naming another cluster (D was moved or copied), and a cluster
// already in D/postgres that the user cannot reach make the start fail with an
// error saying what to move or remove.
//
// The server runs in its own process group, so a Ctrl-C in the terminal does not
// reach it before Stop shuts it down cleanly, and it gets SIGINT (fast shutdown)
// from the kernel if the process that started it dies.
type Server struct {
	dataDir    string
	clusterDir string
	socketDir  string
	// tempSocketDir: socketDir is the fallback under os.TempDir(), removed by Stop.
	tempSocketDir bool
	binDir        string
	logger        *slog.Logger
	lock          *os.File // flock on dataDir/postgres.lock

	pid  int
	done chan struct{} // closed when the server process has exited
	// waitErr is the server's exit status; written before done is closed.
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// Start initialises (initdb, once) and starts a PostgreSQL cluster in
// filepath.Join(dataDir, "postgres"), listening only on a unix socket in dataDir
// (empty listen_addresses); as root, when the server's user cannot reach dataDir,
// both live under /var/lib/nxmesh/<hash of dataDir> instead. It returns once the server accepts connections. URL() gives
// a pgx connection URL (host=<socket dir>, user, database "nxmesh" created if
// missing). See Server for the layout and for running as root.
func Start(ctx context.Context, dataDir string, logger *slog.Logger) (*Server, error) {
	return StartWith(ctx, dataDir, logger, Options{})
}

// StartWith is Start with options.
func StartWith(ctx context.Context, dataDir string, logger *slog.Logger, opts Options) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e, err := startEmbedded(ctx, dataDir, logger, opts)
	if err != nil {
		return nil, fmt.Errorf("embedded postgres: %w", err)
	}
	return e, nil
}

func startEmbedded(ctx context.Context, dataDir string, logger *slog.Logger, opts Options) (*Server, error) {
	if dataDir == "" {
		return nil, errors.New("empty data directory")
	}
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}

	// One server per data directory: the lock is held until Stop, and released by
	// the kernel if this process dies.
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			unlockDataDir(lock)
		}
	}()

	clusterDir := filepath.Join(dataDir, "postgres")
	socketDir, tempSocketDir := socketDirFor(dataDir)
	location, err := readLocation(dataDir)
	if err != nil {
		return nil, err
	}
	var runAs *osUser
	if os.Geteuid() == 0 {
		if runAs, err = unprivilegedUser(); err != nil {
			return nil, err
		}
		blocked, err := unsearchableAbove(dataDir, runAs)
		if err != nil {
			return nil, err
		}
		if blocked == "" && location == "" {
			if err := makeSearchable(dataDir, runAs); err != nil {
				return nil, err
			}
		} else {
			home, err := relocatedHome(dataDir, location, blocked, runAs)
			if err != nil {
				return nil, err
			}
			clusterDir = filepath.Join(home, "postgres")
			socketDir, tempSocketDir = filepath.Join(home, "pgsocket"), false
			reason := "recorded in " + filepath.Join(dataDir, locationFileName)
			if blocked != "" {
				reason = blocked + " is not searchable by user " + runAs.name + ", which PostgreSQL runs as instead of root"
			}
			logger.Info("embedded PostgreSQL cluster kept outside data_dir", "dir", clusterDir, "data_dir", dataDir, "reason", reason)
		}
	} else if location != "" {
		return nil, fmt.Errorf("the cluster of %s is %s (as %s says), made for nxmesh running as root; run nxmesh as root, or set `database.url` / NXMESH_DATABASE_URL",
			dataDir, location, filepath.Join(dataDir, locationFileName))
	}

	binDir, err := postgresBinariesFor(clusterDir)
	if err != nil {
		return nil, err
	}

	if len(filepath.Join(socketDir, socketFileName)) > maxSocketPathLen {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes; set TMPDIR to a shorter directory", filepath.Join(socketDir, socketFileName), maxSocketPathLen)
	}
	if err := preparePrivateDir(socketDir, runAs); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}

	logPath := filepath.Join(dataDir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close()
	logStart, _ := logFile.Seek(0, io.SeekEnd)

	e := &Server{
		dataDir:       dataDir,
		clusterDir:    clusterDir,
		socketDir:     socketDir,
		tempSocketDir: tempSocketDir,
		binDir:        binDir,
		logger:        logger,
		lock:          lock,
		done:          make(chan struct{}),
	}

	initialised, err := clusterInitialised(clusterDir)
	if err != nil {
		return nil, err
	}
	if !initialised {
		logger.Info("initialising embedded PostgreSQL cluster", "dir", clusterDir, "bin", binDir)
		if err := e.initdb(ctx, runAs, opts, logFile); err != nil {
			return nil, fmt.Errorf("initdb: %w%s", err, logTail(logPath, logStart))
		}
	} else if runAs != nil {
		// The cluster may come from a run as another user (e.g. "nobody" before the
		// postgres package created the "postgres" user): postgres insists on owning it.
		if err := chownTreeIfNeeded(clusterDir, runAs); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(clusterDir, 0o700); err != nil {
		return nil, err
	}
	if err := clearStaleLocks(clusterDir, socketDir); err != nil {
		return nil, err
	}

	args := []string{
		"-D", clusterDir,
		"-c", "listen_addresses=",
		"-c", "port=" + strconv.Itoa(embeddedPort),
		"-c", "unix_socket_directories=" + quoteSocketDir(socketDir),
		"-c", "unix_socket_permissions=0700",
		"-c", "cluster_name=nxmesh",
	}
	if opts.Fast {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	if opts.MaxConnections > 0 {
		args = append(args, "-c", "max_connections="+strconv.Itoa(opts.MaxConnections))
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childAttr(runAs, syscall.SIGINT)

	logger.Info("starting embedded PostgreSQL", "dir", clusterDir, "socket_dir", socketDir, "log", logPath)
	if err := e.start(cmd); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := e.waitReady(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = e.Stop(stopCtx)
		started = true // Stop released the lock
		return nil, fmt.Errorf("%w%s", err, logTail(logPath, logStart))
	}
	logger.Info("embedded PostgreSQL ready", "pid", e.pid)
	started = true
	return e, nil
}

// URL is the pgx connection URL of the "nxmesh" database.
func (e *Server) URL() string { return e.urlFor(embeddedDatabase) }

func (e *Server) urlFor(database string) string {
	q := url.Values{}
	q.Set("host", e.socketDir)
	q.Set("port", strconv.Itoa(embeddedPort))
	q.Set("sslmode", "disable")
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(embeddedSuperuser),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Stop shuts the server down (fast shutdown: SIGINT, which rolls back open
// transactions and disconnects clients) and waits for it to exit. When ctx ends
// first, the server is stopped immediately (SIGQUIT, then SIGKILL) and ctx's error
// is returned. Calling Stop again returns the first result.
func (e *Server) Stop(ctx context.Context) error {
	e.stopOnce.Do(func() {
		e.stopErr = e.stop(ctx)
		unlockDataDir(e.lock)
	})
	return e.stopErr
}

func (e *Server) stop(ctx context.Context) error {
	select {
	case <-e.done:
		e.removeTempSocketDir()
		return e.exitErr()
	default:
	}
	e.logger.Info("stopping embedded PostgreSQL", "pid", e.pid)
	defer e.removeTempSocketDir()
	_ = syscall.Kill(e.pid, syscall.SIGINT)
	select {
	case <-e.done:
		return e.exitErr()
	case <-ctx.Done():
	}
	_ = syscall.Kill(e.pid, syscall.SIGQUIT)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-e.pid, syscall.SIGKILL)
		<-e.done
	}
	return fmt.Errorf("stop embedded postgres: %w", ctx.Err())
}

// removeTempSocketDir removes a socket directory outside the data directory once
// the server is gone (it is then empty: the server removes its socket files).
func (e *Server) removeTempSocketDir() {
	if e.tempSocketDir {
		_ = os.Remove(e.socketDir)
	}
}

func (e *Server) exitErr() error {
	if e.waitErr != nil {
		return fmt.Errorf("embedded postgres exited: %w", e.waitErr)
	}
	return nil
}

// start runs cmd from a goroutine locked to its OS thread for the whole life of the
// server: the kernel sends the parent-death signal when the thread that forked the
// child exits, not only when the process does.
func (e *Server) start(cmd *exec.Cmd) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		e.pid = cmd.Process.Pid
		started <- nil
		err := cmd.Wait()
		e.waitErr = err
		close(e.done)
	}()
	return <-started
}

// waitReady polls with real connections until the server accepts one, then creates
// the nxmesh database if it is missing.
func (e *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, embeddedReadyIn)
	defer cancel()
	var lastErr error
	for {
		attemptCtx, attemptCancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, e.urlFor("postgres"))
		if err == nil {
			err = createDatabaseIfMissing(attemptCtx, conn, embeddedDatabase)
			_ = conn.Close(context.Background())
			attemptCancel()
			return err
		}
		attemptCancel()
		lastErr = err
		select {
		case <-e.done:
			if e.waitErr != nil {
				return fmt.Errorf("postgres exited during startup: %w", e.waitErr)
			}
			return errors.New("postgres exited during startup")
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func createDatabaseIfMissing(ctx context.Context, conn *pgx.Conn, name string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// initdb creates the cluster in a temporary sibling directory and renames it into
// place, so an interrupted initdb never leaves a half-made cluster behind.
func (e *Server) initdb(ctx context.Context, runAs *osUser, opts Options, out *os.File) error {
	tmp := e.clusterDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := preparePrivateDir(tmp, runAs); err != nil {
		return err
	}
	args := []string{
		"-D", tmp,
		"-U", embeddedSuperuser,
		"--auth-local=trust",
		"--auth-host=reject",
		"--encoding=UTF8",
		"--locale=C",
	}
	if opts.Fast {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, "initdb"), args...)
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = childAttr(runAs, syscall.SIGKILL)
	// Same reason as in start: keep the forking thread alive while initdb runs.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- cmd.Run()
	}()
	if err := <-errc; err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	// An empty directory left where the cluster goes (e.g. made by hand) is replaced.
	if err := os.Remove(e.clusterDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", e.clusterDir, err)
	}
	return os.Rename(tmp, e.clusterDir)
}

func lockDataDir(dataDir string) (*os.File, error) {
	path := filepath.Join(dataDir, "postgres.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("the data directory %s is already in use: another process holds %s and runs its PostgreSQL "+
				"(another nxmesh with this data_dir?); stop it or choose another data_dir", dataDir, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// unlockDataDir releases the data directory's lock and closes its file. The lock
// is released explicitly first: a child process forked by another goroutine
// holds a copy of every descriptor until it calls exec, and closing ours alone
// would leave the lock held by that copy for a moment.
func unlockDataDir(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	_ = f.Close()
}

// clusterInitialised reports whether dir holds a cluster; it fails when dir holds
// something else, rather than touching it.
func clusterInitialised(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return true, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("%s is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away", dir)
	}
	return false, nil
}

// FindBinaries returns the directory holding the PostgreSQL server
// binaries: the one of initdb on PATH when postgres sits beside it, else the newest
// /usr/lib/postgresql/<version>/bin (Debian's layout). The error wraps
// ErrBinariesNotFound.
func FindBinaries() (binDir string, err error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(initdb)
		if isExecutable(filepath.Join(dir, "postgres")) {
			if abs, err := filepath.Abs(dir); err == nil {
				return abs, nil
			}
			return dir, nil
		}
	}
	versions, _ := os.ReadDir(postgresLibRoot)
	var candidates []string
	for _, v := range versions {
		dir := filepath.Join(postgresLibRoot, v.Name(), "bin")
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			candidates = append(candidates, v.Name())
		}
	}
	if len(candidates) == 0 {
		return "", ErrBinariesNotFound
	}
	sort.Slice(candidates, func(i, j int) bool { return versionLess(candidates[i], candidates[j]) })
	return filepath.Join(postgresLibRoot, candidates[len(candidates)-1], "bin"), nil
}

// postgresBinariesFor prefers the binaries of the major version an existing cluster
// was made with, when that version is installed in Debian's layout: a newer server
// cannot open an older cluster.
func postgresBinariesFor(clusterDir string) (string, error) {
	if raw, err := os.ReadFile(filepath.Join(clusterDir, "PG_VERSION")); err == nil {
		version := strings.TrimSpace(string(raw))
		dir := filepath.Join(postgresLibRoot, version, "bin")
		if version != "" && !strings.ContainsAny(version, `/\`) &&
			isExecutable(filepath.Join(dir, "postgres")) && isExecutable(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	return FindBinaries()
}

func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			if as[i] != bs[i] {
				return as[i] < bs[i]
			}
			continue
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// socketDirFor is dataDir/pgsocket, or a directory named after a hash of dataDir
// under the temporary directory when the socket path would be too long.
func socketDirFor(dataDir string) (dir string, temp bool) {
	dir = filepath.Join(dataDir, "pgsocket")
	if len(filepath.Join(dir, socketFileName)) <= maxSocketPathLen {
		return dir, false
	}
	sum := sha256.Sum256([]byte(dataDir))
	name := "nxmesh-pg-" + hex.EncodeToString(sum[:8])
	dir = filepath.Join(os.TempDir(), name)
	if len(filepath.Join(dir, socketFileName)) > maxSocketPathLen {
		dir = filepath.Join("/tmp", name)
	}
	return dir, true
}

// quoteSocketDir quotes a directory for unix_socket_directories, a comma-separated
// list whose elements may be double-quoted (with "" standing for ").
func quoteSocketDir(dir string) string {
	return `"` + strings.ReplaceAll(dir, `"`, `""`) + `"`
}

// preparePrivateDir makes sure dir is a real directory (not a symlink), mode 0700,
// owned by runAs (or by the current user when runAs is nil). It may live in a
// shared directory such as /tmp, so it refuses a directory owned by someone else
// and changes ownership and mode through a descriptor, never through the path.
func preparePrivateDir(dir string, runAs *osUser) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("stat %s: unsupported platform", dir)
	}
	want := uint32(os.Geteuid())
	if runAs != nil {
		want = runAs.uid
	}
	if st.Uid != want && st.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("%s belongs to uid %d, not to uid %d; remove it", dir, st.Uid, want)
	}
	if runAs != nil && (st.Uid != runAs.uid || st.Gid != runAs.gid) {
		if err := f.Chown(int(runAs.uid), int(runAs.gid)); err != nil {
			return err
		}
	}
	if fi.Mode().Perm() != 0o700 {
		return f.Chmod(0o700)
	}
	return nil
}

// clearStaleLocks removes the lock files of a server that is gone. PostgreSQL itself
// ignores a postmaster.pid whose process is dead, but not one whose PID has been
// reused by another live process of the same user (common in containers, where
// PIDs restart from 1).
func clearStaleLocks(clusterDir, socketDir string) error {
	pidFile := filepath.Join(clusterDir, "postmaster.pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err == nil {
		first, _, _ := strings.Cut(string(raw), "\n")
		pid, _ := strconv.Atoi(strings.TrimSpace(first))
		if pid < 0 { // a single-user backend writes its PID negated
			pid = -pid
		}
		if pid > 0 && isServerOf(pid, clusterDir) {
			return fmt.Errorf("a PostgreSQL server (pid %d) is already running on %s; "+
				"another nxmesh may be using this data_dir, or stop that process", pid, clusterDir)
		}
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// Backends of a killed server exit on their own shortly after it; until they
		// have, PostgreSQL refuses to start ("pre-existing shared memory block is
		// still in use").
		deadline := time.Now().Add(10 * time.Second)
		for orphansOf(clusterDir) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The socket directory belongs to this cluster alone, and no server runs on it.
	for _, name := range []string{socketFileName, socketFileName + ".lock"} {
		if err := os.Remove(filepath.Join(socketDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// isServerOf reports whether pid is a live postgres process working in clusterDir.
// When its working directory cannot be read, any live postgres process counts.
func isServerOf(pid int, clusterDir string) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false
		}
		// No /proc: fall back to whether the process exists at all.
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	if strings.TrimSpace(string(comm)) != "postgres" {
		return false
	}
	cwd, err := os.Stat(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true
	}
	cluster, err := os.Stat(clusterDir)
	return err != nil || os.SameFile(cwd, cluster)
}

// orphansOf reports whether any postgres process still works in clusterDir.
func orphansOf(clusterDir string) bool {
	cluster, err := os.Stat(clusterDir)
	if err != nil {
		return false
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if cwd, err := os.Stat(filepath.Join("/proc", p.Name(), "cwd")); err == nil && os.SameFile(cwd, cluster) {
			return true
		}
	}
	return false
}

// logTail returns the last lines written to the log since offset, for errors.
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxTail = 4096
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > maxTail {
		offset = fi.Size() - maxTail
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	raw, _ := io.ReadAll(io.LimitReader(f, maxTail))
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	lines := strings.Split(string(raw), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return fmt.Sprintf(" (see %s):\n%s", path, strings.Join(lines, "\n"))
}

// serverEnv is the environment of initdb and postgres: the current one without
// libpq variables, and with a neutral locale for messages.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LANGUAGE=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// childAttr puts a server process in its own process group, sends it deathSig when
// this process dies, and drops root privileges to runAs when set.
func childAttr(runAs *osUser, deathSig syscall.Signal) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if runAs != nil {
		attr.Credential = &syscall.Credential{Uid: runAs.uid, Gid: runAs.gid, Groups: runAs.groups}
	}
	return attr
}

// osUser is the unprivileged account the server runs as when nxmesh runs as root.
type osUser struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

func (u *osUser) inGroup(gid uint32) bool {
	if gid == u.gid {
		return true
	}
	for _, g := range u.groups {
		if g == gid {
			return true
		}
	}
	return false
}

func unprivilegedUser() (*osUser, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		ou := &osUser{name: name, uid: uint32(uid), gid: uint32(gid)}
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil && g != 0 {
					ou.groups = append(ou.groups, uint32(g))
				}
			}
		}
		return ou, nil
	}
	return nil, errors.New("running as root, and neither user postgres nor nobody exists to run PostgreSQL as; " +
		"run nxmesh as an unprivileged user or set `database.url` / NXMESH_DATABASE_URL")
}

// unsearchableAbove returns the first directory above dataDir (or above the
// directory it resolves to) that u may not search, or "" when u can reach dataDir.
func unsearchableAbove(dataDir string, u *osUser) (string, error) {
	paths := []string{dataDir}
	if resolved, err := filepath.EvalSymlinks(dataDir); err == nil && resolved != dataDir {
		paths = append(paths, resolved)
	}
	for _, p := range paths {
		for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
			ok, err := searchable(dir, u)
			if err != nil {
				return "", err
			}
			if !ok {
				return dir, nil
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return "", nil
}

// makeSearchable makes dataDir itself searchable by u (see Server).
func makeSearchable(dataDir string, u *osUser) error {
	ok, err := searchable(dataDir, u)
	if err != nil || ok {
		return err
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := fi.Mode().Perm()
	switch {
	case st.Uid == u.uid:
		mode |= 0o100
	case u.inGroup(st.Gid):
		mode |= 0o010
	case st.Gid == 0:
		if err := os.Chown(dataDir, -1, int(u.gid)); err != nil {
			return fmt.Errorf("let user %s reach %s: %w", u.name, dataDir, err)
		}
		mode |= 0o010
	default:
		mode |= 0o001
	}
	if err := os.Chmod(dataDir, mode); err != nil {
		return fmt.Errorf("let user %s reach %s: %w", u.name, dataDir, err)
	}
	return nil
}

// readLocation returns the cluster directory recorded in dataDir's location file,
// or "" when there is none.
func readLocation(dataDir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, locationFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(raw)), nil
}

// relocatedHome prepares relocatedRoot/<hash of dataDir> (mode 0700, owned by u),
// the home of the cluster and socket directory of a dataDir whose location file
// says location, or that u cannot reach because of blocked, and returns it. It
// records the cluster in dataDir's location file. It refuses when dataDir/postgres
// holds a cluster (which u cannot run there), when location is not this home, and
// when the home holds a cluster that dataDir does not know of (see
// Server).
func relocatedHome(dataDir, location, blocked string, u *osUser) (string, error) {
	resolved, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(resolved))
	home := filepath.Join(relocatedRoot, hex.EncodeToString(sum[:8]))
	clusterDir := filepath.Join(home, "postgres")
	marker := filepath.Join(dataDir, locationFileName)

	if location == "" {
		local := filepath.Join(dataDir, "postgres")
		initialised, err := clusterInitialised(local)
		if err != nil {
			return "", err
		}
		if initialised {
			return "", fmt.Errorf("PostgreSQL cannot run as root, and user %s (which it runs as instead) cannot reach the cluster %s because %s is not searchable by it; "+
				"make %s searchable by %s, run nxmesh as an unprivileged user, or set `database.url` / NXMESH_DATABASE_URL",
				u.name, local, blocked, blocked, u.name)
		}
		if initialised, err = clusterInitialised(clusterDir); err != nil {
			return "", err
		}
		if initialised {
			return "", fmt.Errorf("%s holds the cluster of an earlier data_dir at %s, but this data_dir has no %s, so it was made afresh (with new secrets); "+
				"remove %s to start with a new, empty database, or write %q into %s to keep the old one",
				clusterDir, resolved, locationFileName, home, clusterDir, marker)
		}
	} else if location != clusterDir {
		return "", fmt.Errorf("%s says this data_dir's cluster is %s, but for %s it is %s (was the data_dir moved or copied?); "+
			"move %s to %s, or remove %s to start with a new, empty database", marker, location, resolved, clusterDir, filepath.Dir(location), home, marker)
	}

	if err := os.MkdirAll(relocatedRoot, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", relocatedRoot, err)
	}
	if blocked, err := unsearchableAbove(home, u); err != nil || blocked != "" {
		if err != nil {
			return "", err
		}
		return "", fmt.Errorf("user %s (which PostgreSQL runs as instead of root) can reach neither the data directory %s nor %s, because %s is not searchable by it; "+
			"make it searchable, run nxmesh as an unprivileged user, or set `database.url` / NXMESH_DATABASE_URL", u.name, dataDir, home, blocked)
	}
	// Only root may create entries in relocatedRoot, so the home can be trusted: one
	// left by another user (an earlier "nobody") is given to u.
	if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create %s: %w", home, err)
	}
	if err := chownTreeIfNeeded(home, u); err != nil {
		return "", err
	}
	if err := preparePrivateDir(home, u); err != nil {
		return "", err
	}
	if location == "" {
		if err := os.WriteFile(marker, []byte(clusterDir+"\n"), 0o644); err != nil {
			return "", fmt.Errorf("record the cluster's location: %w", err)
		}
	}
	return home, nil
}

// searchable reports whether u may search (traverse) dir, by its mode bits. A
// directory with a POSIX ACL counts as searchable: the server then reports any
// problem itself.
func searchable(dir string, u *osUser) (bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true, nil
	}
	mode := fi.Mode().Perm()
	var allowed bool
	switch {
	case st.Uid == u.uid:
		allowed = mode&0o100 != 0
	case u.inGroup(st.Gid):
		allowed = mode&0o010 != 0
	default:
		allowed = mode&0o001 != 0
	}
	if !allowed {
		if _, err := syscall.Getxattr(dir, "system.posix_acl_access", nil); err == nil {
			return true, nil
		}
	}
	return allowed, nil
}

// chownTreeIfNeeded gives the cluster to u when it belongs to someone else.
func chownTreeIfNeeded(clusterDir string, u *osUser) error {
	fi, err := os.Stat(clusterDir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == u.uid && st.Gid == u.gid {
		return nil
	}
	return filepath.WalkDir(clusterDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(u.uid), int(u.gid))
	})
}
