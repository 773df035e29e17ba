// Package migrations holds the master's SQL schema as one ordered goose timeline
// for all modules (NNNNN_<module>_<what>.sql), embedded into the binary.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
