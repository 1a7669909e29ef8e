// Package catalog reads event catalogs: which entities exist, their
// events, and a JSON Schema (2020-12) for each entity's data and,
// optionally, previous. A catalog file looks like
//
//	catalog:
//	  - entity: Order
//	    events: [created, picked]
//	    validation: reject          # reject | warn (default) | off
//	    data: {type: object, properties: {amount: {type: number}}}
//
// JSON in the same shape is accepted too. Errors name file:line:col.
//
// A Catalog answers what rule authors and hosts ask: the entities and
// their events, whether a path such as data.customer.city exists for an
// entity (with a did-you-mean for near misses; the triggers loader uses
// this to refuse misspelt rules), and whether an event fits its schema
// (errors name the failing path, "data.amount: expected number, got
// string").
//
// Limits (see the Max… constants) bound the size of a catalog, its
// entities and events, and the depth of its schemas. Schemas may use
// local $ref only: nothing is ever loaded from files or the network.
package catalog
