package nginx

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestEmergLines(t *testing.T) {
	t.Parallel()
	text := `2026/11/23 12:19:02 [notice] 26235#26235: signal 1 (SIGHUP) received from 26518, reconfiguring
2026/11/23 12:19:02 [emerg] 26235#26235: bind() to 127.0.0.1:18777 failed (98: Address already in use)
2026/11/23 12:19:02 [emerg] 26235#26235: bind() to 127.0.0.1:18777 failed (98: Address already in use)
2026/11/23 12:19:02 [warn] 26235#26235: conflicting server name "a" on 0.0.0.0:80, ignored
2026/11/23 12:19:02 [emerg] 26235#26235: still could not bind()
2026/11/23 12:19:03 [emerg] 26235#26235: half a line`
	got := emergLines(text)
	want := []string{"bind() to 127.0.0.1:18777 failed (98: Address already in use)", "still could not bind()"}
	if !slices.Equal(got, want) {
		t.Errorf("emergLines = %q, want %q", got, want)
	}
}

func TestEmergencies_ReadsFromOffset(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "error.log")
	old := "2026/01/01 00:00:00 [emerg] 1#1: old failure\n"
	if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	offset := logSize(p)
	if got := emergencies(p, offset); len(got) != 0 {
		t.Errorf("nothing new yet, got %q", got)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("2026/01/01 00:00:01 [emerg] 1#1: new failure\n")
	f.Close()
	if got := emergencies(p, offset); !slices.Equal(got, []string{"new failure"}) {
		t.Errorf("emergencies = %q", got)
	}
	// A rotated (shorter) log is read from its start.
	if err := os.WriteFile(p, []byte("2026/01/01 00:00:02 [emerg] 1#1: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := emergencies(p, offset+1000); !slices.Equal(got, []string{"x"}) {
		t.Errorf("after rotation = %q", got)
	}
}

func TestParseBuild(t *testing.T) {
	t.Parallel()
	out := `nginx version: nginx/1.22.1
built with OpenSSL 3.0.9 30 May 2023
TLS SNI support enabled
configure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf --error-log-path=stderr --pid-path=/run/nginx.pid --with-http_ssl_module --with-http_stub_status_module --with-http_v2_module --with-stream=dynamic --with-stream_ssl_module
`
	b := parseBuild(out)
	if b.Version != "1.22.1" || b.Prefix != "/usr/share/nginx" || b.PIDPath != "/run/nginx.pid" || b.ErrorLogPath != "stderr" || b.ConfPath != "/etc/nginx/nginx.conf" {
		t.Errorf("build = %+v", b)
	}
	if !slices.Equal(b.Features, []string{"http2", "ssl", "stream", "stub_status"}) || !b.StreamDynamic {
		t.Errorf("features = %v dynamic=%v", b.Features, b.StreamDynamic)
	}
}

func TestConfPaths(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "nginx.conf")
	conf := "user www-data;\npid run/nginx.pid;\nerror_log /var/log/nginx/error.log warn;\nevents {}\nhttp { error_log /elsewhere.log; include /etc/nginx/conf.d/*.conf; }\n"
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pid, errLog, err := confPaths(p, "/usr/share/nginx")
	if err != nil {
		t.Fatal(err)
	}
	if pid != "/usr/share/nginx/run/nginx.pid" || errLog != "/var/log/nginx/error.log" {
		t.Errorf("pid %q, error log %q", pid, errLog)
	}
}

func TestVersionName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		version  int64
		checksum string
		want     string
	}{
		{12, "ABCDEF0123456789", "12-abcdef01"},
		{1, "sha256:00ff", "1-sha25600"},
		{3, "../../etc", "3-etc"},
		{4, "", "4-nosum"},
	} {
		if got := versionName(c.version, c.checksum); got != c.want {
			t.Errorf("versionName(%d, %q) = %q, want %q", c.version, c.checksum, got, c.want)
		}
	}
}

func TestPruneVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now()
	// v0 is the oldest but live: it stays, with the 4 newest others.
	for i := range 8 {
		meta := Version{Version: int64(i), CreatedAt: base.Add(time.Duration(i) * time.Second)}
		name := versionName(int64(i), "aaaa")
		if err := writeVersion(filepath.Join(dir, name), nil, meta, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pruneVersions(dir, "0-aaaa", 5); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"0-aaaa", "4-aaaa", "5-aaaa", "6-aaaa", "7-aaaa"}
	if !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
}
