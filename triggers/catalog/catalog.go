package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// Limits of one catalog. A catalog is written by the operator (files) or
// through the API (PUT /v1/catalog), so each is bounded.
const (
	MaxBytes           = 1 << 20 // one catalog document (file or API body)
	MaxEntities        = 1000    // entities of a catalog (files and API together)
	MaxEventsPerEntity = 256     // events of one entity
	MaxSchemaDepth     = 32      // nesting of a schema (mappings and lists)
)

// Mode is what ingest does with an event that does not fit its schema.
type Mode string

// Validation modes.
const (
	ModeWarn   Mode = "warn"   // accepted, counted and logged (the default)
	ModeReject Mode = "reject" // refused with 400 naming the failing path
	ModeOff    Mode = "off"    // not checked
)

var (
	fileKeys  = []string{"catalog"}
	entryKeys = []string{"entity", "description", "events", "validation", "data", "previous"}
)

// Entity is one entity of a catalog.
type Entity struct {
	Name        string          `json:"entity"`
	Description string          `json:"description,omitempty"`
	Events      []string        `json:"events"`
	Validation  Mode            `json:"validation"`
	Data        json.RawMessage `json:"data,omitempty"`     // the schema as JSON
	Previous    json.RawMessage `json:"previous,omitempty"` // "" when previous has the data schema
	Source      string          `json:"source"`             // where it was declared: "file:line:col"

	data, previous *jsonschema.Schema // nil: anything
}

// Catalog is a set of entities. It is immutable and safe for concurrent
// use.
type Catalog struct {
	entities map[string]*Entity
	names    []string // sorted
}

// Error is one problem of a catalog document at a position, as the rules
// loader reports them: File ("" for a document without a name, an API
// body), Line and Column (1-based), Path ("catalog[0].data.type") and Msg.
type Error = triggers.Error

// Errors is every problem of one load, one "file:line:col: path: message"
// per line.
type Errors = triggers.Errors

// DuplicateError is a catalog entity declared twice (in two files, or by
// the API and a file).
type DuplicateError struct {
	Entity      string
	First, Then string // sources
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("%s: entity %q is declared twice (first at %s)", e.Then, e.Entity, e.First)
}

// Entities returns the entity names, sorted.
func (c *Catalog) Entities() []string {
	if c == nil {
		return nil
	}
	return append([]string(nil), c.names...)
}

// Entity returns the entity named name.
func (c *Catalog) Entity(name string) (*Entity, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.entities[name]
	return e, ok
}

// Events returns the events of entity; false when the catalog does not
// have the entity.
func (c *Catalog) Events(entity string) ([]string, bool) {
	e, ok := c.Entity(entity)
	if !ok {
		return nil, false
	}
	return append([]string(nil), e.Events...), true
}

// Len is the number of entities.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.names)
}

// All returns the entities, sorted by name.
func (c *Catalog) All() []*Entity {
	if c == nil {
		return nil
	}
	out := make([]*Entity, len(c.names))
	for i, n := range c.names {
		out[i] = c.entities[n]
	}
	return out
}

// Parse reads one catalog document (YAML or JSON). filename is used in
// error positions only ("" for none). On error it returns Errors with
// every problem found.
func Parse(filename string, src []byte) (*Catalog, error) {
	p := &parser{file: filename}
	entities := p.parse(src)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return build(entities)
}

// LoadPaths reads the catalog files of paths: a file named explicitly, and
// every *.yaml, *.yml and *.json file below a directory (hidden ones
// skipped), in lexical order. An entity declared in two files is an error.
func LoadPaths(paths []string) (*Catalog, error) {
	var files []string
	var errs Errors
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &Error{File: p, Msg: errText(err)})
			continue
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, &Error{File: path, Msg: errText(err)})
				return nil
			}
			if path != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				found = append(found, path)
			}
			return nil
		})
		sort.Strings(found)
		files = append(files, found...)
	}
	var all []*Entity
	for _, f := range files {
		src, err := readLimited(f)
		if err != nil {
			errs = append(errs, &Error{File: f, Msg: errText(err)})
			continue
		}
		p := &parser{file: f}
		all = append(all, p.parse(src)...)
		errs = append(errs, p.errs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return build(all)
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxBytes+1)) // parse reports the size
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Merge returns a catalog with the entities of both; an entity in both is
// a *DuplicateError.
func Merge(a, b *Catalog) (*Catalog, error) {
	var all []*Entity
	all = append(all, a.All()...)
	all = append(all, b.All()...)
	return build(all)
}

