package triggers

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// MaxRuleNameLength bounds rule names (they are URL path segments).
const MaxRuleNameLength = 128

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

var (
	fileKeys    = []string{"rules"}
	ruleKeys    = []string{"name", "description", "enabled", "tenants", "on", "when", "actions", "retry", "schedule", "debounce", "ordered"}
	triggerKeys = []string{"entity", "entities", "event", "events", "field", "from", "to", "cron", "timezone"}
)

// Files lists the rules files of paths as LoadPaths reads them: a file
// named explicitly whatever its extension, and every *.yaml and *.yml file
// below a directory (hidden files and directories skipped), in lexical
// order, each once. Paths that cannot be read are errors.
func Files(paths []string) ([]string, error) {
	files, errs := listFiles(paths)
	return files, errs.err()
}

func listFiles(paths []string) ([]string, Errors) {
	var files []string
	seen := map[string]bool{}
	var errs Errors
	add := func(p string) {
		c := filepath.Clean(p)
		if !seen[c] {
			seen[c] = true
			files = append(files, p)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &Error{File: p, Msg: errText(err)})
			continue
		}
		if !st.IsDir() {
			add(p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, &Error{File: path, Msg: errText(err)})
				return nil
			}
			name := d.Name()
			if path != p && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, &Error{File: p, Msg: errText(err)})
		}
		sort.Strings(found)
		for _, f := range found {
			add(f)
		}
	}
	return files, errs
}

// LoadPaths loads the rules of the files and directories in paths (see
// Files). Every problem of every file is reported in one Errors value;
// duplicate rule names across files are errors too.
func LoadPaths(paths []string, opts LoadOptions) ([]*Rule, error) {
	files, errs := listFiles(paths)
	var rules []*Rule
	names := map[string]*Rule{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, &Error{File: f, Msg: errText(err)})
			continue
		}
		l := newLoader(f, src, opts)
		rs := l.parseFile()
		errs = append(errs, l.errs...)
		for _, r := range rs {
			if prev, dup := names[r.Name]; dup {
				errs = append(errs, &Error{File: f, Line: r.Source.Line, Column: r.nameCol, Path: r.namePath,
					Msg: fmt.Sprintf("duplicate rule name %q (first defined at %s:%d)", r.Name, prev.Source.File, prev.Source.Line)})
				continue
			}
			names[r.Name] = r
			rules = append(rules, r)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return rules, nil
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Parse decodes a rules file: a mapping with a `rules:` list, or a single
// rule (a mapping with a rule's keys and no rules key). filename is used
// in error positions only. On error it returns Errors with every
// problem of the document and no rules.
func Parse(filename string, src []byte, opts LoadOptions) ([]*Rule, error) {
	l := newLoader(filename, src, opts)
	rules := l.parseFile()
	if err := l.errs.err(); err != nil {
		return nil, err
	}
	return rules, nil
}

// FileRuleID is the ID of the rule named name in a rules file: the same
// for every load, so that a rule's deliveries survive reloads, and unlike
// any API rule's ("rul_…"), so that neither takes over the other's.
func FileRuleID(name string) string { return "file:" + name }

// ParseRule decodes one rule: a mapping with the keys of one entry of a
// rules file's list. JSON is accepted too (it is YAML). Error paths are
// relative to the rule ("when", "actions[0].url").
func ParseRule(filename string, src []byte, opts LoadOptions) (*Rule, error) {
	l := newLoader(filename, src, opts)
	root := l.document()
	if len(l.errs) > 0 {
		return nil, l.errs.err()
	}
	if root == nil {
		l.errAt(1, 1, "", "empty document: expected a rule mapping")
		return nil, l.errs.err()
	}
	r := l.decodeRule(root, "")
	if err := l.errs.err(); err != nil || r == nil {
		return nil, err
	}
	return r, nil
}

type loader struct {
	file    string
	src     []byte
	lines   []string
	opts    LoadOptions
	errs    Errors
	curPath string
	// pathPrefix is the path of the document root: "" for a rules file
	// (whose paths start with "rules"), and for a single rule.
	pathPrefix string
	names      map[string]*Rule
	// unknown are the values holding an unset ${NAME}: problems reported
	// at them follow from it (a note with LoadOptions.UnsetEnv, else one
	// error) and are dropped.
	unknown []unknownValue
	// expanded are the scalars whose ${NAME} were expanded.
	expanded map[*yaml.Node]*expansion
}

// unknownValue is the position and field path of a scalar whose value is
// not known.
type unknownValue struct {
	line, col int
	path      string
}

func newLoader(file string, src []byte, opts LoadOptions) *loader {
	return &loader{file: file, src: src, opts: opts, names: map[string]*Rule{}}
}

func (l *loader) errAt(line, col int, path, msg string) *Error {
	for _, u := range l.unknown {
		if u.line == line && u.col == col || path != "" && u.path == path {
			return nil
		}
	}
	e := &Error{File: l.file, Line: line, Column: col, Path: path, Msg: msg}
	l.errs = append(l.errs, e)
	return e
}

func (l *loader) errorf(n *yaml.Node, path, format string, args ...any) {
	line, col := 0, 0
	if n != nil {
		line, col = n.Line, n.Column
	}
	l.errAt(line, col, path, fmt.Sprintf(format, args...))
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document decodes the YAML source and expands ${ENV}; it returns the
// root content node, nil for an empty document.
func (l *loader) document() *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(l.src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err.Error() == "EOF" {
			return nil
		}
		l.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		l.errorf(&extra, "", "only one YAML document per file is allowed")
	} else if err.Error() != "EOF" {
		l.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	l.expandEnv(&doc, l.pathPrefix, map[*yaml.Node]bool{})
	return resolve(doc.Content[0])
}

func (l *loader) yamlError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		l.errAt(line, 1, "", "invalid YAML: "+m[2])
		return
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = strings.Join(te.Errors, "; ")
	}
	l.errAt(1, 1, "", "invalid YAML: "+strings.TrimPrefix(msg, "yaml: "))
}

