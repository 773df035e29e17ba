package vhosts

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

func TestUI_ParseUnifiedDiff(t *testing.T) {
	t.Parallel()
	text, err := unifiedDiff(
		map[string]string{
			"http.conf":   "a\nb\nc\nd\ne\nf\ng\nh\n",
			"stream.conf": "gone\n",
		},
		map[string]string{
			"http.conf":   "a\nb\nc\nD1\nD2\ne\nf\ng\nh\n",
			"htpasswd/x":  "user:hash\n",
			"stream.conf": "",
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	files := parseUnifiedDiff(text)
	if len(files) != 3 {
		t.Fatalf("%d files, want 3:\n%s", len(files), text)
	}
	t.Run("LaysOutReplacedLinesSideBySide", func(t *testing.T) {
		t.Parallel()
		f := files[1]
		if f.Name() != "http.conf" || f.Old != "http.conf" || f.New != "http.conf" {
			t.Fatalf("file = %q (%q → %q), want http.conf", f.Name(), f.Old, f.New)
		}
		want := []diffRow{
			{Hunk: "@@ -1,7 +1,8 @@"},
			{OldNo: 1, NewNo: 1, Old: "a", New: "a"},
			{OldNo: 2, NewNo: 2, Old: "b", New: "b"},
			{OldNo: 3, NewNo: 3, Old: "c", New: "c"},
			{OldNo: 4, NewNo: 4, Old: "d", New: "D1", Removed: true, Added: true},
			{NewNo: 5, New: "D2", Added: true},
			{OldNo: 5, NewNo: 6, Old: "e", New: "e"},
			{OldNo: 6, NewNo: 7, Old: "f", New: "f"},
			{OldNo: 7, NewNo: 8, Old: "g", New: "g"},
		}
		if !reflect.DeepEqual(f.Rows, want) {
			t.Errorf("rows =\n%+v\nwant\n%+v\ndiff:\n%s", f.Rows, want, text)
		}
	})
	t.Run("MarksAddedAndRemovedFiles", func(t *testing.T) {
		t.Parallel()
		if f := files[0]; f.Old != "" || f.New != "htpasswd/x" || len(f.Rows) != 2 || !f.Rows[1].Added || f.Rows[1].OldNo != 0 {
			t.Errorf("added file = %+v", f)
		}
		if f := files[2]; f.Name() != "stream.conf" || len(f.Rows) != 2 || !f.Rows[1].Removed || f.Rows[1].Old != "gone" {
			t.Errorf("emptied file = %+v", f)
		}
	})
	t.Run("EmptyDiffHasNoFiles", func(t *testing.T) {
		t.Parallel()
		if files := parseUnifiedDiff(""); len(files) != 0 {
			t.Errorf("files = %+v", files)
		}
	})
}

func TestUI_ReadVhostForm(t *testing.T) {
	t.Parallel()
	vals := map[string]string{
		"name": "web", "server_name": "www.example.test", "listen_port": "8080", "ssl_enabled": "true",
		"ssl_certificate_id": "c", "target_agents.type": "agents", "target_agents.agent_ids": "a, b\nc",
		// Location 3 comes first, the blank location 5 is dropped, location 7
		// keeps its headers in index order without the blank one.
		"locations[7].path": "/b/", "locations[7].match": "exact", "locations[7].target": "static",
		"locations[7].root": "/srv/www", "locations[7].proxy_pass": "http://ignored",
		"locations[7].custom_headers[9].name": "X-Two", "locations[7].custom_headers[9].value": "2",
		"locations[7].custom_headers[2].name": "X-One", "locations[7].custom_headers[2].value": "1",
		"locations[7].custom_headers[4].name": "", "locations[7].custom_headers[4].value": "",
		"locations[5].path": "", "locations[5].match": "prefix", "locations[5].target": "proxy",
		"locations[3].path": "/a/", "locations[3].match": "prefix", "locations[3].target": "upstream", "locations[3].upstream_id": "u",
	}
	f := readVhostForm(vals)
	if len(f.Locations) != 2 || f.Locations[0].Path != "/a/" || f.Locations[1].Path != "/b/" {
		t.Fatalf("locations = %+v", f.Locations)
	}
	if h := f.Locations[1].Headers; len(h) != 2 || h[0].Name != "X-One" || h[1].Name != "X-Two" {
		t.Errorf("headers = %+v", h)
	}
	var in VirtualHostInput
	if err := f.apply(&in); err != nil {
		t.Fatal(err)
	}
	if in.Locations[0].UpstreamID != "u" || in.Locations[1].Root != "/srv/www" || in.Locations[1].ProxyPass != "" {
		t.Errorf("locations = %+v: want only the chosen target of each", in.Locations)
	}
	if *in.ListenPort != 8080 || in.SSLCertificateID != "c" || !reflect.DeepEqual(in.TargetAgents.AgentIDs, []string{"a", "b", "c"}) {
		t.Errorf("input = %+v", in)
	}
	v := f.values()
	if v["locations[1].custom_headers[1].name"] != "X-Two" || v["locations[0].path"] != "/a/" {
		t.Errorf("values are not renumbered from 0: %v", v)
	}

	t.Run("ReportsNumbersThatAreNot", func(t *testing.T) {
		t.Parallel()
		f := vhostForm{ListenPort: "eighty", ReadTimeout: "1.5", Target: targetForm{Type: TargetAll}}
		var in VirtualHostInput
		err := f.apply(&in)
		fields := map[string]bool{}
		var ve *app.ValidationError
		if errors.As(err, &ve) {
			for _, fe := range ve.Fields {
				fields[fe.Field] = true
			}
		}
		if !fields["listen_port"] || !fields["proxy_read_timeout"] {
			t.Errorf("errors = %v, want listen_port and proxy_read_timeout", err)
		}
	})
}

func TestUI_VhostFormDefaultServer(t *testing.T) {
	t.Parallel()
	t.Run("CheckboxSetsTheField", func(t *testing.T) {
		t.Parallel()
		f := readVhostForm(map[string]string{"name": "web", "server_name": "www.example.test", "default_server": "true"})
		var in VirtualHostInput
		if err := f.apply(&in); err != nil {
			t.Fatal(err)
		}
		if !in.DefaultServer {
			t.Error("default_server checkbox not applied")
		}
		if vhostFormOf(VirtualHost{DefaultServer: true}).values()["default_server"] != "true" {
			t.Error("a default host's form has the checkbox unchecked")
		}
	})
	t.Run("FormShowsTheCheckboxAndItsError", func(t *testing.T) {
		t.Parallel()
		form := views.Form{Values: map[string]string{"default_server": "true"}, Errors: map[string]string{"default_server": "is already taken"}}
		var buf bytes.Buffer
		if err := vhostEditForm(vhostFormData{editor: editor{Form: form}}).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		html := buf.String()
		for _, want := range []string{`name="default_server"`, "Default server of its port", "is already taken"} {
			if !strings.Contains(html, want) {
				t.Errorf("form lacks %q", want)
			}
		}
	})
}

func TestUI_VhostFormHTTPPort(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		ssl, port string
		want      int
		errField  string
	}{
		{"WithHTTPS", "true", "80", 80, ""},
		{"EmptyIsNone", "true", "", 0, ""},
		{"IgnoredWithoutHTTPS", "", "80", 0, ""},
		{"NotANumber", "true", "eighty", 0, "http_port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := readVhostForm(map[string]string{"name": "web", "server_name": "www.example.test", "listen_port": "443",
				"ssl_enabled": c.ssl, "ssl_certificate_id": "c", "http_port": c.port})
			var in VirtualHostInput
			err := f.apply(&in)
			var ve *app.ValidationError
			switch {
			case c.errField == "" && err != nil:
				t.Fatalf("apply: %v", err)
			case c.errField != "" && (!errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != c.errField):
				t.Fatalf("apply error = %v, want one at %s", err, c.errField)
			}
			if in.HTTPPort != c.want {
				t.Errorf("http_port = %d, want %d", in.HTTPPort, c.want)
			}
		})
	}
	t.Run("FormShowsTheStoredPortAndItsError", func(t *testing.T) {
		t.Parallel()
		if v := vhostFormOf(VirtualHost{SSLEnabled: true, ListenPort: 443, HTTPPort: 8080}).values(); v["http_port"] != "8080" {
			t.Errorf("form http_port = %q, want 8080", v["http_port"])
		}
		if v := vhostFormOf(VirtualHost{SSLEnabled: true, ListenPort: 443}).values(); v["http_port"] != "" {
			t.Errorf("form http_port of a host without one = %q, want empty", v["http_port"])
		}
		form := views.Form{Values: map[string]string{"http_port": "443"}, Errors: map[string]string{"http_port": "must differ from listen_port"}}
		var buf bytes.Buffer
		if err := vhostEditForm(vhostFormData{editor: editor{Form: form}}).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		html := buf.String()
		for _, want := range []string{`name="http_port"`, `value="443"`, "HTTP port", "must differ from listen_port"} {
			if !strings.Contains(html, want) {
				t.Errorf("form lacks %q", want)
			}
		}
		buf.Reset()
		if err := vhostEditForm(vhostFormData{editor: editor{Form: views.Form{}}}).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "a plain HTTP port served too") {
			t.Error("form lacks the HTTP port's help text")
		}
		// The HTTP port sits next to the listen port.
		if i, j := strings.Index(html, `name="listen_port"`), strings.Index(html, `name="http_port"`); i < 0 || j < i || strings.Contains(html[i:j], "<article") {
			t.Errorf("http_port input is not right after listen_port")
		}
	})
}

func TestUI_Ports(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v    VirtualHost
		want string
	}{
		{VirtualHost{ListenPort: 80}, "80"},
		{VirtualHost{ListenPort: 443, SSLEnabled: true}, "443"},
		{VirtualHost{ListenPort: 443, SSLEnabled: true, HTTPPort: 80}, "443 + 80 (HTTP)"},
		{VirtualHost{ListenPort: 8443, SSLEnabled: true, HTTPPort: 8080, RedirectHTTPS: true}, "8443 + 8080 (redirect)"},
		{VirtualHost{ListenPort: 443, SSLEnabled: true, RedirectHTTPS: true}, "443 + 80 (redirect)"},
	} {
		if got := uiPorts(c.v); got != c.want {
			t.Errorf("uiPorts(%+v) = %q, want %q", c.v, got, c.want)
		}
	}
}
