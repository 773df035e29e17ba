package nginx

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Files the agent keeps beside the rendered configuration in a version
// directory.
const (
	metaFile   = "nxmesh-version.json"
	updateFile = "nxmesh-update.binpb"
)

// Version describes one configuration version on disk.
type Version struct {
	// Name is the directory name under versions/: "<version>-<checksum8>".
	Name     string `json:"name"`
	ConfigID string `json:"config_id"`
	Version  int64  `json:"version"`
	// Checksum is ConfigUpdate.checksum, or the agent's own SHA-256 of the
	// update when the master sent none.
	Checksum string `json:"checksum"`
	// StatusPort is the loopback stub_status port rendered into it.
	StatusPort uint32    `json:"status_port"`
	CreatedAt  time.Time `json:"created_at"`
	// AccessLog is the access log rendered into it (Options.AccessLog).
	AccessLog string `json:"access_log,omitempty"`
	// ACMEChallengeDir is the ACME challenge directory rendered into it.
	ACMEChallengeDir string `json:"acme_challenge_dir,omitempty"`
}

// checksumOf returns the checksum that identifies u.
func checksumOf(u *agentv1.ConfigUpdate) string {
	if s := u.GetChecksum(); s != "" {
		return s
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
	if err != nil {
		// Marshal only fails on invalid UTF-8 in strings, which Render
		// rejects later anyway; the name just has to be stable.
		data = []byte(u.String())
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// versionName is the directory name of a version: the version number and
// the first 8 safe characters of the checksum.
// accessLogSuffix distinguishes the directory of a version rendered with
// an access log from the same update rendered without one (or with
// another), so that turning the access log on re-renders the live update
// into a new directory.
func accessLogSuffix(accessLog string) string {
	if accessLog == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(accessLog))
	return "-l" + hex.EncodeToString(sum[:4])
}

func versionName(version int64, checksum string) string {
	var short strings.Builder
	for _, c := range strings.ToLower(checksum) {
		if short.Len() == 8 {
			break
		}
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			short.WriteRune(c)
		}
	}
	if short.Len() == 0 {
		short.WriteString("nosum")
	}
	return strconv.FormatInt(version, 10) + "-" + short.String()
}

// writeVersion installs rendered files, the version's metadata and the
// update itself into dir, which must not exist yet.
func writeVersion(dir string, files render.Files, meta Version, u *agentv1.ConfigUpdate) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create version directory: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return fmt.Errorf("write %s: path escapes the version directory", name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create directory for %s: %w", name, err)
		}
		if err := writeFile(p, files[name], render.FileMode(name)); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode version metadata: %w", err)
	}
	if err := writeFile(filepath.Join(dir, metaFile), append(data, '\n'), 0o644); err != nil {
		return err
	}
	// The update holds private keys: readable by root only, like the keys.
	raw, err := proto.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode config update: %w", err)
	}
	return writeFile(filepath.Join(dir, updateFile), raw, 0o600)
}

// writeFile writes data to path with exactly mode (the umask does not
// apply), syncing it so that a crash after the swap never leaves a
// truncated file live.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic replaces path with data through a rename, so readers see
// the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp-" + randomSuffix()
	if err := writeFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// readVersion loads the metadata of a version directory.
func readVersion(dir string) (*Version, error) {
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, fmt.Errorf("read version metadata: %w", err)
	}
	var v Version
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("decode version metadata %s: %w", dir, err)
	}
	v.Name = filepath.Base(dir)
	return &v, nil
}

// swapLink points the symlink link at target (relative to link's
// directory) with one rename(2), so nginx sees either the old or the new
// directory.
func swapLink(link, target string) error {
	tmp := link + ".tmp-" + randomSuffix()
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("create symlink %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("swap %s to %s: %w", link, target, err)
	}
	return nil
}

// linkedVersion returns the version the symlink link points to, nil when
// the link does not exist or points nowhere usable.
func linkedVersion(link string) *Version {
	target, err := os.Readlink(link)
	if err != nil {
		return nil
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(link), target)
	}
	v, err := readVersion(target)
	if err != nil {
		return nil
	}
	return v
}

// pruneVersions deletes all but the keep newest version directories under
// dir, never the one named live, and leftovers of interrupted swaps.
func pruneVersions(dir, live string, keep int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list versions: %w", err)
	}
	type entry struct {
		name    string
		created time.Time
	}
	var all []entry
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		created := time.Time{}
		if v, err := readVersion(filepath.Join(dir, e.Name())); err == nil {
			created = v.CreatedAt
		}
		all = append(all, entry{e.Name(), created})
	}
	slices.SortFunc(all, func(a, b entry) int { return b.created.Compare(a.created) })
	var errs []error
	kept := 0
	for _, e := range all {
		if e.name == live || kept < keep-1 {
			if e.name != live {
				kept++
			}
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.name)); err != nil {
			errs = append(errs, fmt.Errorf("remove old version %s: %w", e.name, err))
		}
	}
	return errors.Join(errs...)
}

// randomSuffix returns 8 random hex characters for temporary names.
func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
