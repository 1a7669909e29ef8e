// Package config reads the configuration file of `erpflow serve`.
//
// Every key is optional; Default returns the configuration of a zero-config
// start (SQLite ./erpflow.db, 127.0.0.1:8080, no tokens). Load decodes a YAML
// file strictly: an unknown key, a value of the wrong type or an invalid
// value is an error naming file:line:col. ${NAME} in any string is replaced
// by the environment variable NAME; an unset variable is an error, so that a
// missing token never silently becomes an empty one.
package config
