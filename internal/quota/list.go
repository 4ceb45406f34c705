package quota

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// StoredEntry is one of an owner's stored jobs as AdmitStored recorded it:
// its id and its score, the expiry it was admitted until (deadline plus
// retention), which is its creation time plus a constant of the
// configuration, and so orders the jobs by creation.
type StoredEntry struct {
	ID string
	// Score is the recorded expiry in Unix ms.
	Score int64
}

// storedPageScript reads a page of an owner's stored jobs, newest first.
// KEYS[1] is the owner's set; ARGV: now (ms; entries that expired before
// are not read), the score of the last entry of the previous page ("+inf":
// none), its id ("" none), the number of entries wanted. Entries of equal
// score come in reverse order of their ids (the set's order); those at or
// before the previous page's last entry are skipped, so that pages never
// repeat or miss an entry that stays in the set. It returns id, score
// pairs. It reads only.
var storedPageScript = redis.NewScript(`
local key, now, max, after, want = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local top = tonumber(max)
local out, offset = {}, 0
while #out < 2 * want do
  local page = redis.call('ZRANGE', key, max, now, 'BYSCORE', 'REV', 'LIMIT', offset, want + 1, 'WITHSCORES')
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    if after == '' or tonumber(score) < top or id < after then
      out[#out + 1] = id
      out[#out + 1] = score
      if #out >= 2 * want then break end
    end
  end
  offset = offset + #page / 2
end
return out
`)

// StoredPage returns up to limit of owner's stored jobs, newest first
// (highest score, then highest id), after the entry after (the zero
// StoredEntry: from the newest). It is the index the api lists an owner's
// jobs from: AdmitStored records every job of every owner that is not the
// admin's, quotas or not. Entries whose recorded expiry has passed are
// left out; an entry may still name a job that expired sooner (a job that
// ends is kept for the retention from its end), which the caller skips.
// One round trip, whatever the page.
func (q *Quota) StoredPage(ctx context.Context, owner string, after StoredEntry, limit int) ([]StoredEntry, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	top := "+inf"
	if after.ID != "" {
		top = strconv.FormatInt(after.Score, 10)
	}
	res, err := storedPageScript.Run(ctx, q.rdb, []string{storedKey(owner)},
		q.now().UnixMilli(), top, after.ID, limit).Slice()
	if err != nil {
		return nil, fmt.Errorf("quota: read stored jobs of %s: %w", owner, err)
	}
	out := make([]StoredEntry, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		out = append(out, StoredEntry{ID: id, Score: toInt(res[i+1])})
	}
	return out, nil
}
