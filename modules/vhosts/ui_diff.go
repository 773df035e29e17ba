package vhosts

import (
	"strconv"
	"strings"
)

// The side-by-side diff of two configuration versions, parsed from a
// unified diff.

// diffFile is one file of a unified diff laid out in two columns.
type diffFile struct {
	// Old and New are the file's names before and after ("" when absent).
	Old, New string
	Rows     []diffRow
}

// Name is the file's name.
func (f diffFile) Name() string {
	if f.New != "" {
		return f.New
	}
	return f.Old
}

// diffRow is one row of a side-by-side diff: a hunk header, or a line of each
// side (a number of 0 leaves that side empty).
type diffRow struct {
	Hunk           string
	OldNo, NewNo   int
	Old, New       string
	Removed, Added bool
}

// parseUnifiedDiff lays out a unified diff (the vhosts service's) in two
// columns: unchanged lines on both sides, removed lines on the left facing
// the lines added in their place on the right.
func parseUnifiedDiff(text string) []diffFile {
	var files []diffFile
	var cur *diffFile
	var oldNo, newNo int
	var removed, added []string
	flush := func() {
		if cur == nil {
			return
		}
		for i := 0; i < max(len(removed), len(added)); i++ {
			r := diffRow{}
			if i < len(removed) {
				oldNo++
				r.OldNo, r.Old, r.Removed = oldNo, removed[i], true
			}
			if i < len(added) {
				newNo++
				r.NewNo, r.New, r.Added = newNo, added[i], true
			}
			cur.Rows = append(cur.Rows, r)
		}
		removed, added = nil, nil
	}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "--- ") && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "+++ "):
			flush()
			files = append(files, diffFile{Old: diffName(line[4:]), New: diffName(lines[i+1][4:])})
			cur = &files[len(files)-1]
			i++
		case cur == nil:
		case strings.HasPrefix(line, "@@"):
			flush()
			oldNo, newNo = hunkStart(line)
			cur.Rows = append(cur.Rows, diffRow{Hunk: line})
		case strings.HasPrefix(line, "-"):
			removed = append(removed, line[1:])
		case strings.HasPrefix(line, "+"):
			added = append(added, line[1:])
		case strings.HasPrefix(line, " "):
			flush()
			oldNo++
			newNo++
			cur.Rows = append(cur.Rows, diffRow{OldNo: oldNo, NewNo: newNo, Old: line[1:], New: line[1:]})
		}
	}
	flush()
	return files
}

// diffName strips the a/ or b/ prefix of a file name in a diff header;
// /dev/null (the file is absent on that side) is "".
func diffName(s string) string {
	s, _, _ = strings.Cut(s, "\t")
	if s == "/dev/null" {
		return ""
	}
	if len(s) > 2 && (s[:2] == "a/" || s[:2] == "b/") {
		return s[2:]
	}
	return s
}

// hunkStart returns the line numbers before a hunk's first line, from its
// header "@@ -12,7 +12,9 @@".
func hunkStart(header string) (oldNo, newNo int) {
	fields := strings.Fields(header)
	if len(fields) < 3 {
		return 0, 0
	}
	start := func(s string) int {
		s, _, _ = strings.Cut(s[1:], ",")
		n, _ := strconv.Atoi(s)
		return max(n-1, 0)
	}
	return start(fields[1]), start(fields[2])
}

// uiIndent is a configuration line's indentation as no-break spaces, which an
// HTML table cell keeps (tabs count four).
func uiIndent(line string) string {
	indent := line[:len(line)-len(uiText(line))]
	return strings.Repeat("\u00a0", len(strings.ReplaceAll(indent, "\t", "    ")))
}

// uiText is a configuration line without its indentation.
func uiText(line string) string { return strings.TrimLeft(line, " \t") }

func uiLineNo(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}
