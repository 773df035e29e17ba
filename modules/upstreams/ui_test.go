package upstreams

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/views"
)

func TestUI_EditFormExplainsRoundRobin(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := editForm(formData{Form: views.Form{Values: map[string]string{}}}).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	// Both choices stay, under their API values, and say that nginx treats
	// them alike instead of looking like two different algorithms.
	for _, want := range []string{
		`value="round_robin"`, `value="weighted_round_robin"`,
		"Round robin (weights honoured)", "Weighted round robin (same as round robin)",
		"kept for API compatibility",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("upstream form lacks %q", want)
		}
	}
}
