package app

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"
)

// FindPage reads one page of q's rows, sorted by order ("created_at, id"),
// and the number of rows q matches, from one filtered query (Model and Where
// already applied). It is how a service method answers a paginated list:
//
//	rows, total, err := app.FindPage[upstreamRow](q, page, "name_key, id")
func FindPage[T any](q *gorm.DB, page Page, order string) ([]T, int64, error) {
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count: %w", err)
	}
	var rows []T
	if err := q.Order(order).Offset(page.Offset()).Limit(page.PerPage).Find(&rows).Error; err != nil {
		return nil, 0, fmt.Errorf("read page %d: %w", page.Page, err)
	}
	return rows, total, nil
}

// ListFunc returns one page of a list and the list's total, for the request c.
type ListFunc[T any] func(c *fiber.Ctx, page Page) ([]T, int64, error)

// ListHandler is the handler of a paginated list route: it reads page and
// per_page (ParsePage: 422 naming the field when malformed), calls list and
// answers the List envelope {data, meta: {page, per_page, total}}.
func ListHandler[T any](list ListFunc[T]) fiber.Handler {
	return func(c *fiber.Ctx) error {
		page, err := ParsePage(c)
		if err != nil {
			return err
		}
		items, total, err := list(c, page)
		if err != nil {
			return err
		}
		return c.JSON(NewList(items, page, total))
	}
}

// MaxSearchLength is the longest search text (q) a list accepts.
const MaxSearchLength = 200

// CheckSearch validates a list's search text q: at most MaxSearchLength
// characters, else a 422 naming field.
func CheckSearch(v *Validator, field, q string) {
	v.Check(utf8.RuneCountInString(q) <= MaxSearchLength, field, FieldTooLong,
		fmt.Sprintf("must be at most %d characters", MaxSearchLength))
}

// likeEscaper escapes the LIKE wildcards and the escape character itself.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// ContainsPattern is the ILIKE pattern that matches values containing s
// literally: '%', '_' and '\' in s are escaped, so they match only
// themselves. Pass it as a parameter of "col ILIKE ? ESCAPE '\'" (see
// SearchClause); never splice it into SQL.
func ContainsPattern(s string) string {
	return "%" + likeEscaper.Replace(s) + "%"
}

// SearchClause is the WHERE clause matching rows where any of exprs (SQL
// expressions written in code, never user input) contains the search text
// case-insensitively, with its arguments (ContainsPattern(q), once per
// expression):
//
//	clause, args := app.SearchClause(search, "name", "server_name")
//	q = q.Where(clause, args...)
func SearchClause(search string, exprs ...string) (string, []any) {
	parts := make([]string, len(exprs))
	args := make([]any, len(exprs))
	pattern := ContainsPattern(search)
	for i, e := range exprs {
		parts[i] = e + ` ILIKE ? ESCAPE '\'`
		args[i] = pattern
	}
	return "(" + strings.Join(parts, " OR ") + ")", args
}

// Named is an object's id and name, as a page offers it in a filter or a
// link.
type Named struct {
	ID   uuid.UUID
	Name string
}

// Querier runs a query: the shared pgx pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// WorkspaceNames returns the id and name of at most limit rows of table in
// workspace ws, by name (case-insensitively) then id: what a module's page
// offers of objects another module owns (agents, virtual hosts, streams),
// read only. table is the caller's constant, never user input; its rows have
// id, name and workspace_id.
func WorkspaceNames(ctx context.Context, q Querier, table string, ws uuid.UUID, limit int) ([]Named, error) {
	rows, err := q.Query(ctx, "SELECT id, name FROM "+table+" WHERE workspace_id = $1 ORDER BY lower(name), id LIMIT "+strconv.Itoa(limit), ws)
	if err != nil {
		return nil, fmt.Errorf("list %s of workspace %s: %w", table, ws, err)
	}
	defer rows.Close()
	var out []Named
	for rows.Next() {
		var n Named
		if err := rows.Scan(&n.ID, &n.Name); err != nil {
			return nil, fmt.Errorf("list %s: %w", table, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", table, err)
	}
	return out, nil
}