func (l *loader) parseFile() []*Rule {
	root := l.document()
	if root == nil {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		l.errorf(root, "", "expected a mapping with a rules: list, or one rule, found %s", yamlx.KindName(root))
		return nil
	}
	if isSingleRule(root) {
		return l.addRule(nil, root, "")
	}
	var rulesNode *yaml.Node
	for _, kv := range l.mapping(root, "", fileKeys) {
		rulesNode = kv.val
	}
	if rulesNode == nil {
		l.errorf(root, "", "missing key rules (or write one rule: name, on, actions)")
		return nil
	}
	if rulesNode.Kind == yaml.ScalarNode && rulesNode.ShortTag() == "!!null" {
		return nil
	}
	if rulesNode.Kind != yaml.SequenceNode {
		l.errorf(rulesNode, "rules", "expected a list of rules, found %s", yamlx.KindName(rulesNode))
		return nil
	}
	var rules []*Rule
	for i, rn := range rulesNode.Content {
		rules = l.addRule(rules, resolve(rn), fmt.Sprintf("rules[%d]", i))
	}
	return rules
}

// isSingleRule reports whether a document's root mapping is one rule
// rather than a rules file: it has no rules key and some key of a rule.
func isSingleRule(root *yaml.Node) bool {
	single := false
	for i := 0; i < len(root.Content); i += 2 {
		k := resolve(root.Content[i])
		if k.Kind != yaml.ScalarNode {
			continue
		}
		if k.Value == "rules" {
			return false
		}
		single = single || slices.Contains(ruleKeys, k.Value)
	}
	return single
}

// addRule decodes the rule n at path and appends it to rules when it has
// no errors.
func (l *loader) addRule(rules []*Rule, n *yaml.Node, path string) []*Rule {
	before := len(l.errs)
	r := l.decodeRule(n, path)
	if r == nil || r.Name == "" {
		return rules
	}
	if prev, dup := l.names[r.Name]; dup {
		l.errAt(r.Source.Line, r.nameCol, r.namePath, fmt.Sprintf("duplicate rule name %q (first defined at line %d)", r.Name, prev.Source.Line))
		return rules
	}
	l.names[r.Name] = r
	r.ID = FileRuleID(r.Name)
	if len(l.errs) == before {
		rules = append(rules, r)
	}
	return rules
}

