package render

import (
	"fmt"
	"io"
	"slices"
	"strings"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// CheckRoundTrip renders u like Render and then proves the output faithful:
// each config file is parsed back both with crossplane.Parse and with a
// reimplementation of nginx's own tokenizer, and both results must equal,
// directive for directive and argument for argument, the tree the renderer
// built. It returns Render's error if rendering fails, and an error wrapping
// ErrUnsafeArg if the output would be read differently from what was meant.
//
// It costs about as much again as Render; fuzz tests (here and in the
// master's validation code) call it on every input.
func CheckRoundTrip(u *agentv1.ConfigUpdate, opts Options) (Files, error) {
	out, err := render(u, opts)
	if err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(out.trees) {
		if err := roundTrip(name, out.trees[name], out.files[name]); err != nil {
			return nil, err
		}
	}
	return out.files, nil
}

// roundTrip checks that text parses back into want.
func roundTrip(name string, want crossplane.Directives, text []byte) error {
	want = stripComments(want)
	got, err := parseNginx(text)
	if err != nil {
		return fmt.Errorf("%w: %s: nginx tokenizer: %w", ErrUnsafeArg, name, err)
	}
	if diff := diffTrees(want, got, true); diff != "" {
		return fmt.Errorf("%w: %s: nginx would read %s", ErrUnsafeArg, name, diff)
	}
	got, err = parseCrossplane(name, text)
	if err != nil {
		return fmt.Errorf("%w: %s: crossplane: %w", ErrUnsafeArg, name, err)
	}
	if diff := diffTrees(want, got, false); diff != "" {
		return fmt.Errorf("%w: %s: crossplane would read %s", ErrUnsafeArg, name, diff)
	}
	return nil
}

// parseCrossplane parses one in-memory file with crossplane, checking syntax
// only (directive contexts and argument counts are not its concern here).
func parseCrossplane(name string, text []byte) (crossplane.Directives, error) {
	payload, err := crossplane.Parse(name, &crossplane.ParseOptions{
		Open: func(string) (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(string(text))), nil
		},
		SingleFile:                true,
		StopParsingOnError:        true,
		SkipDirectiveContextCheck: true,
		SkipDirectiveArgsCheck:    true,
	})
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(payload.Errors) > 0 {
		return nil, fmt.Errorf("parse: %w", payload.Errors[0].Error)
	}
	if len(payload.Config) != 1 {
		return nil, fmt.Errorf("parse: %d configs, want 1", len(payload.Config))
	}
	return payload.Config[0].Parsed, nil
}

func stripComments(tree crossplane.Directives) crossplane.Directives {
	out := make(crossplane.Directives, 0, len(tree))
	for _, d := range tree {
		if d.IsComment() {
			continue
		}
		c := *d
		if d.Block != nil {
			c.Block = stripComments(d.Block)
		}
		out = append(out, &c)
	}
	return out
}

// diffTrees describes the first difference between two trees, or returns
// "". With strictBlocks unset an empty block equals no block, because
// crossplane.Parse returns a nil block for "{ }".
func diffTrees(want, got crossplane.Directives, strictBlocks bool) string {
	for i := range max(len(want), len(got)) {
		if i >= len(want) {
			return fmt.Sprintf("extra directive %s %q", got[i].Directive, got[i].Args)
		}
		if i >= len(got) {
			return fmt.Sprintf("missing directive %s %q", want[i].Directive, want[i].Args)
		}
		w, g := want[i], got[i]
		if w.Directive != g.Directive || !slices.Equal(w.Args, g.Args) {
			return fmt.Sprintf("%s %q instead of %s %q", g.Directive, g.Args, w.Directive, w.Args)
		}
		wb, gb := w.IsBlock(), g.IsBlock()
		if !strictBlocks {
			wb, gb = len(w.Block) > 0, len(g.Block) > 0
		}
		if wb != gb {
			return fmt.Sprintf("directive %s %q with block=%v instead of %v", g.Directive, g.Args, gb, wb)
		}
		if d := diffTrees(w.Block, g.Block, strictBlocks); d != "" {
			return fmt.Sprintf("%s in %s %q", d, w.Directive, w.Args)
		}
	}
	return ""
}
