package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/quota"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// Bounds of GET /api/jobs's limit.
const (
	DefaultJobsLimit = 20
	MaxJobsLimit     = 100
)

// JobSummary is one job of GET /api/jobs: what a history shows of it.
type JobSummary struct {
	JobID      string     `json:"job_id"`
	Kind       string     `json:"kind"`
	Status     job.Status `json:"status"`
	Question   string     `json:"question"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// TotalMS is from acceptance to the end; absent until the job ends.
	TotalMS *int64 `json:"total_ms,omitempty"`
	// Cached is set when the whole job was served from the caches.
	Cached bool `json:"cached"`
}

// JobList is the answer of GET /api/jobs: a page of the caller's jobs,
// newest first, and the cursor of the next page (absent on the last).
type JobList struct {
	Jobs       []JobSummary `json:"jobs"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// listJobs answers GET /api/jobs: the caller's jobs that are still kept,
// newest first, a page at a time.
//
// The index is the caller's stored-jobs set of package quota, which the
// intake's admission records every job and handle of every caller in
// (anonymous included, quotas on or off) until it expires; warming jobs
// and the admin token's are not recorded there, so they are never listed.
// A page reads the set once and the jobs in one pipeline (store.Summaries):
// a fixed number of round trips whatever the page size. A job that
// expired before its entry did is skipped, so a page may hold fewer jobs
// than limit: only a missing next_cursor says the list has ended. The
// cursor is the position of the page's last entry, so that a job created
// or expired meanwhile neither repeats nor hides another. Positions are the
// entries' recorded expiries (creation + JOB_DEADLINE + JOB_RETENTION),
// then their ids (UUIDv7, time-ordered): newest first as long as those two
// settings stay the same; jobs made before a change of them sort by their
// old expiries, still each once.
func (s *Server) listJobs(c *gin.Context) {
	limit := DefaultJobsLimit
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxJobsLimit {
			abort(c, http.StatusBadRequest, CodeInvalidField, "limit", "limit must be a whole number from 1 to %d, got %q", MaxJobsLimit, clipID(v))
			return
		}
		limit = n
	}
	var after quota.StoredEntry
	if v, ok := c.GetQuery("cursor"); ok {
		e, err := parseCursor(v)
		if err != nil {
			abort(c, http.StatusBadRequest, CodeInvalidField, "cursor", "cursor is not one this server gave (use next_cursor of the previous page as it is)")
			return
		}
		after = e
	}
	who := callerOf(c)
	ctx := c.Request.Context()
	// One more than the page: whether there is a next page.
	entries, err := s.quota.StoredPage(ctx, who.owner, after, limit+1)
	if err != nil {
		s.log.Error("list jobs", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not list the jobs; try again")
		return
	}
	out := JobList{Jobs: []JobSummary{}}
	if len(entries) > limit {
		entries = entries[:limit]
		out.NextCursor = formatCursor(entries[limit-1])
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	sums, err := s.store.Summaries(ctx, ids)
	if err != nil {
		s.log.Error("list jobs", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not list the jobs; try again")
		return
	}
	for _, sum := range sums {
		// Expired, or (defence in depth) not the caller's, or warming.
		if sum == nil || sum.Warm || !who.owns(store.Head{ID: sum.ID, Owner: sum.Owner}) {
			continue
		}
		out.Jobs = append(out.Jobs, summaryView(sum))
	}
	c.JSON(http.StatusOK, out)
}

func summaryView(s *store.Summary) JobSummary {
	v := JobSummary{
		JobID: s.ID, Kind: s.Kind, Status: s.Status, Question: s.Question, CreatedAt: s.CreatedAt.UTC(), Cached: s.Cached,
	}
	if v.Kind == "" {
		v.Kind = "timetravel" // stored before jobs had kinds (jobkind.Registry.Of)
	}
	if !s.FinishedAt.IsZero() {
		f := s.FinishedAt.UTC()
		total := max(f.UnixMilli()-s.CreatedAt.UnixMilli(), 0)
		v.FinishedAt, v.TotalMS = &f, &total
	}
	return v
}

// A cursor is the base64url (unpadded) of "<score>.<job id>": the
// position of the previous page's last entry in the caller's set. It
// grants nothing: it is read within the caller's own set.
func formatCursor(e quota.StoredEntry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(e.Score, 10) + "." + e.ID))
}

// errBadCursor: a cursor this server did not make.
var errBadCursor = errors.New("invalid cursor")

func parseCursor(v string) (quota.StoredEntry, error) {
	if len(v) > 128 {
		return quota.StoredEntry{}, errBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return quota.StoredEntry{}, errBadCursor
	}
	score, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(score, 10, 64)
	if !ok || err != nil || n <= 0 {
		return quota.StoredEntry{}, errBadCursor
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return quota.StoredEntry{}, errBadCursor
	}
	return quota.StoredEntry{ID: id, Score: n}, nil
}
