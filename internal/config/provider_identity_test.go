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

// ProviderList is the one definition of the provider list: the resolved
// Providers, or, in an LLM built by hand without them, the provider of the
// OPENAI_* fields, as LoadFrom would have resolved it.
func TestProviderList(t *testing.T) {
	t.Parallel()
	loaded, err := LoadFrom(map[string]string{"OPENAI_BASE_URL": "https://llm.example/v1", "OPENAI_API_KEY": "k", "LLM_MAX_IN_FLIGHT": "7"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		llm  LLM
		want Provider
	}{
		{"loaded", loaded.LLM, loaded.LLM.Providers[0]},
		{"built by hand", LLM{BaseURL: "https://llm.example/v1", APIKey: "k", APIType: "openai", APIVersion: loaded.LLM.APIVersion, MaxInFlight: 7}, loaded.LLM.Providers[0]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.llm.ProviderList()
			if len(got) != 1 || got[0].Name != tt.want.Name || got[0].BaseURL != tt.want.BaseURL || got[0].APIKey != tt.want.APIKey ||
				got[0].APIType != tt.want.APIType || got[0].MaxInFlight != tt.want.MaxInFlight {
				t.Errorf("providers %+v, want [%+v]", got, tt.want)
			}
		})
	}
}