// mapping returns the entries of a mapping node, reporting unknown and
// duplicate keys. known nil accepts every key.
func (l *loader) mapping(n *yaml.Node, path string, known []string) []keyValue {
	var out []keyValue
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			l.errorf(k, path, "keys must be strings, found %s", yamlx.KindName(k))
			continue
		}
		if k.Value == "<<" {
			l.errorf(k, path, "merge keys (<<) are not supported")
			continue
		}
		if seen[k.Value] {
			l.errorf(k, yamlx.Join(path, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		if known != nil && !slices.Contains(known, k.Value) {
			l.errorf(k, path, "unknown key %q%s (known: %s)", k.Value, suggest(k.Value, known), strings.Join(known, ", "))
			continue
		}
		out = append(out, keyValue{k, v})
	}
	return out
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// str decodes a string scalar. Numbers and booleans are taken as their
// text; null, lists and mappings are errors.
func (l *loader) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		l.errorf(n, path, "expected a string, found %s", yamlx.KindName(n))
		return "", false
	}
	return n.Value, true
}

// strList decodes a list of non-empty strings; a single scalar is a list
// of one. Duplicates are dropped.
func (l *loader) strList(n *yaml.Node, path string) ([]string, bool) {
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		items = n.Content
	case n.Kind == yaml.ScalarNode && !isNull(n):
		items = []*yaml.Node{n}
	default:
		l.errorf(n, path, "expected a list of strings, found %s", yamlx.KindName(n))
		return nil, false
	}
	if len(items) == 0 {
		l.errorf(n, path, "must not be empty")
		return nil, false
	}
	var out []string
	ok := true
	for i, it := range items {
		it = resolve(it)
		p := path
		if n.Kind == yaml.SequenceNode {
			p = fmt.Sprintf("%s[%d]", path, i)
		}
		s, good := l.str(it, p)
		if !good {
			ok = false
			continue
		}
		if strings.TrimSpace(s) == "" {
			l.errorf(it, p, "must not be empty")
			ok = false
			continue
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, ok
}

func (l *loader) boolean(n *yaml.Node, path string) (bool, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	}
	l.errorf(n, path, "expected true or false, found %q", n.Value)
	return false, false
}

func (l *loader) decodeRule(n *yaml.Node, path string) *Rule {
	if n.Kind != yaml.MappingNode {
		l.errorf(n, path, "expected a rule mapping (name, on, actions, …), found %s", yamlx.KindName(n))
		return nil
	}
	r := &Rule{Enabled: !l.opts.DisabledByDefault, Retry: DefaultRetry,
		Source: Source{File: l.file, Line: n.Line}}
	var haveName, haveOn, haveActions bool
	var refs catalogRefs // what checkCatalog looks at
	var timing timingKeys
	before := len(l.errs)
	r.nameCol = n.Column
	r.namePath = path
	for _, kv := range l.mapping(n, path, ruleKeys) {
		p := yamlx.Join(path, kv.key.Value)
		switch kv.key.Value {
		case "name":
			haveName = true
			s, ok := l.str(kv.val, p)
			if !ok {
				continue
			}
			r.Source.Line, r.nameCol, r.namePath = kv.val.Line, kv.val.Column, p
			switch {
			case s == "":
				l.errorf(kv.val, p, "must not be empty")
			case len(s) > MaxRuleNameLength:
				l.errorf(kv.val, p, "is %d characters long, more than %d", len(s), MaxRuleNameLength)
			case !ruleNameRE.MatchString(s):
				l.errorf(kv.val, p, "%q may contain only letters, digits, '.', '_' and '-' (it is used in URLs)", s)
			case s == "." || s == "..":
				l.errorf(kv.val, p, "%q cannot be a rule name: URLs resolve it as a path segment", s)
			default:
				r.Name = s
			}
		case "description":
			if !isNull(kv.val) {
				r.Description, _ = l.str(kv.val, p)
			}
		case "enabled":
			r.Enabled, _ = l.boolean(kv.val, p)
		case "tenants":
			r.Tenants, _ = l.strList(kv.val, p)
		case "on":
			haveOn = true
			refs.on, refs.onPath = kv.val, p
			l.decodeTrigger(r, kv.val, p)
		case "when":
			if isNull(kv.val) {
				continue
			}
			s, ok := l.str(kv.val, p)
			if !ok || strings.TrimSpace(s) == "" {
				if ok {
					l.errorf(kv.val, p, "must not be empty (omit when for no condition)")
				}
				continue
			}
			r.When = s
			refs.when, refs.whenPath = kv.val, p
			c, cerr := compileCondition(s)
			if cerr != nil {
				line, col := l.exprPos(kv.val, cerr.line, cerr.col, cerr.offset)
				l.errAt(line, col, p, cerr.msg)
				continue
			}
			r.cond = c
		case "actions":
			haveActions = true
			refs.actions, refs.actionsPath = kv.val, p
			l.decodeActions(r, kv.val, p)
		case "retry":
			rt, ok := l.decodeRetry(kv.val, p)
			if ok {
				r.Retry = rt
			}
		case "schedule":
			timing.schedule = kv.key
			refs.schedule, refs.schedulePath = kv.val, p
			if s, ok := l.decodeSchedule(kv.val, p); ok {
				r.Schedule = s
			}
		case "debounce":
			timing.debounce = kv.key
			if d, ok := l.decodeDebounce(kv.val, p); ok {
				r.Debounce = d
			}
		case "ordered":
			r.Ordered, _ = l.boolean(kv.val, p)
		}
	}
	timing.cron = r.On.Cron != ""
	l.checkTimingKeys(r, timing, path)
	if !haveName {
		l.errorf(n, path, "missing key name")
	}
	if !haveOn {
		l.errorf(n, path, "missing key on (the trigger: entity and event)")
	}
	if !haveActions {
		l.errorf(n, path, "missing key actions (at least one action)")
	}
	if l.opts.Catalog != nil && len(l.errs) == before {
		l.checkCatalog(r, refs)
	}
	// Callers check l.errs: a rule with errors is returned too, so that its
	// name still counts in duplicate checks.
	return r
}

