package certs

// The module runs no River jobs yet: Module.Jobs (certs.go) registers no worker
// and returns no periodic job. Service.RefreshStatuses is ready for the periodic
// status scan, and ACME issuance and renewal will be jobs of this module.
