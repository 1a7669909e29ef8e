// Package explain answers "why did (or didn't) this rule fire, and what
// exactly would it send" for one event: the rules of a triggers.Set, each
// matched or not with the part that failed, and for matched rules (and
// disabled rules that would have matched) every action rendered with its
// secrets masked. Given the event catalog, it also says whether the event
// fits it as ingest judges it: an event ingest would refuse is explained
// as if accepted, with the note that nothing would be delivered.
//
// The server's POST /v1/events:explain and `erpflow explain` share it:
// Result is the endpoint's response body and the CLI's `-o json`, Print
// its text form, so that explaining against rule files and against a
// server's live rules reads the same.
package explain
