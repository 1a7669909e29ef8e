package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/engine/store/sqlite"
)

// Options tunes the store. The zero value means the defaults.
type Options struct {
	// MaxConns caps connections: the PostgreSQL pool (default 16) or the
	// SQLite read pool (default 4; SQLite always writes through one).
	MaxConns int
	// RelaxedSync is sqlite.Options.RelaxedSync: SQLite commits survive a
	// crash of the process, not a power loss. Default false: every commit
	// is on disk before it is answered. PostgreSQL ignores it.
	RelaxedSync bool
}

// ErrBadURL is returned (wrapped) for a database URL of no known kind.
var ErrBadURL = errors.New("database URL must be sqlite:PATH or postgres://…")

// Kind tells which adapter a URL selects: "sqlite" or "postgres"; "" when
// neither.
func Kind(dbURL string) string {
	switch {
	case strings.HasPrefix(dbURL, "sqlite:"):
		return "sqlite"
	case strings.HasPrefix(dbURL, "postgres://"), strings.HasPrefix(dbURL, "postgresql://"):
		return "postgres"
	}
	return ""
}

// SQLitePath returns the file path of a sqlite: URL ("sqlite:PATH" or
// "sqlite://PATH"; ":memory:" for sqlite::memory:).
func SQLitePath(dbURL string) (string, error) {
	p, ok := strings.CutPrefix(dbURL, "sqlite:")
	if !ok {
		return "", fmt.Errorf("%q: %w", Redact(dbURL), ErrBadURL)
	}
	p = strings.TrimPrefix(p, "//")
	if p == "" {
		return "", fmt.Errorf("%q: no file path after sqlite: (%w)", dbURL, ErrBadURL)
	}
	return p, nil
}

// Open opens the store at dbURL and applies pending schema migrations.
func Open(ctx context.Context, dbURL string, opts Options) (engine.Store, error) {
	switch Kind(dbURL) {
	case "sqlite":
		path, err := SQLitePath(dbURL)
		if err != nil {
			return nil, err
		}
		return sqlite.Open(ctx, path, sqlite.Options{ReadConns: opts.MaxConns, RelaxedSync: opts.RelaxedSync})
	case "postgres":
		s, err := postgres.Open(ctx, dbURL, postgres.Options{MaxConns: opts.MaxConns})
		if err != nil {
			// lib/pq errors do not repeat the URL; say which database.
			return nil, fmt.Errorf("%s: %w", Redact(dbURL), err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("%q: %w", Redact(dbURL), ErrBadURL)
}

// Redact hides the password of a database URL, for logs and errors.
func Redact(dbURL string) string {
	if Kind(dbURL) != "postgres" {
		return dbURL
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
