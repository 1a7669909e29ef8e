// Package templates holds the Event that flows through erpflow and renders
// what actions send: URL and header templates with {placeholders} and the
// request bodies (entity, envelope, none, template).
//
// Templates are parsed once, when rules load, and rendering is cheap and
// safe for concurrent use. The package imports nothing else of erpflow.
package templates
