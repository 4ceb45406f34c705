package cache_test

import (
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/cache"
)

// A kind builds its member cache keys with Identity over everything the
// answer depends on, the question as NormalizeQuestion spells it. Two
// spellings of one question then share a cache entry; another model,
// another provider, or a question that means something else (another
// case, another final mark) does not.
func ExampleIdentity() {
	fmt.Printf("%q\n", cache.NormalizeQuestion("  What are the best\tAI  models?\r\n"))

	type memberID struct{ Kind, Question, Model, Provider, Date, Label string }
	key := func(id memberID) string {
		id.Question = cache.NormalizeQuestion(id.Question)
		return cache.Identity(id)
	}
	id := memberID{
		Kind:     "timetravel",
		Question: "What are the best AI models?",
		Model:    "gpt-4o",
		Provider: "openai https://api.example/v1",
		Date:     "2024-05-01",
		Label:    "May 2024",
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

	fmt.Println(key(id) == key(respelled))
	fmt.Println(key(id) == key(otherModel))
	fmt.Println(key(id) == key(otherProvider))
	fmt.Println(key(id) == key(otherQuestion))
	fmt.Println(key(id) == key(lowerCase))
	// Output:
	// "What are the best AI models?"
	// true
	// false
	// false
	// false
	// false
}
