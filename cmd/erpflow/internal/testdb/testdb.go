// Package testdb gives tests of the erpflow command a fresh PostgreSQL
// database on the server named by TEST_DATABASE_URL.
package testdb

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"

	_ "github.com/lib/pq" // the postgres driver
)

var seq atomic.Int64

// URL returns TEST_DATABASE_URL, or "" when it is not set.
func URL() string { return os.Getenv("TEST_DATABASE_URL") }

// New creates an empty database on the server at base for one test and
// drops it when the test ends; it returns the database's URL.
func New(t testing.TB, base, prefix string) string {
	t.Helper()
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), seq.Add(1))
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
