package kinds_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
)

// jsonNames returns the JSON field names of struct type t's fields.
func jsonNames(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// A kind's view fields sit beside the common ones in one JSON object
// (job.View.MarshalJSON joins the two without decoding): no kind may use
// a common field's name, or the object would hold a name twice.
func TestViewFieldsDoNotTakeCommonNames(t *testing.T) {
	// links is the api's (api.JobView).
	common := map[string]bool{"links": true}
	for _, n := range jsonNames(reflect.TypeFor[job.View]()) {
		common[n] = true
	}
	for _, k := range kinds.Registry().All() {
		t.Run(k.Name(), func(t *testing.T) {
			v, err := k.View(&job.Job{ID: "j", Noun: k.Noun(), Spec: job.Spec{Kind: k.Name()}})
			if err != nil {
				t.Fatal(err)
			}
			names := jsonNames(reflect.TypeOf(v))
			if len(names) == 0 {
				t.Fatalf("view %T has no JSON fields", v)
			}
			for _, n := range names {
				if common[n] {
					t.Errorf("view field %q of %T takes a common field's name", n, v)
				}
			}
			// And the joined object decodes, common fields intact.
			b, err := json.Marshal(job.View{ID: "j", Kind: k.Name(), Fields: v})
			if err != nil {
				t.Fatal(err)
			}
			var o map[string]json.RawMessage
			if err := json.Unmarshal(b, &o); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if string(o["job_id"]) != `"j"` || string(o["kind"]) != `"`+k.Name()+`"` {
				t.Errorf("common fields lost: %s", b)
			}
		})
	}
}
