// Package contract holds the test of the wire contract: the events of a
// job's stream as package events defines them (events.Catalog, for each
// registered kind) against what the store's Lua scripts really write on a
// real Redis, the public Go client's event names and payload types,
// docs/api.md's event tables and the OpenAPI document's event schemas. A
// name or a payload member that differs between any two of them fails it.
// It has tests only.
package contract
