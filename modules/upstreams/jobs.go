package upstreams

// The module runs no River jobs: Module.Jobs (upstreams.go) registers no worker
// and returns no periodic job. Active health checks run on the agents.
