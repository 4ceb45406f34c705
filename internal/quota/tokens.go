package quota

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/gateway"
)

// ErrBudgetExhausted: the owner's token budget for the day has not room for
// the tokens asked for.
var ErrBudgetExhausted = errors.New("token budget for today exhausted")

// tokensTTL keeps a day's counter through the next day, so that requests
// that straddle midnight still settle on it, and then lets it go.
const tokensTTL = 48 * time.Hour

// day is the UTC day's length: the window of the token budget.
const day = 24 * time.Hour

// untilMidnight is the time from now to the next UTC midnight, when the
// budget starts afresh.
func untilMidnight(now time.Time) time.Duration {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
	return next.Sub(now)
}

// CheckTokens tells whether owner has used less than budget tokens today
// (UTC); when not, it is refused until the next UTC midnight. budget <= 0
// is no budget: allowed, without a Redis call. It takes nothing.
func (q *Quota) CheckTokens(ctx context.Context, owner string, budget int64) (Decision, error) {
	d := Decision{Allowed: true, Limit: LimitTokens}
	if budget <= 0 {
		return d, nil
	}
	if err := checkOwner(owner); err != nil {
		return Decision{}, err
	}
	now := q.now()
	used, err := q.rdb.Get(ctx, tokensKeyAt(owner, now)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Decision{}, fmt.Errorf("quota: tokens of %s: %w", owner, err)
	}
	d.Quota, d.Window, d.Reset = budget, day, untilMidnight(now)
	d.Remaining = max(budget-used, 0)
	if used >= budget {
		d.Allowed, d.RetryAfter = false, d.Reset
	}
	return d, nil
}

// reserveScript adds ARGV[1] tokens to the day's counter KEYS[1] unless
// the budget ARGV[2] (0: none) is used up already; a new counter lives
// ARGV[3] ms. It returns {1, used} or {0, used}.
//
// A reservation is refused only once the budget is used up, not when it
// would pass it: a request's reservation is its bound (the whole
// max_tokens), far above what it uses, and refusing it below the budget
// would leave budgets that can never be spent, with admission (CheckTokens)
// still saying yes. The overshoot is bounded by the requests in flight.
//
// Cost: the script adds first and takes the tokens back on a refusal
// (INCRBY's reply is the count before plus the tokens, so no GET is
// needed), and asks for the counter's expiry only when the count before
// was 0: a counter is created only here, with its expiry in the same
// script, so one that held tokens has its expiry already. A reservation
// costs 2 commands (the script and INCRBY), 3 when it is refused or the
// counter was 0, 4 when it creates the counter.
var reserveScript = redis.NewScript(`
local n, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = redis.call('INCRBY', KEYS[1], n)
if budget > 0 and used - n >= budget then
  if n ~= 0 then redis.call('INCRBY', KEYS[1], -n) end
  return {0, used - n}
end
if used == n and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
`)

// settleScript adds ARGV[1] (never 0; possibly negative) to the counter
// KEYS[1], never below 0, if the counter still exists: a counter that
// expired is not brought back without its expiry.
//
// Cost: it adds at once and repairs the rare results that call for it, so
// a settlement costs 2 commands (the script and INCRBY). The count before
// was 0 or missing only when INCRBY replies ARGV[1]; then a counter without
// expiry is one INCRBY just created (every counter gets its expiry where it
// is created, in reserveScript) and is deleted again. A count that went
// below 0 is brought back to 0, its expiry kept. The script is atomic: no
// one sees the intermediate values.
var settleScript = redis.NewScript(`
local d = tonumber(ARGV[1])
local v = redis.call('INCRBY', KEYS[1], d)
if v == d and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('DEL', KEYS[1])
  return 0
end
if v < 0 then
  redis.call('INCRBY', KEYS[1], -v)
  return 0
end
return v
`)

// Reservation is tokens charged ahead of their use, on the UTC day it was
// made in; Settle corrects the charge to the use.
type Reservation struct {
	q      *Quota
	key    string // the day's counter
	owner  string
	tokens int

	mu      sync.Mutex
	settled bool
}

// Tokens is the reservation's charge.
func (r *Reservation) Tokens() int { return r.tokens }

// ReserveTokens charges tokens to owner's counter of today (UTC), at once,
// unless the budget is used up already: then it fails with
// ErrBudgetExhausted and charges nothing. budget <= 0 is no budget: the
// tokens are charged all the same, so that usage is known.
func (q *Quota) ReserveTokens(ctx context.Context, owner string, budget int64, tokens int) (*Reservation, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	tokens = max(tokens, 0)
	key := tokensKeyAt(owner, q.now())
	res, err := reserveScript.Run(ctx, q.rdb, []string{key}, tokens, max(budget, 0), tokensTTL.Milliseconds()).Slice()
	if err != nil {
		return nil, fmt.Errorf("quota: reserve %d tokens of %s: %w", tokens, owner, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("quota: reserve %d tokens of %s: unexpected reply %v", tokens, owner, res)
	}
	if toInt(res[0]) != 1 {
		return nil, fmt.Errorf("%w: %s has used %d of %d tokens, %d more asked", ErrBudgetExhausted, owner, toInt(res[1]), budget, tokens)
	}
	return &Reservation{q: q, key: key, owner: owner, tokens: tokens}, nil
}

// Settle corrects the reservation's charge to used tokens, on the day the
// reservation was made in; used < 0 means the use is unknown, and the
// reservation stays the charge. Once a Settle has succeeded, later ones do
// nothing; a failed one may be tried again.
func (r *Reservation) Settle(ctx context.Context, used int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.settled {
		return nil
	}
	if used >= 0 && used != r.tokens {
		if err := settleScript.Run(ctx, r.q.rdb, []string{r.key}, used-r.tokens).Err(); err != nil {
			return fmt.Errorf("quota: settle %d tokens of %s (%d reserved): %w", used, r.owner, r.tokens, err)
		}
	}
	r.settled = true
	return nil
}

// settleTimeout bounds the settlement of a request's tokens, which runs
// after the request whatever became of its caller.
const settleTimeout = 2 * time.Second

// Budget returns q's token budgets as the gateway's: each request reserves
// its tokens from the budget limitFor gives its owner (0: no budget; the
// tokens are counted all the same) and settles on its use. A refusal is
// gateway.ErrBudgetExhausted (and ErrBudgetExhausted); errors of limitFor
// and of Redis are returned as they are. A settlement that fails (Redis
// out of reach) leaves the reservation as the charge, as for an unknown
// use.
func (q *Quota) Budget(limitFor func(ctx context.Context, owner string) (int64, error)) gateway.Budget {
	return tokenBudget{q: q, limitFor: limitFor}
}

type tokenBudget struct {
	q        *Quota
	limitFor func(ctx context.Context, owner string) (int64, error)
}

func (b tokenBudget) Reserve(ctx context.Context, owner string, tokens int) (func(used int), error) {
	budget, err := b.limitFor(ctx, owner)
	if err != nil {
		return nil, fmt.Errorf("quota: token budget of %s: %w", owner, err)
	}
	r, err := b.q.ReserveTokens(ctx, owner, budget, tokens)
	if errors.Is(err, ErrBudgetExhausted) {
		return nil, fmt.Errorf("%w: %w", gateway.ErrBudgetExhausted, err)
	}
	if err != nil {
		return nil, err
	}
	return func(used int) {
		// The request has run: its use is charged even when its caller
		// has gone.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		_ = r.Settle(sctx, used)
	}, nil
}
