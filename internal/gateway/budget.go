package gateway

import (
	"context"
	"errors"

	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// ErrBudgetExhausted fails a call whose owner's token budget has no room
// for its next request. Its text is all a client is told.
var ErrBudgetExhausted = errors.New("the API key's token budget for today is used up")

// Budget pays for requests from their owners' token budgets (package quota
// has one on Redis).
type Budget interface {
	// Reserve charges tokens to owner before a request is sent. It fails
	// with an error for which errors.Is(err, ErrBudgetExhausted) holds when
	// the budget has no room for them, having charged nothing; other
	// errors say the budget could not be read. settle corrects the charge
	// to the tokens the request used; it is called once, after the request.
	Reserve(ctx context.Context, owner string, tokens int) (settle func(used int), err error)
}

type ownerKey struct{}

// WithOwner returns ctx for calls made on behalf of owner (an API key id):
// their requests are paid for from owner's token budget (Options.Budget).
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// OwnerFrom returns the owner WithOwner put on ctx, or "".
func OwnerFrom(ctx context.Context) string {
	owner, _ := ctx.Value(ownerKey{}).(string)
	return owner
}

// outcomeBudgetExhausted is the outcome label of metrics.LLMRequests of a
// request that was not sent because its owner's budget refused it.
const outcomeBudgetExhausted = "budget_exhausted"

// reserve charges the estimated tokens of a request of model to the owner
// of ctx, and returns the function that settles the charge with the
// request's response (never nil). Without a budget or an owner nothing is
// charged. A refusal is counted in the metrics and returned as
// ErrBudgetExhausted.
func (g *Gateway) reserve(ctx context.Context, model string, tokens int) (func(llm.Response), error) {
	owner := OwnerFrom(ctx)
	if g.budget == nil || owner == "" {
		return func(llm.Response) {}, nil
	}
	settle, err := g.budget.Reserve(ctx, owner, tokens)
	if errors.Is(err, ErrBudgetExhausted) {
		metrics.LLMRequests.WithLabelValues(g.route(model).name, model, outcomeBudgetExhausted).Inc()
		llm.LoggerFrom(ctx, g.log).Info("llm call refused: the token budget is used up", "owner", owner, "llm_model", model, "tokens", tokens)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	return func(resp llm.Response) {
		// The provider's count when it gave one; else the estimate: the
		// request was sent, and may have been billed.
		used := resp.PromptTokens + resp.CompletionTokens
		if used <= 0 {
			used = tokens
		}
		settle(used)
	}, nil
}
