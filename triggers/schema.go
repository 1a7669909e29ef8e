package triggers

import (
	"encoding/json"
	"sort"
)

// SchemaID is the $id of the rules file schema.
const SchemaID = "https://erpflow.dev/schemas/rules.json"

// JSONSchema returns the JSON Schema (draft 2020-12) of a rules file (or a
// single rule document), for
// editors' YAML language servers and for checking rules in CI. actionSchemas
// maps action types to the JSON Schema of their keys (actions.Schemer);
// those types get their keys checked, other types are accepted with any
// keys. The schema checks shape only: conditions, ${ENV} references and
// URLs are checked by loading (erpflow validate).
func JSONSchema(actionSchemas map[string]json.RawMessage) []byte {
	stringOrList := obj{"oneOf": []any{
		obj{"type": "string", "minLength": 1},
		obj{"type": "array", "minItems": 1, "items": obj{"type": "string", "minLength": 1}},
	}}
	jitterSchema := obj{"type": "boolean", "default": true, "description": "false: wait the delays as written, without the ±10% that spreads the retries of a burst"}
	duration := obj{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`, "description": "a positive Go duration: 30s, 5m, 1h30m"}
	defs := obj{
		"duration": duration,
		"retry": obj{
			"description": "retry policy: none (one attempt), default ([5s, 5m, 30m, 2h, 5h, 10h, 10h]), one-day (retries spread over 24h), {schedule: [5m, 10m]} (attempts = delays + 1), {exponential: {initial, max, within}}; jitter: false beside schedule or exponential waits the delays exactly",
			"oneOf": []any{
				obj{"enum": []any{"none", "default", "one-day"}},
				obj{"type": "string", "pattern": "^(schedule|exponential):"},
				obj{"type": "object", "additionalProperties": false, "required": []any{"schedule"}, "properties": obj{
					"schedule": obj{"type": "array", "minItems": 1, "maxItems": MaxScheduleLength, "items": obj{"$ref": "#/$defs/duration"}},
					"jitter":   jitterSchema,
				}},
				obj{"type": "object", "additionalProperties": false, "required": []any{"exponential"}, "properties": obj{
					"jitter": jitterSchema,
					"exponential": obj{"type": "object", "additionalProperties": false, "required": []any{"initial", "max", "within"}, "properties": obj{
						"initial": obj{"$ref": "#/$defs/duration"},
						"max":     obj{"$ref": "#/$defs/duration"},
						"within":  obj{"$ref": "#/$defs/duration"},
					}},
				}},
			},
		},
		"trigger": obj{
			"type":                 "object",
			"description":          "which events wake the rule; names are compared exactly (case-sensitive)",
			"additionalProperties": false,
			"properties": obj{
				"entity":   withDesc(stringOrList, `entity type, e.g. SalesOrder; "*" for every entity`),
				"entities": withDesc(stringOrList, "entity types"),
				"event":    withDesc(stringOrList, "event name; omit for any event"),
				"events":   withDesc(stringOrList, "event names; omit for any event"),
				"field":    obj{"type": "string", "minLength": 1, "description": "dotted path inside data; the rule fires only when previous.<field> and data.<field> differ"},
				"from":     obj{"type": []any{"string", "number", "boolean", "null"}, "description": "the field's value before the change"},
				"to":       obj{"type": []any{"string", "number", "boolean", "null"}, "description": "the field's value after the change"},
				"cron": obj{"type": "string", "minLength": 1, "examples": []any{"0 8 * * MON-FRI", "@daily"},
					"description": "a clock instead of events: 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly; the rule raises and matches its own tick event " + TickEntity + "/" + TickEvent + " (data: rule, scheduled_at), and has no entity, event or field"},
				"timezone": obj{"type": "string", "minLength": 1, "description": "IANA zone of cron (Europe/Berlin); default UTC. Evaluated on the local wall clock: a time the spring change skips fires at the end of the gap, a repeated time fires once"},
			},
			"oneOf": []any{
				obj{"required": []any{"entity"}, "not": obj{"anyOf": []any{obj{"required": []any{"entities"}}, obj{"required": []any{"cron"}}}}},
				obj{"required": []any{"entities"}, "not": obj{"anyOf": []any{obj{"required": []any{"entity"}}, obj{"required": []any{"cron"}}}}},
				obj{"required": []any{"cron"}, "not": obj{"anyOf": []any{
					obj{"required": []any{"entity"}}, obj{"required": []any{"entities"}}, obj{"required": []any{"event"}}, obj{"required": []any{"events"}},
					obj{"required": []any{"field"}}, obj{"required": []any{"from"}}, obj{"required": []any{"to"}},
				}}},
			},
			"not":               obj{"required": []any{"event", "events"}},
			"dependentRequired": obj{"from": []any{"field"}, "to": []any{"field"}, "timezone": []any{"cron"}},
		},
		"schedule": obj{
			"type":                 "object",
			"description":          "defer the actions: a matching event schedules a timer per (rule, tenant, entity, entity_id), replacing the entity's pending one; at fire time the condition is checked again against the entity's latest event. {after: data.due_date, delay: 72h}, {before: data.due_date, delay: 24h}, or {delay: 24h} (after the event)",
			"additionalProperties": false,
			"minProperties":        1,
			"properties": obj{
				"after":    obj{"type": "string", "pattern": `^(occurred_at|(data|previous)\..+)$`, "description": "dotted path of a date (RFC 3339 or YYYY-MM-DD) in the event: fire delay after it"},
				"before":   obj{"type": "string", "pattern": `^(occurred_at|(data|previous)\..+)$`, "description": "dotted path of a date (RFC 3339 or YYYY-MM-DD) in the event: fire delay before it"},
				"delay":    obj{"$ref": "#/$defs/duration", "description": "0s to 43800h (5 years); default 0s"},
				"timezone": obj{"type": "string", "minLength": 1, "description": "IANA zone in which a YYYY-MM-DD date is midnight; default UTC"},
			},
			"not": obj{"required": []any{"after", "before"}},
		},
		"debounce": obj{
			"description": "coalesce bursts per (rule, tenant, entity, entity_id): run once with the latest event when no matching event arrived for quiet, or at the latest max after the first. A duration (the quiet period; max is 10 times it, at most 168h) or {quiet, max}",
			"oneOf": []any{
				obj{"$ref": "#/$defs/duration"},
				obj{"type": "object", "additionalProperties": false, "required": []any{"quiet"}, "properties": obj{
					"quiet": obj{"$ref": "#/$defs/duration", "description": "more than 0, at most 24h"},
					"max":   obj{"$ref": "#/$defs/duration", "description": "at least quiet, at most 168h; default 10 times quiet"},
				}},
			},
		},
		"rule": obj{
			"type":                 "object",
			"additionalProperties": false,
			"required":             []any{"name", "on", "actions"},
			"properties": obj{
				"name":        obj{"type": "string", "pattern": "^[A-Za-z0-9._-]+$", "maxLength": MaxRuleNameLength, "description": "unique name (letters, digits, '.', '_', '-'; not . or ..)"},
				"description": obj{"type": []any{"string", "null"}},
				"enabled":     obj{"type": "boolean", "default": true},
				"tenants":     withDesc(stringOrList, "tenants the rule applies to; omit for every tenant"),
				"on":          obj{"$ref": "#/$defs/trigger"},
				"when":        obj{"type": []any{"string", "null"}, "description": "condition (expr-lang): data, previous, event, tenant, entity, entity_id, event_name, id, actor, occurred_at; changed(path), changed_from(path, v), changed_to(path, v), has(path), field(path)"},
				"actions":     obj{"type": "array", "minItems": 1, "maxItems": DefaultMaxActions, "items": obj{"$ref": "#/$defs/action"}},
				"retry":       obj{"$ref": "#/$defs/retry"},
				"schedule":    obj{"$ref": "#/$defs/schedule"},
				"debounce":    obj{"$ref": "#/$defs/debounce"},
				"ordered":     obj{"type": "boolean", "default": false, "description": "deliver each action's webhooks for one (tenant, entity, entity_id) one at a time, in emit order; a delivery waiting for its retry holds the later ones of that entity"},
			},
			"not":  obj{"required": []any{"schedule", "debounce"}},
			"if":   obj{"required": []any{"on"}, "properties": obj{"on": obj{"required": []any{"cron"}}}},
			"then": obj{"not": obj{"anyOf": []any{obj{"required": []any{"schedule"}}, obj{"required": []any{"debounce"}}}}},
		},
	}
	types := make([]string, 0, len(actionSchemas))
	for t := range actionSchemas {
		types = append(types, t)
	}
	sort.Strings(types)
	var conds []any
	for _, t := range types {
		name := "action_" + t
		defs[name] = actionDef(t, actionSchemas[t])
		conds = append(conds, obj{
			"if":   obj{"required": []any{"type"}, "properties": obj{"type": obj{"const": t}}},
			"then": obj{"$ref": "#/$defs/" + name},
		})
	}
	action := obj{
		"type":     "object",
		"required": []any{"type"},
		"properties": obj{
			"type":  obj{"type": "string", "minLength": 1, "description": "webhook, or an action type a plugin provides"},
			"retry": obj{"$ref": "#/$defs/retry"},
		},
	}
	if len(types) > 0 {
		action["properties"].(obj)["type"].(obj)["examples"] = types
		action["allOf"] = conds
	}
	defs["action"] = action
	schema := obj{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"$id":     SchemaID,
		"title":   "erpflow rules file, or a single rule",
		"type":    "object",
		"anyOf": []any{
			obj{
				"additionalProperties": false,
				"required":             []any{"rules"},
				"properties": obj{
					"rules": obj{"type": []any{"array", "null"}, "items": obj{"$ref": "#/$defs/rule"}},
				},
			},
			obj{"$ref": "#/$defs/rule"},
		},
		"$defs": defs,
	}
	b, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		panic(err) // only maps, slices and strings: cannot fail
	}
	return append(b, '\n')
}

type obj = map[string]any

func withDesc(o obj, d string) obj {
	c := make(obj, len(o)+1)
	for k, v := range o {
		c[k] = v
	}
	c["description"] = d
	return c
}

// actionDef is an action type's schema with the keys the rules format
// adds to every action (type, retry), so that additionalProperties: false
// in the action's own schema still holds.
func actionDef(typ string, raw json.RawMessage) obj {
	var s obj
	if err := json.Unmarshal(raw, &s); err != nil || s == nil {
		return obj{"description": "action type " + typ}
	}
	// Its own resource, so that references inside it ("#/…") resolve
	// against it; the keys added here point back to the rules schema.
	delete(s, "$schema")
	s["$id"] = "https://erpflow.dev/schemas/actions/" + typ + ".json"
	retry := obj{"$ref": SchemaID + "#/$defs/retry"}
	if props, ok := s["properties"].(map[string]any); ok {
		props["type"] = obj{"const": typ}
		props["retry"] = retry
	} else if s["additionalProperties"] == false {
		s["properties"] = obj{"type": obj{"const": typ}, "retry": retry}
	}
	return s
}
