package cache_test

import (
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// Two spellings of one question share a cache entry; another model, or a
// question that means something else, does not.
func ExampleSnapshotID_Key() {
	fmt.Println(cache.NormalizeQuestion("  What are the BEST  AI models?? "))

	id := cache.SnapshotID{
		Question:   "What are the best AI models?",
		Model:      "gpt-4o",
		Date:       "2024-05-01",
		Label:      "May 2024",
		Complexity: job.ComplexityStandard,
	}
	respelled := id
	respelled.Question = "what are the best ai models"
	otherModel := id
	otherModel.Model = "gpt-4o-mini"
	otherQuestion := id
	otherQuestion.Question = "What are the worst AI models?"

	fmt.Println(id.Key() == respelled.Key())
	fmt.Println(id.Key() == otherModel.Key())
	fmt.Println(id.Key() == otherQuestion.Key())
	// Output:
	// what are the best ai models
	// true
	// false
	// false
}
