package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// caller is who makes a request: the owner of the jobs it submits and the
// limits it runs under.
type caller struct {
	// owner is the API key's id, job.AnonymousOwner (no key, on a server
	// that does not require one) or job.SystemOwner (the admin token).
	owner  string
	name   string // the key's name; empty for the others
	limits auth.Limits
	// admin callers (the admin token) may read every job and warm the
	// caches; they have no quotas.
	admin bool
	// job, when set, is the one job this caller may reach: it came with an
	// events token, not a key.
	job string
}

type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerOf(c *gin.Context) caller {
	v, _ := c.Request.Context().Value(callerKey{}).(caller)
	return v
}

// owns reports whether the caller may see the job whose head is h. A job
// is reached only by its owner (and the admin); others get the 404 of an
// unknown job, so that ids cannot be probed.
func (c caller) owns(h store.Head) bool {
	if c.admin {
		return true
	}
	if c.job != "" && c.job != h.ID {
		return false
	}
	owner := h.Owner
	if owner == "" {
		owner = job.AnonymousOwner // stored before jobs had owners
	}
	return owner == c.owner
}

// limits of a caller: its key's own, or the server's defaults.
func (s *Server) defaultLimits() auth.Limits {
	a := s.cfg.Access
	return auth.Limits{
		SubmissionsPerMinute: a.SubmissionsPerMinute, RunningJobs: a.RunningJobs, StoredJobs: a.StoredJobs,
		SSEConnections: a.SSEPerKey, TokensPerDay: a.TokensPerDay,
	}
}

// bearerChallenge is the WWW-Authenticate of a 401 (RFC 6750).
const bearerChallenge = `Bearer realm="timetravel"`

// identify finds the request's caller: an API key (Authorization: Bearer),
// the admin token, an events token (events route only), or, when the
// server does not require keys, the anonymous caller. Bad or missing
// credentials get 401 and a JSON error that never repeats what was sent.
func (s *Server) identify(eventsRoute bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		who, ok := s.authenticate(c, eventsRoute)
		if !ok {
			return
		}
		c.Request = c.Request.WithContext(withCaller(c.Request.Context(), who))
		c.Next()
	}
}

func (s *Server) authenticate(c *gin.Context, eventsRoute bool) (caller, bool) {
	unauthorized := func(msg string) (caller, bool) {
		c.Header("WWW-Authenticate", bearerChallenge+`, error="invalid_token"`)
		abort(c, http.StatusUnauthorized, CodeUnauthorized, "", "%s", msg)
		return caller{}, false
	}
	header := c.GetHeader("Authorization")
	if header == "" {
		if tok, ok := c.GetQuery("token"); ok && eventsRoute {
			owner, err := s.tokens.verify(c.Param("id"), tok, s.now())
			if err != nil {
				return unauthorized("the events link's token is invalid or has expired: read the job again for a fresh link")
			}
			return caller{owner: owner, limits: s.limitsOf(c.Request.Context(), owner), job: c.Param("id")}, true
		}
		if s.cfg.KeysRequired() {
			c.Header("WWW-Authenticate", bearerChallenge)
			abort(c, http.StatusUnauthorized, CodeUnauthorized, "", "an API key is required: send Authorization: Bearer <key>")
			return caller{}, false
		}
		return caller{owner: job.AnonymousOwner, limits: s.defaultLimits()}, true
	}
	token, err := auth.ParseBearer(header)
	if err != nil {
		return unauthorized("the Authorization header must be Bearer <key>")
	}
	if s.cfg.Admin.Token != "" && equalSecret(token, s.cfg.Admin.Token) {
		return caller{owner: job.SystemOwner, name: "admin", admin: true}, true
	}
	key, err := s.keys.Verify(c.Request.Context(), token)
	switch {
	case errors.Is(err, auth.ErrInvalidKey):
		return unauthorized("the API key is not valid (unknown, revoked or malformed)")
	case err != nil:
		s.log.Error("verify API key", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not check the API key; try again")
		return caller{}, false
	}
	return caller{owner: key.ID, name: key.Name, limits: key.Limits.Or(s.defaultLimits())}, true
}

// limitsOf returns owner's limits (an events token names only the owner).
func (s *Server) limitsOf(ctx context.Context, owner string) auth.Limits {
	if owner == job.AnonymousOwner || owner == job.SystemOwner {
		return s.defaultLimits()
	}
	k, err := s.keys.Get(ctx, owner)
	if err != nil {
		return s.defaultLimits()
	}
	return k.Limits.Or(s.defaultLimits())
}

// adminOnly admits the admin caller only.
func adminOnly(c *gin.Context) {
	if !callerOf(c).admin {
		abort(c, http.StatusForbidden, CodeForbidden, "", "this endpoint needs the admin token")
		return
	}
	c.Next()
}

func equalSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// eventTokens sign and check the token of a job's events link: a browser
// EventSource cannot send an Authorization header, so the link itself
// carries the right to that one job's stream, for a while.
type eventTokens struct {
	secret []byte
	ttl    time.Duration
}

func newEventTokens(secret string, ttl time.Duration) eventTokens {
	k := []byte(secret)
	if len(k) == 0 {
		// No secret configured (keys optional): one per process. Links
		// then work on the replica that made them only.
		k = make([]byte, 32)
		_, _ = rand.Read(k)
	}
	return eventTokens{secret: k, ttl: ttl}
}

// sign returns the token that lets owner read jobID's events until now+ttl:
// "<owner>.<expiry unix>.<HMAC-SHA256, base64url>".
func (t eventTokens) sign(jobID, owner string, now time.Time) string {
	exp := strconv.FormatInt(now.Add(t.ttl).Unix(), 10)
	return owner + "." + exp + "." + t.mac(jobID, owner, exp)
}

func (t eventTokens) mac(jobID, owner, exp string) string {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte("events\x00" + jobID + "\x00" + owner + "\x00" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var errBadToken = errors.New("invalid events token")

// verify returns the owner a token was signed for, if it is for jobID and
// has not expired.
func (t eventTokens) verify(jobID, token string, now time.Time) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 256 {
		return "", errBadToken
	}
	owner, exp, sig := parts[0], parts[1], parts[2]
	if !hmac.Equal([]byte(sig), []byte(t.mac(jobID, owner, exp))) {
		return "", errBadToken
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() > e {
		return "", errBadToken
	}
	return owner, nil
}
