package ensemble

import (
	"reflect"

	"github.com/timetravel-ai/timetravel/internal/events"
)

// AcceptedFields are the fields an ensemble adds to job.accepted
// (Accepted).
type AcceptedFields struct {
	Models         []string `json:"models"`
	SynthesisModel string   `json:"synthesis_model,omitempty"`
}

var _ events.Declarer = Kind{}

// EventContract implements events.Declarer: the types of the ensemble's
// event payloads (events.Catalog lists its events). Its members' only
// identity is their index and label (the model).
func (Kind) EventContract() events.Contract {
	return events.Contract{
		Accepted: reflect.TypeFor[AcceptedFields](),
		Parts: []events.PartContract{
			{Name: PartSynthesis, Stream: true},
			{Name: PartAnalysis, Value: reflect.TypeFor[Analysis]()},
		},
	}
}
