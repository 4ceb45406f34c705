package cache_test

import (
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// Two spellings of one question share a cache entry; another model,
// another provider, or a question that means something else (another
// case, another final mark) does not.
func ExampleSnapshotID_Key() {
	fmt.Printf("%q\n", cache.NormalizeQuestion("  What are the best\tAI  models?\r\n"))

	id := cache.SnapshotID{
		Question:   "What are the best AI models?",
		Model:      "gpt-4o",
		Provider:   "openai https://api.example/v1",
		Date:       "2024-05-01",
		Label:      "May 2024",
		Complexity: job.ComplexityStandard,
	}
	respelled := id
	respelled.Question = " What are the  best AI models? "
	otherModel := id
	otherModel.Model = "gpt-4o-mini"
	otherProvider := id
	otherProvider.Provider = "local https://llm.example/v1"
	otherQuestion := id
	otherQuestion.Question = "What are the worst AI models?"
	lowerCase := id
	lowerCase.Question = "what are the best ai models?"

	fmt.Println(id.Key() == respelled.Key())
	fmt.Println(id.Key() == otherModel.Key())
	fmt.Println(id.Key() == otherProvider.Key())
	fmt.Println(id.Key() == otherQuestion.Key())
	fmt.Println(id.Key() == lowerCase.Key())
	// Output:
	// "What are the best AI models?"
	// true
	// false
	// false
	// false
	// false
}
