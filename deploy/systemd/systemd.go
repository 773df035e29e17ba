// Package systemd holds the systemd unit of the agent, embedded so the master
// can write it into the install script it serves.
package systemd

import _ "embed"

// AgentUnit is nxmesh-agent.service.
//
//go:embed nxmesh-agent.service
var AgentUnit string
