package orgs

// The module runs no River jobs: Module.Jobs (orgs.go) registers no worker and
// returns no periodic job. Organization deletion relies on the schema's cascades.