func (l *loader) decodeTrigger(r *Rule, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		l.errorf(n, path, "expected a mapping {entity, event, field, from, to} or {cron, timezone}, found %s", yamlx.KindName(n))
		return
	}
	var t Trigger
	var entityKey, eventKey, fromKey, toKey, cronNode, tzKey, tzNode *yaml.Node
	var eventKeys []keyValue // the keys a cron trigger does not have
	for _, kv := range l.mapping(n, path, triggerKeys) {
		p := yamlx.Join(path, kv.key.Value)
		switch kv.key.Value {
		case "cron":
			cronNode = kv.val
			continue
		case "timezone":
			tzKey, tzNode = kv.key, kv.val
			continue
		}
		eventKeys = append(eventKeys, kv)
		switch k := kv.key.Value; k {
		case "entity", "entities":
			if entityKey != nil {
				l.errorf(kv.key, p, "use either entity or entities, not both")
				continue
			}
			entityKey = kv.key
			t.Entities, _ = l.strList(kv.val, p)
		case "event", "events":
			if eventKey != nil {
				l.errorf(kv.key, p, "use either event or events, not both")
				continue
			}
			eventKey = kv.key
			t.Events, _ = l.strList(kv.val, p)
			if slices.Contains(t.Events, "*") {
				t.Events = nil // "*" is any event
			}
		case "field":
			dotted, ok := l.dottedPath(kv.val, p, checkFieldPath, "lines[0].sku, lines.0.sku")
			if !ok {
				continue
			}
			t.Field = dotted
		case "from", "to":
			if kv.val.Kind != yaml.ScalarNode {
				l.errorf(kv.val, p, "expected a scalar value, found %s", yamlx.KindName(kv.val))
				continue
			}
			v := canonicalYAMLScalar(kv.val)
			if kv.val.Style == 0 && v != kv.val.Value && ambiguousNumber(kv.val.Value) {
				// YAML reads 007 as 7 and 0x1F as 31: the text the ERP sends
				// as "007" would never match. Say which was meant.
				l.errorf(kv.val, yamlx.Join(path, k), "%s is read by YAML as the number %s: quote it (%s: %q) to match that text, or write %s", kv.val.Value, v, k, kv.val.Value, v)
				continue
			}
			if k == "from" {
				fromKey, t.From = kv.key, &v
			} else {
				toKey, t.To = kv.key, &v
			}
		}
	}
	if cronNode != nil {
		l.decodeCron(&t, cronNode, tzNode, eventKeys, path)
		r.On = t
		return
	}
	if tzKey != nil {
		l.errorf(tzKey, yamlx.Join(path, "timezone"), "timezone needs cron (it is the zone of a cron expression; a schedule's zone is schedule.timezone)")
	}
	if entityKey == nil {
		l.errorf(n, path, "missing key entity (or entities)")
	}
	if t.Field == "" {
		for _, k := range []*yaml.Node{fromKey, toKey} {
			if k != nil {
				l.errorf(k, yamlx.Join(path, k.Value), "%s needs field (the field whose change fires the rule)", k.Value)
			}
		}
	}
	r.On = t
}

