package limit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/pause"
)

// ErrNoCapacity: a Gate had no capacity within the wait allowed.
var ErrNoCapacity = errors.New("no capacity")

// NoCapacityError says which limit kept a Gate closed and, when it can
// tell, how long until it opens.
type NoCapacityError struct {
	Gate  string
	Limit string
	// RetryAfter estimates the wait for capacity; 0 when unknown.
	RetryAfter time.Duration
}

func (e *NoCapacityError) Error() string {
	return fmt.Sprintf("no capacity at %s: %s reached", e.Gate, e.Limit)
}

// Is makes errors.Is(err, ErrNoCapacity) true.
func (e *NoCapacityError) Is(target error) bool { return target == ErrNoCapacity }

// RetryHint returns the estimated wait.
func (e *NoCapacityError) RetryHint() time.Duration { return e.RetryAfter }

// Limits are the capacity of a Gate.
type Limits struct {
	// MaxInFlight caps the passes held at once (at least 1).
	MaxInFlight int
	// RPM and TPM limit passes and tokens per minute; 0 means no limit.
	RPM, TPM int
}

// Gate guards one provider: requests in flight (a Semaphore), requests per
// minute and tokens per minute (Rates), all shared by every process.
type Gate struct {
	name     string
	sem      *Semaphore
	rpm, tpm *Rate
	log      *slog.Logger
}

// NewGate returns the gate called name with the given limits. Its Redis
// keys are tt:limit:{name}:inflight, rate:tt:limit:{name}:rpm and
// rate:tt:limit:{name}:tpm.
func NewGate(rdb redis.UniversalClient, name string, l Limits, o SemaphoreOptions) *Gate {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Gate{
		name: name,
		sem:  NewSemaphore(rdb, name, l.MaxInFlight, o),
		rpm:  NewRate(rdb, "tt:limit:{"+name+"}:rpm", l.RPM),
		tpm:  NewRate(rdb, "tt:limit:{"+name+"}:tpm", l.TPM),
		log:  o.Log,
	}
}

// Name returns the gate's name.
func (g *Gate) Name() string { return g.name }

// Semaphore returns the gate's in-flight semaphore.
func (g *Gate) Semaphore() *Semaphore { return g.sem }

// Enter waits up to maxWait for a pass: one request of the requests per
// minute, tokens of the tokens per minute (an estimate, corrected by
// Pass.Leave), and a slot in flight. The rates are spent first, so that no
// slot is held while they refill. It returns a *NoCapacityError (ErrNoCapacity)
// when the wait would be longer, with nothing spent, or ctx's error.
func (g *Gate) Enter(ctx context.Context, tokens int, maxWait time.Duration) (*Pass, error) {
	deadline := time.Now().Add(maxWait)
	for {
		limit, wait, err := g.takeRates(ctx, tokens)
		if err != nil {
			return nil, err
		}
		if limit == "" {
			break
		}
		if time.Until(deadline) < wait {
			return nil, &NoCapacityError{Gate: g.name, Limit: limit, RetryAfter: wait}
		}
		// The limiter says when the budget has room: wait that long, plus a
		// little so that waiters do not come back at the same instant.
		if err := pause.For(ctx, wait+mrand.N(wait/10+time.Millisecond)); err != nil {
			return nil, err
		}
	}
	lease, err := g.sem.Acquire(ctx, time.Until(deadline))
	if err != nil {
		g.refund(tokens)
		if errors.Is(err, ErrFull) {
			return nil, &NoCapacityError{Gate: g.name, Limit: fmt.Sprintf("in-flight cap of %d", g.sem.Cap())}
		}
		return nil, err
	}
	return &Pass{g: g, lease: lease, tokens: tokens}, nil
}

// takeRates spends one request and tokens, or neither; it returns the limit
// that refused and the wait it names.
func (g *Gate) takeRates(ctx context.Context, tokens int) (string, time.Duration, error) {
	ok, wait, err := g.rpm.Take(ctx, 1)
	if err != nil {
		return "", 0, err
	}
	if !ok {
		return fmt.Sprintf("%d requests per minute", g.rpm.Per()), wait, nil
	}
	ok, wait, err = g.tpm.Take(ctx, tokens)
	if err != nil || !ok {
		if rerr := g.rpm.Adjust(ctx, -1); rerr != nil {
			g.log.Warn("gate: give back a request", "gate", g.name, "err", rerr)
		}
	}
	if err != nil {
		return "", 0, err
	}
	if !ok {
		return fmt.Sprintf("%d tokens per minute", g.tpm.Per()), wait, nil
	}
	return "", 0, nil
}

// refund gives back a request and tokens spent for a pass not granted.
func (g *Gate) refund(tokens int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := errors.Join(g.rpm.Adjust(ctx, -1), g.tpm.Adjust(ctx, -tokens)); err != nil {
		g.log.Warn("gate: refund", "gate", g.name, "err", err)
	}
}

// Pass is a granted request: a slot in flight, held until Leave.
type Pass struct {
	g      *Gate
	lease  *Lease
	tokens int
}

// Leave frees the slot and corrects the tokens spent to used, the real
// usage; a negative used means unknown (the estimate stands). It is safe to
// call more than once; later calls do nothing. It uses a context of its own:
// the slot must be freed even when the caller's context has ended.
func (p *Pass) Leave(used int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.lease.Release(ctx); err != nil {
		p.g.log.Warn("gate: release", "gate", p.g.name, "err", err)
	}
	if used >= 0 && p.tokens >= 0 {
		if err := p.g.tpm.Adjust(ctx, used-p.tokens); err != nil {
			p.g.log.Warn("gate: reconcile tokens", "gate", p.g.name, "err", err)
		}
	}
	p.tokens = -1
}

// Cancel frees the slot of a pass that was not used and gives back its
// request and tokens. Like Leave, it does something only once.
func (p *Pass) Cancel() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.lease.Release(ctx); err != nil {
		p.g.log.Warn("gate: release", "gate", p.g.name, "err", err)
	}
	if p.tokens >= 0 {
		p.g.refund(p.tokens)
		p.tokens = -1
	}
}
