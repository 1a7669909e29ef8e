// Package triggers is erpflow's rules language: it loads rules from YAML
// (or JSON), compiles their conditions, and matches events against them.
//
// A rule is a trigger (which entity and event wake it, optionally "field F
// changed from A to B"), an optional tenant list, an optional condition
// written in expr-lang/expr, one or more actions and a retry policy:
//
//	rules:
//	  - name: so-released
//	    on: {entity: SalesOrder, event: updated, field: status, to: RELEASED}
//	    when: data.total > 1000
//	    actions:
//	      - type: webhook
//	        url: https://erp.example/hooks/so
//	    retry: {schedule: [5m, 10m]}
//
// Loading (Parse, ParseRule, LoadPaths) decodes through yaml.Node, so every
// problem is reported with file:line:column and a field path, and all
// problems of a load come back together as Errors. ${ENV} references in
// strings are expanded at load from the process environment
// (LoadOptions.LookupEnv); a host loading rules from people who must not
// read that environment restricts the names with LoadOptions.AllowEnv.
// Action configs are decoded by an
// ActionDecoder (the actions.Registry), which gets each action's mapping
// without "type" and "retry".
//
// Conditions are compiled once, at load. Evaluation reuses pooled VMs and
// environments and fills only the names a condition reads, so matching an
// event allocates nothing in the common case. A condition that fails at
// run time does not match and is reported to SetOptions.OnEvalError; one
// stopped by its limits makes its rule cool down (CooldownError).
//
// A rule may also say when its actions run: schedule (a timer from a date
// in the event, or from the event itself), debounce (once per burst of an
// entity's events), ordered (one entity's deliveries one at a time), or
// on.cron instead of an entity (a clock whose ticks are events of
// TickEntity/TickEvent that only the rule itself matches). This package
// parses and checks them and computes their times (ParseCron,
// Rule.NextTick, Schedule.FireAt); the engine keeps the timers.
//
// A Set indexes rules by (entity, event): Match looks only at candidate
// rules. Sets are immutable; the engine keeps the current one in an
// atomic.Pointer[Set] and reloads rules by building a new Set and swapping
// it in, so matches in flight see either the old or the new rules.
//
// The format is documented in docs/rules.md; JSONSchema describes it for
// editors.
package triggers
