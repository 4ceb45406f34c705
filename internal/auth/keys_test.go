package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newKeys(t *testing.T) (*Keys, *testclock.Clock, redistest.DB) {
	t.Helper()
	db := redistest.New(t)
	k := New(db.Client)
	clock := testclock.New(t0)
	k.now = clock.Now
	return k, clock, db
}

func TestCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		want     string // the stored name
		limits   Limits
		wantErr  error
		errLacks string // the error must not contain it
	}{
		{name: "plain", in: "ci bot", want: "ci bot"},
		{name: "trimmed", in: "  ci bot \t\n", want: "ci bot"},
		{name: "non-ASCII", in: "équipe 日本", want: "équipe 日本"},
		{name: "braces", in: "{x}", want: "{x}"},
		{name: "max length", in: strings.Repeat("é", MaxNameLen), want: strings.Repeat("é", MaxNameLen)},
		{name: "with limits", in: "x", want: "x", limits: Limits{1, 2, 3, 4, 5}},
		{name: "empty", in: "", wantErr: ErrInvalidName},
		{name: "blank", in: " \t ", wantErr: ErrInvalidName},
		{name: "too long", in: strings.Repeat("n", MaxNameLen+1), wantErr: ErrInvalidName, errLacks: "nnnn"},
		{name: "control character", in: "secret\x00name", wantErr: ErrInvalidName, errLacks: "secret"},
		{name: "newline inside", in: "a\nb", wantErr: ErrInvalidName},
		{name: "escape", in: "a\x1b[31mb", wantErr: ErrInvalidName},
		{name: "invalid UTF-8", in: "a\xffb", wantErr: ErrInvalidName},
		{name: "zero-width space", in: "a\u200bb", wantErr: ErrInvalidName},
		{name: "negative limit", in: "x", limits: Limits{SSEConnections: -1}, wantErr: ErrInvalidLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, _, db := newKeys(t)
			key, k, err := keys.Create(t.Context(), tt.in, tt.limits)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || key != "" {
					t.Fatalf("Create = %q, %v; want %v", key, err, tt.wantErr)
				}
				if tt.errLacks != "" && strings.Contains(err.Error(), tt.errLacks) {
					t.Errorf("error %q repeats the name", err)
				}
				if n := db.Client.DBSize(t.Context()).Val(); n != 0 {
					t.Errorf("%d Redis keys after a refused Create", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Key{ID: k.ID, Name: tt.want, Created: t0, Limits: tt.limits}
			if !keyEqual(k, want) || !k.Live() {
				t.Fatalf("Create returned %+v, want %+v", k, want)
			}
			if id, err := ParseKey(key); err != nil || id != k.ID {
				t.Fatalf("ParseKey(new key) = %q, %v; want %q", id, err, k.ID)
			}
			got, err := keys.Get(t.Context(), k.ID)
			if err != nil || !keyEqual(got, want) {
				t.Fatalf("Get = %+v, %v; want %+v", got, err, want)
			}
			v, err := keys.Verify(t.Context(), key)
			if err != nil || !keyEqual(v, want) {
				t.Fatalf("Verify = %+v, %v; want %+v", v, err, want)
			}
		})
	}
}

func keyEqual(a, b Key) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Created.Equal(b.Created) &&
		a.Revoked.Equal(b.Revoked) && a.Limits == b.Limits
}