// dottedPath decodes a path value at n: a string that check accepts
// (check returns the problem, "" for none), with indexes as [N] or .N
// (example shows both), as a dotted path; errors are reported at n.
func (l *loader) dottedPath(n *yaml.Node, path string, check func(string) string, example string) (string, bool) {
	s, ok := l.str(n, path)
	if !ok {
		return "", false
	}
	if msg := check(s); msg != "" {
		l.errorf(n, path, "%s", msg)
		return "", false
	}
	dotted, ok := templates.DottedPath(s)
	if !ok {
		l.errorf(n, path, "%q: an index is [N] or .N (%s)", s, example)
		return "", false
	}
	return dotted, true
}

func checkFieldPath(s string) string {
	if s == "" {
		return "must not be empty"
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return fmt.Sprintf("%q is not a dotted path (empty segment)", s)
		}
	}
	return ""
}

// canonicalYAMLScalar is the text a from/to value is compared as: strings
// as written, numbers in canonical form (5.0 and 5 are both "5"), null as
// "" (absent).
// ambiguousNumber reports whether a plain YAML number is written other
// than in plain decimal: a leading zero (007), a base prefix (0x1F, 0o17,
// 0b11), a digit separator (1_000) or a plus sign.
func ambiguousNumber(s string) bool {
	t := strings.TrimLeft(s, "+-")
	if strings.HasPrefix(s, "+") || strings.Contains(t, "_") {
		return true
	}
	if len(t) > 1 && t[0] == '0' && t[1] != '.' && t[1] != 'e' && t[1] != 'E' {
		return true // 007, 0x1F, 0o17, 0b11
	}
	return false
}

func canonicalYAMLScalar(n *yaml.Node) string {
	switch n.ShortTag() {
	case "!!null":
		return ""
	case "!!int":
		var i int64
		if n.Decode(&i) == nil {
			return strconv.FormatInt(i, 10)
		}
	case "!!float":
		var f float64
		if n.Decode(&f) == nil {
			return string(appendFloat(nil, f))
		}
	case "!!bool":
		var b bool
		if n.Decode(&b) == nil {
			return strconv.FormatBool(b)
		}
	}
	return n.Value
}

