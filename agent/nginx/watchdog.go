package nginx

import (
	"context"
	"fmt"
	"time"
)

// maxRestartDelay caps the wait between two failed restarts.
const maxRestartDelay = time.Minute

// watch is the watchdog. Every WatchInterval it looks for the nginx
// master; on a transition it emits nginx.down / nginx.up, and in supervise
// mode, with auto-restart on and nginx not deliberately stopped, it starts
// nginx again with the live version. Failed restarts are retried with a
// doubling delay up to a minute.
func (m *Manager) watch(ctx context.Context) {
	defer close(m.watchDone)
	tick := time.NewTicker(m.opts.WatchInterval)
	defer tick.Stop()
	up := m.masterPID() != 0
	delay := m.opts.WatchInterval
	var nextTry time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// An operation in progress (apply, command) may have nginx down
		// on purpose for a moment; look only when nothing holds the lock.
		if !m.mu.TryLock() {
			continue
		}
		pid := m.masterPID()
		expectedDown := m.mode == ModeSupervise && !m.wantRunning.Load()
		m.mu.Unlock()
		switch {
		case pid != 0 && !up:
			up = true
			delay, nextTry = m.opts.WatchInterval, time.Time{}
			m.emit(Event{Type: EventNginxUp, Message: "nginx is running", PID: pid})
		case pid == 0 && up:
			up = false
			if expectedDown {
				continue
			}
			m.log.Warn("nginx is not running")
			m.emit(Event{Type: EventNginxDown, Message: "nginx is not running"})
		}
		if pid != 0 || !m.shouldRestart() || time.Now().Before(nextTry) {
			continue
		}
		pid, err := m.restartDead(ctx)
		switch {
		case err != nil:
			nextTry = time.Now().Add(delay)
			delay = min(delay*2, maxRestartDelay)
			m.log.Error("watchdog could not restart nginx", "error", err, "retry_in", delay)
			m.emit(Event{Type: EventNginxRestartFailed, Message: err.Error()})
		case pid != 0:
			up = true
			delay, nextTry = m.opts.WatchInterval, time.Time{}
			n := m.restarts.Load()
			m.log.Warn("watchdog restarted nginx", "pid", pid, "restarts", n)
			m.emit(Event{Type: EventNginxRestarted, Message: fmt.Sprintf("nginx was not running and was restarted with the last good configuration (restart %d)", n), PID: pid})
		}
	}
}

// shouldRestart reports whether the watchdog may start nginx.
func (m *Manager) shouldRestart() bool {
	return m.mode == ModeSupervise && m.autoRestart.Load()
}

// restartDead starts nginx if it still should run and still is not
// running once the lock is held. It returns the new master's pid, 0 when
// there was nothing to do.
func (m *Manager) restartDead(ctx context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.wantRunning.Load() || m.masterPID() != 0 {
		return 0, nil
	}
	if err := m.startLocked(ctx); err != nil {
		return 0, err
	}
	m.restarts.Add(1)
	m.stateMu.Lock()
	m.lastRestart = time.Now()
	m.stateMu.Unlock()
	return m.masterPID(), nil
}

// emit calls Options.EventFunc.
func (m *Manager) emit(e Event) {
	if m.opts.EventFunc == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	m.opts.EventFunc(e)
}