// Combine returns a catalog with the entities of first and those of
// second that first does not declare; shadowed lists the entities of
// second left out. Hosts use it where a running system must keep going
// with the operator's files winning over a catalog written through an
// API.
func Combine(first, second *Catalog) (c *Catalog, shadowed []string) {
	all := first.All()
	for _, e := range second.All() {
		if _, dup := first.Entity(e.Name); dup {
			shadowed = append(shadowed, e.Name)
			continue
		}
		all = append(all, e)
	}
	c, err := build(all)
	if err != nil { // only over MaxEntities: keep first alone
		return first, second.Entities()
	}
	return c, shadowed
}

func build(entities []*Entity) (*Catalog, error) {
	if len(entities) > MaxEntities {
		return nil, &Error{Msg: fmt.Sprintf("%d entities, more than the limit of %d", len(entities), MaxEntities)}
	}
	c := &Catalog{entities: make(map[string]*Entity, len(entities))}
	for _, e := range entities {
		if prev, dup := c.entities[e.Name]; dup {
			return nil, &DuplicateError{Entity: e.Name, First: prev.Source, Then: e.Source}
		}
		c.entities[e.Name] = e
		c.names = append(c.names, e.Name)
	}
	sort.Strings(c.names)
	return c, nil
}

type parser struct {
	file string
	errs Errors
}

func (p *parser) errorf(n *yaml.Node, path, format string, args ...any) {
	e := &Error{File: p.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

func (p *parser) source(n *yaml.Node) string {
	f := p.file
	if f == "" {
		f = "api"
	}
	return fmt.Sprintf("%s:%d:%d", f, n.Line, n.Column)
}

func (p *parser) parse(src []byte) []*Entity {
	if len(src) > MaxBytes {
		p.errs = append(p.errs, &Error{File: p.file, Msg: fmt.Sprintf("the catalog is larger than the limit of %d bytes", MaxBytes)})
		return nil
	}
	if !utf8.Valid(src) {
		line, col := invalidUTF8Pos(src)
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Column: col, Msg: "invalid UTF-8"})
		return nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(&extra, "", "only one YAML document per file is allowed")
		return nil
	}
	if len(doc.Content) == 0 {
		p.errs = append(p.errs, &Error{File: p.file, Line: 1, Column: 1, Msg: "empty document: expected a mapping with a catalog: list"})
		return nil
	}
	root := doc.Content[0]
	if hasAlias(root, 0) {
		p.errorf(root, "", "YAML aliases and anchors are not supported in catalogs")
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "", "expected a mapping with a catalog: list, found %s", yamlx.KindName(root))
		return nil
	}
	var list *yaml.Node
	for _, kv := range p.mapping(root, "", fileKeys) {
		list = kv[1]
	}
	if list == nil {
		p.errorf(root, "", "missing key catalog")
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, "catalog", "expected a list of entities, found %s", yamlx.KindName(list))
		return nil
	}
	if len(list.Content) > MaxEntities {
		p.errorf(list, "catalog", "%d entities, more than the limit of %d", len(list.Content), MaxEntities)
		return nil
	}
	var out []*Entity
	seen := map[string]*Entity{}
	for i, n := range list.Content {
		path := fmt.Sprintf("catalog[%d]", i)
		e := p.entity(n, path)
		if e == nil {
			continue
		}
		if prev, dup := seen[e.Name]; dup {
			p.errorf(n, path+".entity", "entity %q is declared twice (first at %s)", e.Name, prev.Source)
			continue
		}
		seen[e.Name] = e
		out = append(out, e)
	}
	return out
}

func (p *parser) yamlError(err error) {
	msg := err.Error()
	var line int
	if _, serr := fmt.Sscanf(msg, "yaml: line %d:", &line); serr == nil && line > 0 {
		_, rest, _ := strings.Cut(msg, ": ")
		_, rest, _ = strings.Cut(rest, ": ")
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Column: 1, Msg: "invalid YAML: " + rest})
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: 1, Column: 1, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")})
}

