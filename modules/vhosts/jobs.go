package vhosts

// The module runs no River jobs: Module.Jobs (vhosts.go) registers no worker
// and returns no periodic job. Configuration changes reach the agents through
// pg_notify (ConfigChanged), not through the job queue.
