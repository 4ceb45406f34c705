// Package client is a Go client for the time-travel HTTP API (docs/api.md).
//
// A Client submits jobs ([Client.Submit]), reads and cancels them
// ([Client.Job], [Client.Cancel]) and reads a job's Server-Sent Events
// stream, either over one connection ([Client.Events]) or across dropped
// connections ([Client.Follow]). A non-2xx answer is returned as an
// [*APIError] carrying the API's error code.
//
// The stream parser follows the WHATWG HTML "event stream interpretation":
// lines may end in CRLF, LF or CR; comments (heartbeats) are skipped; data
// lines of one event are joined with "\n"; the event id persists from one
// event to the next until the server changes it; an event without an
// "event:" field is named "message"; an event cut off by the end of the
// stream is never delivered.
//
// A Client is safe for concurrent use. It sets no overall request timeout, so
// that streams can stay open; bound calls with their context.
package client
