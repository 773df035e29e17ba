package app

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
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
