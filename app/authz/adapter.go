package authz

import (
	"errors"
	"fmt"

	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// rule is one row of casbin_rule (created by migrations/, never altered here).
type rule struct {
	ID    int64 `gorm:"primaryKey"`
	Ptype string
	V0    string
	V1    string
	V2    string
	V3    string
	V4    string
	V5    string
}

func (rule) TableName() string { return "casbin_rule" }

func (r rule) values() []string {
	vs := []string{r.V0, r.V1, r.V2, r.V3, r.V4, r.V5}
	for len(vs) > 0 && vs[len(vs)-1] == "" {
		vs = vs[:len(vs)-1]
	}
	return vs
}

func newRule(ptype string, vs []string) (rule, error) {
	if len(vs) > 6 {
		return rule{}, fmt.Errorf("casbin rule with %d values (at most 6)", len(vs))
	}
	r := rule{Ptype: ptype}
	fields := []*string{&r.V0, &r.V1, &r.V2, &r.V3, &r.V4, &r.V5}
	for i, v := range vs {
		*fields[i] = v
	}
	return r, nil
}

// adapter keeps Casbin's policies in the casbin_rule table through GORM. It is
// the few lines of Casbin's persist.BatchAdapter this package needs, so the
// master links only the PostgreSQL driver it already uses.
type adapter struct{ db *gorm.DB }

var _ persist.BatchAdapter = adapter{}

func (a adapter) LoadPolicy(m model.Model) error {
	var rows []rule
	if err := a.db.Order("id").Find(&rows).Error; err != nil {
		return fmt.Errorf("read casbin_rule: %w", err)
	}
	for _, r := range rows {
		if err := persist.LoadPolicyArray(append([]string{r.Ptype}, r.values()...), m); err != nil {
			return fmt.Errorf("load casbin rule %d: %w", r.ID, err)
		}
	}
	return nil
}

func (a adapter) SavePolicy(m model.Model) error {
	var rows []rule
	for _, sec := range []string{"p", "g"} {
		for ptype, ast := range m[sec] {
			for _, vs := range ast.Policy {
				r, err := newRule(ptype, vs)
				if err != nil {
					return err
				}
				rows = append(rows, r)
			}
		}
	}
	return a.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("true").Delete(&rule{}).Error; err != nil {
			return fmt.Errorf("clear casbin_rule: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		if err := tx.Create(&rows).Error; err != nil {
			return fmt.Errorf("write casbin_rule: %w", err)
		}
		return nil
	})
}

func (a adapter) AddPolicy(sec, ptype string, vs []string) error {
	return a.AddPolicies(sec, ptype, [][]string{vs})
}

func (a adapter) AddPolicies(_, ptype string, rules [][]string) error {
	rows := make([]rule, 0, len(rules))
	for _, vs := range rules {
		r, err := newRule(ptype, vs)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil
	}
	// Another replica may have added the same rule: the unique index makes
	// that a no-op.
	if err := a.db.Clauses(clause.OnConflict{DoNothing: true}).Create(&rows).Error; err != nil {
		return fmt.Errorf("add casbin rules: %w", err)
	}
	return nil
}

func (a adapter) RemovePolicy(sec, ptype string, vs []string) error {
	return a.RemovePolicies(sec, ptype, [][]string{vs})
}

func (a adapter) RemovePolicies(_, ptype string, rules [][]string) error {
	return a.db.Transaction(func(tx *gorm.DB) error {
		for _, vs := range rules {
			r, err := newRule(ptype, vs)
			if err != nil {
				return err
			}
			err = tx.Where("ptype = ? AND v0 = ? AND v1 = ? AND v2 = ? AND v3 = ? AND v4 = ? AND v5 = ?",
				r.Ptype, r.V0, r.V1, r.V2, r.V3, r.V4, r.V5).Delete(&rule{}).Error
			if err != nil {
				return fmt.Errorf("remove casbin rule: %w", err)
			}
		}
		return nil
	})
}

func (a adapter) RemoveFilteredPolicy(_, ptype string, fieldIndex int, fieldValues ...string) error {
	if fieldIndex < 0 || fieldIndex+len(fieldValues) > 6 {
		return errors.New("remove casbin rules: filter out of range")
	}
	q := a.db.Where("ptype = ?", ptype)
	for i, v := range fieldValues {
		if v != "" {
			q = q.Where(fmt.Sprintf("v%d = ?", fieldIndex+i), v)
		}
	}
	if err := q.Delete(&rule{}).Error; err != nil {
		return fmt.Errorf("remove casbin rules: %w", err)
	}
	return nil
}
