package certs

import "github.com/nxmesh/nxmesh/app"

// SetClock replaces the service's clock after construction, for tests that
// build the module once and then move time (app.Deps.Clock is the usual way).
func SetClock(s *Service, c app.Clock) { s.clock = c }
