// Package client is the Go client of the time-travel HTTP API (docs/api.md).
// Given a question, a time-travel job asks an LLM how it would have answered
// at several points in time, extracts the key changes between consecutive
// answers and writes a narrative of how the answer evolved; the job runs
// asynchronously and its answers stream as Server-Sent Events while they are
// written.
//
// A Client submits jobs ([Client.Submit]), reads and cancels them
// ([Client.Job], [Client.Cancel]), lists the caller's recent jobs a page
// at a time ([Client.Jobs]), reads a job's event stream, either over
// one connection ([Client.Events]) or across dropped connections
// ([Client.Follow]), and reads the caller's quotas ([Client.Usage]) and the
// models it may ask for ([Client.Models]). The package depends on the
// standard library only; its types mirror the API's JSON member for member.
//
//	c := client.New("https://timetravel.example.com", client.WithAPIKey(key))
//	acc, err := c.Submit(ctx, client.SubmitRequest{Question: "What are the best AI models?"})
//	if err != nil {
//		return err
//	}
//	_, err = c.Follow(ctx, acc.JobID, func(e client.Event) error {
//		if e.Name == client.EventSnapshotDelta {
//			var d client.SnapshotDeltaData
//			if err := e.Decode(&d); err != nil {
//				return err
//			}
//			fmt.Print(d.Text)
//		}
//		return nil
//	})
//
// Follow returns nil once the terminal job.completed event has been handed
// over; [Client.Job] then shows the whole job.
//
// A non-2xx answer is returned as an [*APIError] carrying the API's error
// code ([IsCode]); a 429 also names the quota reached and the wait the server
// asks for:
//
//	var ae *client.APIError
//	if errors.As(err, &ae) && ae.Code == client.CodeQuotaExceeded {
//		time.Sleep(ae.RetryAfter) // then submit again
//	}
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
