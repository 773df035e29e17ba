package app

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
)

// JSON is a JSON document in a jsonb column; nil is SQL NULL.
type JSON []byte

// Value stores the document.
func (j JSON) Value() (driver.Value, error) {
	if j == nil {
		return nil, nil
	}
	return string(j), nil
}

// Scan reads a jsonb value.
func (j *JSON) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*j = nil
	case []byte:
		*j = append(JSON(nil), v...)
	case string:
		*j = JSON(v)
	default:
		return fmt.Errorf("scan jsonb: unexpected %T", src)
	}
	return nil
}

// MarshalJSON writes the document as it is (null when nil).
func (j JSON) MarshalJSON() ([]byte, error) {
	if j == nil {
		return []byte("null"), nil
	}
	return j, nil
}

// UnmarshalJSON keeps a copy of the document.
func (j *JSON) UnmarshalJSON(b []byte) error {
	*j = append(JSON(nil), b...)
	return nil
}

// JSONSlice is a slice stored as a jsonb array (never NULL: nil is []).
type JSONSlice[T any] []T

// Value stores the slice as a JSON array.
func (s JSONSlice[T]) Value() (driver.Value, error) {
	if s == nil {
		return "[]", nil
	}
	b, err := json.Marshal([]T(s))
	if err != nil {
		return nil, fmt.Errorf("encode jsonb array: %w", err)
	}
	return string(b), nil
}

// Scan reads a jsonb array.
func (s *JSONSlice[T]) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*s = nil
		return nil
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("scan jsonb array: unexpected %T", src)
	}
	var out []T
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("scan jsonb array: %w", err)
	}
	*s = out
	return nil
}
