// Package authz decides whether a role may perform an action on an object.
//
// Decisions are made by Casbin (RBAC with domains). Policies are declared by each
// module (Module.Policies) and stored in PostgreSQL (table casbin_rule) through a
// small GORM adapter (adapter.go);
// the role of a request comes from its membership or API key scope, resolved by the
// caller. Domains are organization ids; module defaults use the domain "*" so every
// organization gets them, and an organization can be given extra policies of its own.
package authz

import (
	"context"
	"fmt"
	"sync"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"gorm.io/gorm"
)

// Roles, from least to most privileged.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
	RoleOwner    = "owner"
)

// Roles lists every role, least privileged first.
var Roles = []string{RoleViewer, RoleOperator, RoleAdmin, RoleOwner}

// Actions.
const (
	Read   = "read"
	Write  = "write"
	Delete = "delete"
)

// Policy grants Role the Action on Object (e.g. "orgs.workspace").
type Policy struct {
	Role   string
	Object string
	Action string
}

// AtLeast grants action on object to role and every role above it.
func AtLeast(role, object, action string) []Policy {
	var out []Policy
	found := false
	for _, r := range Roles {
		if r == role {
			found = true
		}
		if found {
			out = append(out, Policy{Role: r, Object: object, Action: action})
		}
	}
	return out
}

// RoleRank orders roles; unknown roles rank -1.
func RoleRank(role string) int {
	for i, r := range Roles {
		if r == role {
			return i
		}
	}
	return -1
}

// ValidRole reports whether role is one of Roles.
func ValidRole(role string) bool { return RoleRank(role) >= 0 }

const modelText = `
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (r.sub == p.sub || g(r.sub, p.sub, r.dom)) && (p.dom == "*" || r.dom == p.dom) && (p.obj == "*" || r.obj == p.obj) && (p.act == "*" || r.act == p.act)
`

// Enforcer wraps a Casbin enforcer. It is safe for concurrent use.
type Enforcer struct {
	mu    sync.RWMutex
	e     *casbin.Enforcer
	cache map[[4]string]bool // decisions since the last policy change
}

// New builds an enforcer whose policies live in db (table casbin_rule).
func New(db *gorm.DB) (*Enforcer, error) {
	m, err := model.NewModelFromString(modelText)
	if err != nil {
		return nil, fmt.Errorf("casbin model: %w", err)
	}
	e, err := casbin.NewEnforcer(m, adapter{db: db.Session(&gorm.Session{NewDB: true})})
	if err != nil {
		return nil, fmt.Errorf("casbin enforcer: %w", err)
	}
	return &Enforcer{e: e, cache: map[[4]string]bool{}}, nil
}

// Sync makes the stored default policies (domain "*") exactly ps and reloads.
// Policies for specific organizations are left alone.
func (en *Enforcer) Sync(ctx context.Context, ps []Policy) error {
	en.mu.Lock()
	defer en.mu.Unlock()
	clear(en.cache)
	if err := en.e.LoadPolicy(); err != nil {
		return fmt.Errorf("load policies: %w", err)
	}
	want := map[[3]string]bool{}
	for _, p := range ps {
		want[[3]string{"role:" + p.Role, p.Object, p.Action}] = true
	}
	have, err := en.e.GetFilteredPolicy(1, "*")
	if err != nil {
		return fmt.Errorf("read policies: %w", err)
	}
	var stale [][]string
	for _, h := range have {
		if len(h) == 4 && !want[[3]string{h[0], h[2], h[3]}] {
			stale = append(stale, h)
		}
		if len(h) == 4 {
			delete(want, [3]string{h[0], h[2], h[3]})
		}
	}
	if len(stale) > 0 {
		if _, err := en.e.RemovePolicies(stale); err != nil {
			return fmt.Errorf("remove stale policies: %w", err)
		}
	}
	var add [][]string
	for k := range want {
		add = append(add, []string{k[0], "*", k[1], k[2]})
	}
	if len(add) > 0 {
		if _, err := en.e.AddPolicies(add); err != nil {
			return fmt.Errorf("add policies: %w", err)
		}
	}
	return nil
}

// Allowed reports whether role may do action on object in the organization
// domain. Decisions are cached until the policies change (Sync), so the matcher
// runs once per distinct question.
func (en *Enforcer) Allowed(role, domain, object, action string) (bool, error) {
	key := [4]string{role, domain, object, action}
	en.mu.RLock()
	ok, hit := en.cache[key]
	en.mu.RUnlock()
	if hit {
		return ok, nil
	}
	en.mu.Lock()
	defer en.mu.Unlock()
	ok, err := en.e.Enforce("role:"+role, domain, object, action)
	if err != nil {
		return false, fmt.Errorf("enforce %s %s %s: %w", role, object, action, err)
	}
	if len(en.cache) > 100_000 {
		clear(en.cache)
	}
	en.cache[key] = ok
	return ok, nil
}
