package config

import "testing"

func TestProviderIdentity(t *testing.T) {
	t.Parallel()
	const providers = `[
		{"name": "first", "base_url": "https://first.example/v1", "models": ["a-1", "a-2"]},
		{"name": "second", "base_url": "https://second.example/v1", "models": ["b-1"]}
	]`
	tests := []struct {
		name  string
		env   map[string]string
		model string
		want  string
	}{
		{"defaults", map[string]string{}, "gpt-4o", "default https://api.openai.com/v1"},
		{"default provider at another base URL", map[string]string{"OPENAI_BASE_URL": "https://llm.example/v1"}, "gpt-4o", "default https://llm.example/v1"},
		{"default provider serves any model", map[string]string{"OPENAI_BASE_URL": "https://llm.example/v1"}, "anything", "default https://llm.example/v1"},
		{"model listed by the first provider", map[string]string{"LLM_PROVIDERS": providers}, "a-2", "first https://first.example/v1"},
		{"model listed by another provider", map[string]string{"LLM_PROVIDERS": providers}, "b-1", "second https://second.example/v1"},
		{"unlisted model: the first provider", map[string]string{"LLM_PROVIDERS": providers}, "c-1", "first https://first.example/v1"},
		{"empty model: the first provider", map[string]string{"LLM_PROVIDERS": providers}, "", "first https://first.example/v1"},
		// LLM_PROVIDERS replaces the OPENAI_* provider.
		{"providers win over OPENAI_BASE_URL", map[string]string{"LLM_PROVIDERS": providers, "OPENAI_BASE_URL": "https://llm.example/v1"}, "c-1", "first https://first.example/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadFrom(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.LLM.ProviderIdentity(tt.model); got != tt.want {
				t.Errorf("ProviderIdentity(%q) = %q, want %q", tt.model, got, tt.want)
			}
		})
	}
}

// An LLM that LoadFrom did not resolve (Providers empty) is served by the
// default provider of its OPENAI_* fields, as the gateway does.
func TestProviderIdentityUnresolved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		llm  LLM
		want string
	}{
		{"base URL", LLM{BaseURL: "https://llm.example/v1"}, "default https://llm.example/v1"},
		{"no base URL", LLM{}, "default "},
		{"a listed provider wins", LLM{BaseURL: "https://llm.example/v1", Providers: []Provider{{Name: "p", BaseURL: "https://p.example/v1"}}}, "p https://p.example/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.llm.ProviderIdentity("m"); got != tt.want {
				t.Errorf("ProviderIdentity = %q, want %q", got, tt.want)
			}
		})
	}
}
