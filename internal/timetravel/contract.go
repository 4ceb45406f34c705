package timetravel

import (
	"reflect"

	"github.com/timetravel-ai/timetravel/internal/events"
)

// SnapshotRef is a snapshot's Ref (job.Member.Ref) as its events carry it,
// beside its index and label.
type SnapshotRef struct {
	Date string `json:"date"`
}

// AcceptedFields are the fields time travel adds to job.accepted (Accepted).
type AcceptedFields struct {
	Complexity Complexity     `json:"complexity"`
	TimePoints []TimePointRef `json:"time_points"`
}

var _ events.Declarer = Kind{}

// EventContract implements events.Declarer: the types of time travel's
// event payloads (events.Catalog lists its events).
func (Kind) EventContract() events.Contract {
	return events.Contract{
		Ref:      reflect.TypeFor[SnapshotRef](),
		Accepted: reflect.TypeFor[AcceptedFields](),
		Parts: []events.PartContract{
			{Name: PartKeyChanges, Value: reflect.TypeFor[[]KeyChange]()},
			{Name: PartNarrative, Stream: true},
		},
	}
}
