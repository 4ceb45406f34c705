package worker_test

import (
	"testing"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// Every task type runs on its queue, and so do the names the previous
// version gave the tasks whose payloads did not change: a webhook or a
// warming queued before an upgrade is not left without a handler.
func TestLayoutRunsEveryTaskType(t *testing.T) {
	hs := newHarness(t, options{})
	handlers := map[string]map[string]bool{}
	for _, q := range hs.h.Layout(config.Config{SnapshotConcurrency: 1, AggregateConcurrency: 1, Webhook: config.Webhook{Concurrency: 1}}) {
		handlers[q.Name] = map[string]bool{}
		for typ, h := range q.Handlers {
			if h == nil {
				t.Errorf("queue %s: nil handler for %s", q.Name, typ)
			}
			handlers[q.Name][typ] = true
		}
	}
	for _, tt := range []struct{ queue, typ string }{
		{tasks.QueueSnapshot, tasks.TypeMember},
		{tasks.QueueAggregate, tasks.TypeAggregate},
		{tasks.QueueWebhook, tasks.TypeWebhook},
		{tasks.QueueWebhook, tasks.LegacyTypeWebhook},
		{tasks.QueueWarm, tasks.TypeMember},
		{tasks.QueueWarm, tasks.TypeAggregate},
		{tasks.QueueWarm, tasks.TypeWarm},
		{tasks.QueueWarm, tasks.LegacyTypeWarm},
	} {
		if !handlers[tt.queue][tt.typ] {
			t.Errorf("queue %s has no handler for %s", tt.queue, tt.typ)
		}
	}
}
