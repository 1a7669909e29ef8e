// Package actions defines what a rule's action is (Config: render what to
// send when the delivery is created, Execute it on every attempt) and the
// Registry that maps action type names (the built-in "webhook", plugin
// types) to the Factory that decodes and validates their YAML config.
//
// Subpackage webhook is the built-in webhook action.
package actions