func invalidUTF8Pos(src []byte) (int, int) {
	line, col := 1, 1
	for i := 0; i < len(src); {
		r, size := utf8.DecodeRune(src[i:])
		if r == utf8.RuneError && size <= 1 {
			return line, col
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += size
	}
	return line, col
}

func hasAlias(n *yaml.Node, depth int) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	if depth > MaxSchemaDepth+8 {
		return false // reported as too deep
	}
	for _, c := range n.Content {
		if hasAlias(c, depth+1) {
			return true
		}
	}
	return false
}

// mapping returns the key/value pairs of n, reporting unknown and
// duplicate keys.
func (p *parser) mapping(n *yaml.Node, path string, known []string) [][2]*yaml.Node {
	var out [][2]*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := yamlx.Join(path, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k, path, "keys must be strings, found %s", yamlx.KindName(k))
		case seen[k.Value]:
			p.errorf(k, kp, "duplicate key")
		case known != nil && !slices.Contains(known, k.Value):
			hint := ""
			if s := templates.Closest(k.Value, known); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errorf(k, path, "unknown key %q%s (known: %s)", k.Value, hint, strings.Join(known, ", "))
		default:
			seen[k.Value] = true
			out = append(out, [2]*yaml.Node{k, v})
		}
	}
	return out
}

func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" || n.Value == "" {
		p.errorf(n, path, "expected a non-empty string, found %s", yamlx.KindName(n))
		return "", false
	}
	if len(n.Value) > templates.MaxNameLength {
		p.errorf(n, path, "is %d bytes, longer than the limit of %d", len(n.Value), templates.MaxNameLength)
		return "", false
	}
	return n.Value, true
}

func (p *parser) entity(n *yaml.Node, path string) *Entity {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "expected an entity mapping {entity, events, data}, found %s", yamlx.KindName(n))
		return nil
	}
	before := len(p.errs)
	e := &Entity{Validation: ModeWarn, Source: p.source(n)}
	var dataNode, prevNode, eventsNode *yaml.Node
	for _, kv := range p.mapping(n, path, entryKeys) {
		k, v := kv[0], kv[1]
		kp := yamlx.Join(path, k.Value)
		switch k.Value {
		case "entity":
			e.Name, _ = p.str(v, kp)
		case "description":
			if v.Kind == yaml.ScalarNode {
				e.Description = v.Value
			} else {
				p.errorf(v, kp, "expected a string, found %s", yamlx.KindName(v))
			}
		case "events":
			eventsNode = v
			e.Events = p.events(v, kp)
		case "validation":
			s, _ := p.str(v, kp)
			switch m := Mode(s); m {
			case ModeReject, ModeWarn, ModeOff:
				e.Validation = m
			default:
				if s != "" {
					p.errorf(v, kp, "unknown validation mode %q (known: reject, warn, off)", s)
				}
			}
		case "data":
			dataNode = v
		case "previous":
			prevNode = v
		}
	}
	if e.Name == "" && len(p.errs) == before {
		p.errorf(n, path, "missing key entity")
	}
	if eventsNode == nil {
		p.errorf(n, path, "missing key events (the entity's event names)")
	}
	if dataNode == nil {
		p.errorf(n, path, "missing key data (the JSON Schema of the event's data)")
	}
	if len(p.errs) > before {
		return nil
	}
	var ok bool
	if e.Data, e.data, ok = p.schema(dataNode, path+".data", e.Name, "data"); !ok {
		return nil
	}
	if prevNode != nil {
		if e.Previous, e.previous, ok = p.schema(prevNode, path+".previous", e.Name, "previous"); !ok {
			return nil
		}
	}
	return e
}

func (p *parser) events(n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.errorf(n, path, "expected a non-empty list of event names, found %s", yamlx.KindName(n))
		return nil
	}
	if len(n.Content) > MaxEventsPerEntity {
		p.errorf(n, path, "%d events, more than the limit of %d", len(n.Content), MaxEventsPerEntity)
		return nil
	}
	var out []string
	for i, it := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		s, ok := p.str(it, ip)
		if !ok {
			continue
		}
		if slices.Contains(out, s) {
			p.errorf(it, ip, "event %q is listed twice", s)
			continue
		}
		out = append(out, s)
	}
	return out
}

// noLoader refuses every $ref that is not inside the schema itself: a
// catalog written through the API must not make the server read its
// disk or the network.
type noLoader struct{}

