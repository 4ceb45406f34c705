package llmsim_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"

	openai "github.com/sashabaranov/go-openai"

	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// Start the simulator in a test and call it with the go-openai client. The
// zero Config answers at once; set TTFT, TokensPerSecond or Latency to
// simulate a slow provider.
func Example() {
	sim := llmsim.New(llmsim.Config{})
	ts := httptest.NewServer(sim)
	defer ts.Close()

	cfg := openai.DefaultConfig("unused-key")
	cfg.BaseURL = ts.URL + "/v1"
	client := openai.NewClientWithConfig(cfg)

	resp, err := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "sim-snapshot",
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: "Answer as if today were 2023-03-15."},
			{Role: openai.ChatMessageRoleUser, Content: "What are the best AI models?"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	text := resp.Choices[0].Message.Content
	firstSentence, _, _ := strings.Cut(text, ". ")
	fmt.Println(firstSentence + ".")
	fmt.Println("requests:", sim.Stats().Total.Requests)
	// Output:
	// [Simulated answer] As of March 15, 2023 (2023-03-15), in answer to "What are the best AI models?", the best-known AI models were GPT-4 (OpenAI, March 2023), Claude (Anthropic, March 2023), LLaMA (Meta, February 2023) and PaLM (Google, April 2022).
	// requests: 1
}
