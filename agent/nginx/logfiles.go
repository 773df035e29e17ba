package nginx

import (
	"fmt"
	"syscall"
)

// ErrorLogPath returns the file nginx writes its error log to (after
// Start): <prefix>/logs/error.log in supervise mode, the operator's
// error_log file in manage mode, or "" when that is not a file (stderr,
// syslog).
func (m *Manager) ErrorLogPath() string { return m.errorLog }

// ReopenLogs asks nginx's master to reopen its log files (SIGUSR1), as
// after a log rotation. It does not wait for an apply in progress.
func (m *Manager) ReopenLogs() error {
	pid := m.masterPID()
	if pid == 0 {
		return ErrNotRunning
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return fmt.Errorf("signal nginx master %d to reopen its logs: %w", pid, err)
	}
	return nil
}