func (l *loader) decodeActions(r *Rule, n *yaml.Node, path string) {
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, path, "expected a list of actions, found %s", yamlx.KindName(n))
		return
	}
	if len(n.Content) == 0 {
		l.errorf(n, path, "a rule needs at least one action")
		return
	}
	maxActions := l.opts.MaxActions
	if maxActions <= 0 {
		maxActions = DefaultMaxActions
	}
	if len(n.Content) > maxActions {
		l.errorf(n.Content[maxActions], fmt.Sprintf("%s[%d]", path, maxActions), "a rule has %d actions, more than the limit of %d", len(n.Content), maxActions)
		return
	}
	for j, an := range n.Content {
		an = resolve(an)
		p := fmt.Sprintf("%s[%d]", path, j)
		if an.Kind != yaml.MappingNode {
			l.errorf(an, p, "expected an action mapping with a type, found %s", yamlx.KindName(an))
			continue
		}
		a := Action{Line: an.Line, Column: an.Column}
		var typeNode *yaml.Node
		rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: an.Style, Line: an.Line, Column: an.Column}
		for i := 0; i+1 < len(an.Content); i += 2 {
			k, v := resolve(an.Content[i]), resolve(an.Content[i+1])
			switch {
			case k.Kind == yaml.ScalarNode && k.Value == "type":
				if s, ok := l.str(v, p+".type"); ok {
					a.Type, typeNode = s, v
				} else {
					typeNode = v
				}
			case k.Kind == yaml.ScalarNode && k.Value == "retry":
				if rt, ok := l.decodeRetry(v, p+".retry"); ok {
					a.Retry = &rt
				}
			default:
				rest.Content = append(rest.Content, an.Content[i], an.Content[i+1])
			}
		}
		if typeNode == nil {
			l.errorf(an, p, "missing key type (webhook or a plugin's action type)")
			continue
		}
		if a.Type == "" {
			continue
		}
		if l.opts.Actions == nil {
			if !l.unknownType(typeNode, p, a.Type, nil) {
				l.errorf(typeNode, p+".type", "unknown action type %q (no action types are registered)", a.Type)
			}
			continue
		}
		if lister, ok := l.opts.Actions.(interface{ Types() []string }); ok {
			types := lister.Types()
			if !slices.Contains(types, a.Type) {
				if !l.unknownType(typeNode, p, a.Type, types) {
					l.errorf(typeNode, p+".type", "unknown action type %q%s (known: %s)", a.Type, suggest(a.Type, types), strings.Join(types, ", "))
				}
				continue
			}
		}
		if l.refusesFiles(a.Type, rest, p) {
			continue
		}
		cfg, err := l.decodeAction(a.Type, rest)
		if err != nil {
			l.actionErrors(err, p, typeNode)
			continue
		}
		a.Config = cfg
		r.Actions = append(r.Actions, a)
	}
}

// unknownType passes an action type not known here to
// LoadOptions.UnknownActions, unless that is not set or the type is a
// likely typo of a known one; it reports whether it did.
func (l *loader) unknownType(n *yaml.Node, path, typ string, known []string) bool {
	if l.opts.UnknownActions == nil || suggest(typ, known) != "" {
		return false
	}
	l.opts.UnknownActions(&Error{File: l.file, Line: n.Line, Column: n.Column, Path: path + ".type",
		Msg: fmt.Sprintf("action type %q is not known here (no plugin provides it): its keys are not checked, and serve refuses it unless a plugin does", typ)})
	return true
}

// refusesFiles reports (as errors at their positions) the keys of an
// action of type typ that name files on this machine, when the options
// say rules may not.
func (l *loader) refusesFiles(typ string, n *yaml.Node, path string) bool {
	fk, ok := l.opts.Actions.(interface{ FileKeys(typ string) []string })
	if !l.opts.NoServerFiles || !ok {
		return false
	}
	refused := false
	for _, key := range fk.FileKeys(typ) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode && k.Value == key {
				l.errorf(k, path+"."+key, "names a file on the server, which only rule files may (their operator wrote them); rules written through the API cannot")
				refused = true
			}
		}
	}
	return refused
}

// decodeAction calls the decoder, turning a panic into an error: a broken
// action factory must not take the whole load down.
func (l *loader) decodeAction(typ string, n *yaml.Node) (cfg any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("action type %q failed to decode its config: %v", typ, p)
		}
	}()
	return l.opts.Actions.Decode(typ, n)
}

type positioned interface {
	error
	Position() (line, column int)
}

// actionErrors reports an action decoder's error(s) at their positions.
func (l *loader) actionErrors(err error, path string, typeNode *yaml.Node) {
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			l.actionErrors(e, path, typeNode)
		}
		return
	}
	var pe positioned
	if errors.As(err, &pe) {
		line, col := pe.Position()
		p := path
		msg := pe.Error()
		msg = strings.TrimPrefix(msg, fmt.Sprintf("%d:%d: ", line, col))
		if l.expanded != nil {
			col = l.writtenCol(line, col)
		}
		if f, ok := pe.(interface{ Field() string }); ok && f.Field() != "" {
			p = path + "." + f.Field()
			msg = strings.TrimPrefix(msg, f.Field()+": ")
		}
		if e := l.errAt(line, col, p, msg); e != nil {
			e.Err = err
		}
		return
	}
	l.errorf(typeNode, path, "%s", err.Error())
}