func (noLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("only local $ref (#/…) are supported, not %q", u)
}

// schema converts a YAML schema node to JSON and compiles it.
func (p *parser) schema(n *yaml.Node, path, entity, which string) (json.RawMessage, *jsonschema.Schema, bool) {
	if depth(n, 0) > MaxSchemaDepth {
		p.errorf(n, path, "the schema is nested more than %d levels deep", MaxSchemaDepth)
		return nil, nil, false
	}
	v, err := toValue(n)
	if err != nil {
		p.errorf(n, path, "%v", err)
		return nil, nil, false
	}
	raw, err := json.Marshal(v)
	if err != nil {
		p.errorf(n, path, "%v", err)
		return nil, nil, false
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		p.errorf(n, path, "%v", err)
		return nil, nil, false
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	loc := "erpflow:///catalog/" + url.PathEscape(entity) + "/" + which + ".json"
	if err := c.AddResource(loc, doc); err != nil {
		p.errorf(n, path, "invalid schema: %v", err)
		return nil, nil, false
	}
	s, err := c.Compile(loc)
	if err != nil {
		p.schemaError(err, n, path)
		return nil, nil, false
	}
	if cost, branching := schemaCost(s, MaxSchemaCost); cost > MaxSchemaCost {
		p.errorf(n, path, "the schema is too costly to validate: with its $ref expanded it has more than %d subschemas", MaxSchemaCost)
		return nil, nil, false
	} else if branching {
		p.errorf(n, path, "the schema is too costly to validate: a recursive $ref applies more than once to one value (its cost would double at every level of the event's data)")
		return nil, nil, false
	}
	return raw, s, true
}

// schemaError reports a compile error at the schema node it names.
func (p *parser) schemaError(err error, root *yaml.Node, path string) {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			leaf := firstLeaf(ve)
			node, npath := nodeAt(root, path, leaf.InstanceLocation)
			p.errorf(node, npath, "invalid schema: %s", leaf.ErrorKind.LocalizedString(printer))
			return
		}
	}
	msg := err.Error()
	// Other compile errors name a location ".json#/json/pointer" of the
	// schema resource.
	if _, frag, ok := strings.Cut(msg, ".json#/"); ok {
		ptr := frag
		if i := strings.IndexAny(ptr, " '\")"); i >= 0 {
			ptr = ptr[:i]
		}
		node, npath := nodeAt(root, path, strings.Split(ptr, "/"))
		p.errorf(node, npath, "invalid schema: %s", strings.ReplaceAll(msg, "erpflow:///catalog/", ""))
		return
	}
	p.errorf(root, path, "invalid schema: %s", strings.ReplaceAll(msg, "erpflow:///catalog/", ""))
}

func firstLeaf(e *jsonschema.ValidationError) *jsonschema.ValidationError {
	for len(e.Causes) > 0 {
		e = e.Causes[0]
	}
	return e
}

// nodeAt finds the YAML node at a JSON pointer's tokens below root.
func nodeAt(root *yaml.Node, path string, toks []string) (*yaml.Node, string) {
	n := root
	for _, t := range toks {
		if t == "" {
			continue
		}
		t = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == t {
					next = n.Content[i+1]
					break
				}
			}
			path = yamlx.Join(path, t)
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscanf(t, "%d", &idx); err == nil && idx >= 0 && idx < len(n.Content) {
				next = n.Content[idx]
			}
			path = fmt.Sprintf("%s[%s]", path, t)
		}
		if next == nil {
			return n, path
		}
		n = next
	}
	return n, path
}

func depth(n *yaml.Node, d int) int {
	if d > MaxSchemaDepth {
		return d
	}
	best := d
	for _, c := range n.Content {
		if x := depth(c, d+1); x > best {
			best = x
		}
	}
	return best
}

// toValue converts a YAML node to the JSON value it denotes.
func toValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("%d:%d: keys must be strings", k.Line, k.Column)
			}
			v, err := toValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := toValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool", "!!int", "!!float":
			var v any
			if err := n.Decode(&v); err != nil {
				return nil, err
			}
			return v, nil
		}
		return n.Value, nil
	}
	return nil, fmt.Errorf("%d:%d: unsupported YAML node", n.Line, n.Column)
}
