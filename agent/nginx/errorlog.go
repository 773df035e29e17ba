package nginx

import (
	"io"
	"os"
	"regexp"
	"strings"
)

// maxErrorLogRead bounds how much of the error log one check reads.
const maxErrorLogRead = 1 << 20

// logSize returns the current size of the error log, the offset from which
// a later emergencies call looks for new lines. A missing file has size 0.
func logSize(path string) int64 {
	if path == "" {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logPrefix is nginx's error log line prefix: "2024/01/02 15:04:05 [emerg] 12#12: ".
var logPrefix = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?`)

// emergencies returns the distinct [emerg] messages nginx appended to the
// error log at path after offset, without nginx's timestamp prefix, in the
// order they were written. A log that shrank (rotated) is read from the
// start.
func emergencies(path string, offset int64) []string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < offset {
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, maxErrorLogRead))
	if err != nil {
		return nil
	}
	return emergLines(string(data))
}

// emergLines extracts the distinct [emerg] messages from error log text.
// A trailing line without its newline is still being written and is left
// for the next call.
func emergLines(text string) []string {
	var out []string
	seen := map[string]bool{}
	lines := strings.Split(text, "\n")
	for _, line := range lines[:len(lines)-1] {
		m := logPrefix.FindStringSubmatchIndex(line)
		if m == nil || line[m[2]:m[3]] != "emerg" {
			continue
		}
		msg := strings.TrimSpace(line[m[1]:])
		if !seen[msg] {
			seen[msg] = true
			out = append(out, msg)
		}
	}
	return out
}

// cleanOutput trims the output of an nginx command to its meaningful lines:
// it drops empty lines and nginx's closing "test failed" summary.
func cleanOutput(out []byte) string {
	var keep []string
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasSuffix(line, "test failed") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}
