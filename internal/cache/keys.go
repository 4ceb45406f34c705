package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Identity is a 128-bit hex digest (SHA-256, truncated) of v's JSON
// encoding, for kinds to build their cache keys from (see
// jobkind.Member.CacheKey and jobkind.Kind.ResultKey): equal values make
// equal identities, and the JSON encoding keeps field boundaries
// unambiguous ({"a":"bc"} is not {"a":"b","c":""}), so values that differ
// make different ones. A kind puts in v everything its answer depends on:
// its name, its prompt version, the question as NormalizeQuestion spells
// it, the model and the identity of the provider that serves it, and its
// own parameters. v must encode (plain values, strings, slices, structs);
// Identity panics otherwise, a programming error.
func Identity(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("cache: encode identity: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// MemberRedisKey is the Redis key of the member cache entry of key (a
// kind's CacheKey). Keys are digested again, which bounds their length
// whatever a kind's keys look like.
func MemberRedisKey(key string) string { return "tt:cache:m:" + Identity(key) }

// ResultRedisKey is the Redis key of the result cache entry of key (a
// kind's ResultKey). It is never a member entry's key.
func ResultRedisKey(key string) string { return "tt:cache:r:" + Identity(key) }

// Fingerprint identifies a request for in-flight deduplication: two
// requests share it exactly when one job answers both alike. kind is the
// job's kind; memberKeys are its members' cache keys, in order (they name
// everything each member's answer depends on: question, model, provider,
// the kind's parameters); resultIdentity names what the aggregation
// depends on beyond the members' answers (the kind's, e.g. its options;
// may be empty). Whether the request bypasses the cache counts, so that a
// request that bypasses it never joins a job that may be made of cached
// answers; so do warming and the callback URL, so that no request loses
// its webhook by joining.
//
// A job with no members, or with a member without a key (one whose answer
// the kind does not identify), takes no part in deduplication:
// Fingerprint returns "".
func Fingerprint(kind string, memberKeys []string, resultIdentity string, bypass, warm bool, callbackURL string) string {
	if len(memberKeys) == 0 {
		return ""
	}
	for _, k := range memberKeys {
		if k == "" {
			return ""
		}
	}
	return Identity(struct {
		Kind, Result, Callback string
		Members                []string
		Bypass, Warm           bool
	}{kind, resultIdentity, callbackURL, memberKeys, bypass, warm})
}