func TestCreateMakesDistinctKeys(t *testing.T) {
	t.Parallel()
	keys, _, _ := newKeys(t)
	seen := map[string]bool{}
	for range 20 {
		key, k, err := keys.Create(t.Context(), "k", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if seen[key] || seen[k.ID] {
			t.Fatalf("key or id %s given twice", k.ID)
		}
		seen[key], seen[k.ID] = true, true
	}
}

func TestStoredRecordHoldsNoSecret(t *testing.T) {
	t.Parallel()
	keys, _, db := newKeys(t)
	key, k, err := keys.Create(t.Context(), "n", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	secret := key[len(key)-secretLen:]
	names, err := db.Client.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 {
		t.Errorf("Redis keys %q, want the record and the set", names)
	}
	var all strings.Builder
	for _, name := range names {
		all.WriteString(name + "\n")
		dump, err := db.Client.Dump(t.Context(), name).Result()
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(dump + "\n")
	}
	rec, err := db.Client.HGetAll(t.Context(), recordKey(k.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	for f, v := range rec {
		all.WriteString(f + "=" + v + "\n")
	}
	// Any 8 characters of the secret would be a partial copy.
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(all.String(), secret[i:i+8]) {
			t.Fatalf("Redis holds %q, part of the secret", secret[i:i+8])
		}
	}
	if rec[fieldHash] != hashKey(key) || len(rec[fieldHash]) != 64 {
		t.Errorf("stored hash %q, want the SHA-256 of the key", rec[fieldHash])
	}
	if _, ok := rec[fieldRevoked]; ok {
		t.Error("a live key has revoked_ms")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	keys, _, _ := newKeys(t)
	live, lk, err := keys.Create(t.Context(), "live", Limits{RunningJobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	revoked, rk, err := keys.Create(t.Context(), "revoked", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Revoke(t.Context(), rk.ID); err != nil {
		t.Fatal(err)
	}
	// Another secret of the live key's id, and another id with its secret.
	otherSecret := live[:len(live)-secretLen] + revoked[len(revoked)-secretLen:]
	otherID := "ttk_" + strings.Repeat("0", 16) + live[20:]
	tests := []struct {
		name      string
		presented string
		want      error // nil: valid
	}{
		{"live", live, nil},
		{"revoked", revoked, ErrRevoked},
		{"wrong secret", otherSecret, ErrUnknownKey},
		{"revoked id, wrong secret", revoked[:len(revoked)-secretLen] + live[len(live)-secretLen:], ErrUnknownKey},
		{"unknown id", otherID, ErrUnknownKey},
		{"empty", "", ErrMalformed},
		{"bearer header", "Bearer " + live, ErrMalformed},
		{"truncated", live[:63], ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := keys.Verify(t.Context(), tt.presented)
			if tt.want == nil {
				if err != nil || k.ID != lk.ID || k.Name != "live" || k.Limits.RunningJobs != 2 {
					t.Fatalf("Verify = %+v, %v", k, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("Verify error %v, want %v matching ErrInvalidKey", err, tt.want)
			}
			if k != (Key{}) {
				t.Errorf("Verify returned %+v with its error", k)
			}
			if tt.presented != "" && strings.Contains(err.Error(), tt.presented) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

func TestVerifyRedisError(t *testing.T) {
	t.Parallel()
	keys, _, db := newKeys(t)
	key, _, err := keys.Create(t.Context(), "n", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := db.NewClient(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	down := New(c)
	_, err = down.Verify(t.Context(), key)
	if err == nil || errors.Is(err, ErrInvalidKey) || !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("Verify with a closed client: %v; want a wrapped redis error not matching ErrInvalidKey", err)
	}
	for name, err := range map[string]error{
		"Get":       func() error { _, err := down.Get(t.Context(), key[4:20]); return err }(),
		"List":      func() error { _, err := down.List(t.Context()); return err }(),
		"Revoke":    down.Revoke(t.Context(), key[4:20]),
		"SetLimits": down.SetLimits(t.Context(), key[4:20], Limits{}),
		"Create":    func() error { _, _, err := down.Create(t.Context(), "n", Limits{}); return err }(),
	} {
		if !errors.Is(err, redis.ErrClosed) || errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s with a closed client: %v", name, err)
		}
	}
}

func TestDamagedRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		field string
		value string
	}{
		{"hash not hex", fieldHash, "zz"},
		{"hash too short", fieldHash, "abcd"},
		{"created not a number", fieldCreated, "yesterday"},
		{"revoked not a number", fieldRevoked, "x"},
		{"limit not a number", fieldTokens, "many"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, _, db := newKeys(t)
			key, k, err := keys.Create(t.Context(), "n", Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Client.HSet(t.Context(), recordKey(k.ID), tt.field, tt.value).Err(); err != nil {
				t.Fatal(err)
			}
			_, err = keys.Verify(t.Context(), key)
			if err == nil || errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Verify of a damaged record: %v", err)
			}
			if _, err := keys.List(t.Context()); err == nil {
				t.Fatal("List of a damaged record succeeded")
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	keys, clock, _ := newKeys(t)
	key, k, err := keys.Create(t.Context(), "n", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Hour)
	clock.Set(t1)
	if err := keys.Revoke(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	clock.Set(t1.Add(time.Hour))
	if err := keys.Revoke(t.Context(), k.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	got, err := keys.Get(t.Context(), k.ID)
	if err != nil || got.Live() || !got.Revoked.Equal(t1) {
		t.Fatalf("Get after Revoke = %+v, %v; want revoked at %v", got, err, t1)
	}
	if _, err := keys.Verify(t.Context(), key); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify of a revoked key: %v", err)
	}
	// Limits can still be set on a revoked key; it stays revoked.
	if err := keys.SetLimits(t.Context(), k.ID, Limits{RunningJobs: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(t.Context(), key); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify after SetLimits of a revoked key: %v", err)
	}
}

func TestUnknownID(t *testing.T) {
	t.Parallel()
	keys, _, db := newKeys(t)
	for _, id := range []string{"0123456789abcdef", "", "0123456789ABCDEF", "x}", "0123456789abcdef0", "*"} {
		if _, err := keys.Get(t.Context(), id); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Get(%q): %v", id, err)
		}
		if err := keys.Revoke(t.Context(), id); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Revoke(%q): %v", id, err)
		}
		if err := keys.SetLimits(t.Context(), id, Limits{RunningJobs: 1}); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("SetLimits(%q): %v", id, err)
		}
	}
	if n := db.Client.DBSize(t.Context()).Val(); n != 0 {
		t.Errorf("%d Redis keys left by operations on unknown ids", n)
	}
}

func TestSetLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		initial Limits
		set     Limits
		wantErr error
	}{
		{name: "from default", set: Limits{1, 2, 3, 4, 5}},
		{name: "back to default", initial: Limits{1, 2, 3, 4, 5}, set: Limits{}},
		{name: "some", initial: Limits{1, 2, 3, 4, 5}, set: Limits{RunningJobs: 9, TokensPerDay: 1 << 40}},
		{name: "negative", initial: Limits{1, 2, 3, 4, 5}, set: Limits{TokensPerDay: -5}, wantErr: ErrInvalidLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, _, _ := newKeys(t)
			key, k, err := keys.Create(t.Context(), "n", tt.initial)
			if err != nil {
				t.Fatal(err)
			}
			err = keys.SetLimits(t.Context(), k.ID, tt.set)
			want := tt.set
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("SetLimits: %v, want %v", err, tt.wantErr)
				}
				want = tt.initial
			} else if err != nil {
				t.Fatal(err)
			}
			got, err := keys.Verify(t.Context(), key)
			if err != nil || got.Limits != want {
				t.Fatalf("Verify = %+v, %v; want limits %+v", got.Limits, err, want)
			}
		})
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	keys, clock, db := newKeys(t)
	if got, err := keys.List(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("List of none = %v, %v", got, err)
	}
	// Created out of order, two at one instant.
	var want []Key
	for i, at := range []time.Time{t0.Add(2 * time.Hour), t0, t0.Add(time.Hour), t0} {
		clock.Set(at)
		_, k, err := keys.Create(t.Context(), string(rune('a'+i)), Limits{StoredJobs: i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	if err := keys.Revoke(t.Context(), want[2].ID); err != nil {
		t.Fatal(err)
	}
	want[2].Revoked = t0 // the clock's last setting
	// An id in the set whose record was never written (a Create that
	// failed half-way) is not listed.
	if err := db.Client.SAdd(t.Context(), setKey, "00000000000000ff", "not an id").Err(); err != nil {
		t.Fatal(err)
	}
	first, second := want[1], want[3]
	if second.ID < first.ID {
		first, second = second, first
	}
	order := []Key{first, second, want[2], want[0]}
	got, err := keys.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(order) {
		t.Fatalf("List gave %d keys, want %d: %+v", len(got), len(order), got)
	}
	for i := range order {
		if !keyEqual(got[i], order[i]) {
			t.Errorf("List[%d] = %+v, want %+v", i, got[i], order[i])
		}
	}
}
