package agents

import (
	"sync"
	"time"
)

// runner runs a stream's work in a goroutine only while there is work: an
// idle stream holds no goroutine for it, which is most of what an idle
// fleet of thousands of agents would otherwise cost the master (a goroutine
// stack each). kick asks for a pass of pass; a kick while a pass runs asks
// for another one after it. Passes run one at a time, never before open
// and never after stop.
type runner struct {
	pass func()

	mu      sync.Mutex
	open    bool // passes may run
	stopped bool
	running bool
	again   bool          // a pass is wanted
	idle    chan struct{} // closed when the running goroutine ends
}

// kick asks for a pass.
func (r *runner) kick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.again = true
	r.startLocked()
}

// start lets passes run (and runs one if kicked before).
func (r *runner) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.open = true
	r.startLocked()
}

func (r *runner) startLocked() {
	if r.open && r.again && !r.running {
		r.running = true
		r.idle = make(chan struct{})
		go r.loop(r.idle)
	}
}

func (r *runner) loop(idle chan struct{}) {
	for {
		r.mu.Lock()
		if !r.again || r.stopped {
			r.running = false
			close(idle)
			r.mu.Unlock()
			return
		}
		r.again = false
		r.mu.Unlock()
		r.pass()
	}
}

// stop ends the runner: no pass starts after it, and it waits up to wait
// for the pass in progress (wait < 0: as long as it takes). It reports
// whether no pass is running any more.
func (r *runner) stop(wait time.Duration) bool {
	r.mu.Lock()
	r.stopped = true
	running, idle := r.running, r.idle
	r.mu.Unlock()
	if !running {
		return true
	}
	if wait < 0 {
		<-idle
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}
