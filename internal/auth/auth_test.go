package auth

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testKey is a well-formed key: id 0123456789abcdef, secret of 32 bytes 0x00..0x1f.
var testKey = formatKey(
	[]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef},
	func() []byte {
		b := make([]byte, 32)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(),
)

// withByte returns s with byte i replaced by c.
func withByte(s string, i int, c byte) string {
	b := []byte(s)
	b[i] = c
	return string(b)
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	if len(testKey) != 64 {
		t.Fatalf("test key %q is %d long", testKey, len(testKey))
	}
	allOnes := formatKey(bytes.Repeat([]byte{0xff}, 8), bytes.Repeat([]byte{0xff}, 32))
	tests := []struct {
		name string
		in   string
		id   string
		err  error // nil: valid
	}{
		{"valid", testKey, "0123456789abcdef", nil},
		{"all ones", allOnes, "ffffffffffffffff", nil},
		{"all zeros", formatKey(make([]byte, 8), make([]byte, 32)), "0000000000000000", nil},
		{"empty", "", "", errKeyLength},
		{"prefix only", "ttk_", "", errKeyLength},
		{"one short", testKey[:63], "", errKeyLength},
		{"one long", testKey + "A", "", errKeyLength},
		{"padded", testKey + "=", "", errKeyLength},
		{"trailing newline", testKey + "\n", "", errKeyLength},
		{"other prefix", "ttx_" + testKey[4:], "", errKeyPrefix},
		{"upper-case prefix", "TTK_" + testKey[4:], "", errKeyPrefix},
		{"upper-case hex id", withByte(testKey, 14, 'B'), "", errKeyID},
		{"non-hex id", withByte(testKey, 4, 'g'), "", errKeyID},
		{"brace in id", withByte(testKey, 19, '}'), "", errKeyID},
		{"separator is a dash", withByte(testKey, 20, '-'), "", errKeySeparator},
		{"standard base64 plus", withByte(testKey, 30, '+'), "", errKeySecret},
		{"standard base64 slash", withByte(testKey, 30, '/'), "", errKeySecret},
		{"padding inside", withByte(testKey, 62, '='), "", errKeySecret},
		{"space in secret", withByte(testKey, 40, ' '), "", errKeySecret},
		{"NUL in secret", withByte(testKey, 40, 0), "", errKeySecret},
		{"non-ASCII byte", withByte(testKey, 40, 0xc3), "", errKeySecret},
		{"non-canonical last character", withByte(allOnes, 63, '_'), "", errKeySecret},
		{"non-canonical last character 2", withByte(testKey, 63, testKey[63]+1), "", errKeySecret},
		{"non-ASCII of the right byte length", "ttk_" + strings.Repeat("é", 30), "", errKeyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := ParseKey(tt.in)
			switch {
			case tt.err == nil && (err != nil || id != tt.id):
				t.Fatalf("ParseKey = %q, %v; want %q", id, err, tt.id)
			case tt.err != nil && err == nil:
				t.Fatalf("ParseKey = %q, want an error", id)
			case err != nil:
				if err != tt.err {
					t.Errorf("error %v, want %v", err, tt.err)
				}
				if !errors.Is(err, ErrMalformed) || !errors.Is(err, ErrInvalidKey) {
					t.Errorf("error %v does not match ErrMalformed and ErrInvalidKey", err)
				}
				if id != "" {
					t.Errorf("id %q with error", id)
				}
			}
		})
	}
}

func TestParseBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		token  string
		err    error // nil: valid
	}{
		{"key", "Bearer " + testKey, testKey, nil},
		{"lower-case scheme", "bearer abc", "abc", nil},
		{"upper-case scheme", "BEARER abc", "abc", nil},
		{"mixed-case scheme", "bEaReR abc", "abc", nil},
		{"several spaces", "Bearer    abc", "abc", nil},
		{"every token68 character", "Bearer AZaz09-._~+/==", "AZaz09-._~+/==", nil},
		{"one character", "Bearer x", "x", nil},
		{"empty", "", "", ErrNoCredentials},
		{"space only", " ", "", errBearerScheme},
		{"scheme only", "Bearer", "", errBearerNoToken},
		{"scheme and space", "Bearer ", "", errBearerNoToken},
		{"scheme and spaces", "Bearer    ", "", errBearerNoToken},
		{"basic", "Basic dXNlcjpwYXNz", "", errBearerScheme},
		{"short", "Bear", "", errBearerScheme},
		{"longer scheme", "Bearerx abc", "", errBearerScheme},
		{"no space", "Bearerabc", "", errBearerScheme},
		{"leading space", " Bearer abc", "", errBearerScheme},
		{"tab", "Bearer\tabc", "", errBearerScheme},
		{"non-ASCII in scheme", "Be\u212arer abc", "", errBearerScheme},
		{"trailing space", "Bearer abc ", "", errBearerToken},
		{"two tokens", "Bearer abc def", "", errBearerToken},
		{"only padding", "Bearer ==", "", errBearerToken},
		{"padding inside", "Bearer ab=c", "", errBearerToken},
		{"auth-param", `Bearer realm="x"`, "", errBearerToken},
		{"comma", "Bearer abc,def", "", errBearerToken},
		{"non-ASCII token", "Bearer clé", "", errBearerToken},
		{"control character", "Bearer ab\x00c", "", errBearerToken},
		{"newline", "Bearer abc\r\n", "", errBearerToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token, err := ParseBearer(tt.header)
			if err != tt.err || token != tt.token {
				t.Fatalf("ParseBearer(%q) = %q, %v; want %q, %v", tt.header, token, err, tt.token, tt.err)
			}
			if err != nil && err != ErrNoCredentials && (!errors.Is(err, ErrMalformed) || !errors.Is(err, ErrInvalidKey)) {
				t.Errorf("error %v does not match ErrMalformed and ErrInvalidKey", err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		err     error
		invalid bool // matches ErrInvalidKey
	}{
		{"malformed", ErrMalformed, true},
		{"malformed with a reason", errKeySecret, true},
		{"unknown", ErrUnknownKey, true},
		{"revoked", ErrRevoked, true},
		{"wrapped", errors.Join(errors.New("x"), ErrRevoked), true},
		{"no credentials", ErrNoCredentials, false},
		{"invalid name", ErrInvalidName, false},
		{"invalid limits", ErrInvalidLimits, false},
	}
	for _, tt := range tests {
		if got := errors.Is(tt.err, ErrInvalidKey); got != tt.invalid {
			t.Errorf("%s: errors.Is(%v, ErrInvalidKey) = %v", tt.name, tt.err, got)
		}
	}
	// The three kinds stay apart.
	if errors.Is(ErrRevoked, ErrUnknownKey) || errors.Is(ErrUnknownKey, ErrMalformed) || errors.Is(errKeyID, ErrRevoked) {
		t.Error("the kinds of invalid key match one another")
	}
}

func TestLimitsOr(t *testing.T) {
	t.Parallel()
	def := Limits{SubmissionsPerMinute: 60, RunningJobs: 4, StoredJobs: 1000, SSEConnections: 8, TokensPerDay: 1_000_000}
	tests := []struct {
		name string
		l    Limits
		want Limits
	}{
		{"all default", Limits{}, def},
		{"all own", Limits{1, 2, 3, 4, 5}, Limits{1, 2, 3, 4, 5}},
		{"some own", Limits{RunningJobs: 1, TokensPerDay: 7}, Limits{60, 1, 1000, 8, 7}},
	}
	for _, tt := range tests {
		if got := tt.l.Or(def); got != tt.want {
			t.Errorf("%s: %+v.Or = %+v, want %+v", tt.name, tt.l, got, tt.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		l     Limits
		field string // "" when valid
	}{
		{Limits{}, ""},
		{Limits{1, 2, 3, 4, 5}, ""},
		{Limits{SubmissionsPerMinute: -1}, "submissions_per_minute"},
		{Limits{RunningJobs: -1}, "running_jobs"},
		{Limits{StoredJobs: -1}, "stored_jobs"},
		{Limits{SSEConnections: -1}, "sse_connections"},
		{Limits{TokensPerDay: -1}, "tokens_per_day"},
	}
	for _, tt := range tests {
		err := tt.l.Validate()
		if (err == nil) != (tt.field == "") || (err != nil && (!errors.Is(err, ErrInvalidLimits) || !strings.Contains(err.Error(), tt.field))) {
			t.Errorf("%+v: Validate = %v, want the error to name %q", tt.l, err, tt.field)
		}
	}
}

// fixedMessages holds the text of every error ParseKey and ParseBearer
// return: an input found in it is not echoed, only common to both.
var fixedMessages = func() string {
	var b strings.Builder
	for _, err := range parseErrors {
		b.WriteString(err.Error())
		b.WriteByte('\n')
	}
	return b.String()
}()

// checkParseError fails t unless err is one of the fixed errors (so it
// cannot depend on in) and does not contain in.
func checkParseError(t *testing.T, in string, err error) {
	t.Helper()
	if !slices.Contains(parseErrors, err) {
		t.Fatalf("error %q is not one of the fixed errors", err)
	}
	if in != "" && strings.Contains(err.Error(), in) && !strings.Contains(fixedMessages, in) {
		t.Fatalf("error %q contains the input %q", err, in)
	}
}

// keyFromBytes spells a key from the first 40 bytes of raw, as newKey does
// from crypto/rand.
func keyFromBytes(raw []byte) (key, id string, ok bool) {
	if len(raw) < idBytes+secretBytes {
		return "", "", false
	}
	key = formatKey(raw[:idBytes], raw[idBytes:idBytes+secretBytes])
	return key, key[4:20], true
}

func FuzzParseKey(f *testing.F) {
	// Keys from a real Create: each must parse to its id.
	keys := New(redistest.New(f).Client)
	var created [][2]string
	for _, name := range []string{"a", "b", "c"} {
		key, k, err := keys.Create(f.Context(), name, Limits{})
		if err != nil {
			f.Fatal(err)
		}
		created = append(created, [2]string{key, k.ID})
		f.Add(key, []byte(nil))
	}
	f.Add(testKey, bytes.Repeat([]byte{0xff}, 40))
	f.Add("", []byte{1, 2, 3})
	f.Add("ttk_0123456789abcdef_", []byte(nil))
	f.Add(strings.Repeat("é", 32), []byte(nil))
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		id, err := ParseKey(s)
		if err != nil {
			checkParseError(t, s, err)
			if id != "" {
				t.Fatalf("id %q with error", id)
			}
		} else if len(s) != 64 || !strings.HasPrefix(s, "ttk_") || id != s[4:20] || !validID(id) {
			t.Fatalf("ParseKey(%q) accepted it with id %q", s, id)
		}
		if key, want, ok := keyFromBytes(raw); ok {
			if got, err := ParseKey(key); err != nil || got != want {
				t.Fatalf("generated key %q: ParseKey = %q, %v; want %q", key, got, err, want)
			}
		}
		for _, c := range created {
			if got, err := ParseKey(c[0]); err != nil || got != c[1] {
				t.Fatalf("created key: ParseKey = %q, %v; want %q", got, err, c[1])
			}
			if tok, err := ParseBearer("Bearer " + c[0]); err != nil || tok != c[0] {
				t.Fatalf("created key: ParseBearer = %q, %v", tok, err)
			}
		}
	})
}

func FuzzParseBearer(f *testing.F) {
	f.Add("Bearer "+testKey, []byte(nil), uint8(1))
	f.Add("", []byte(nil), uint8(0))
	f.Add("bearer  a+/b==", bytes.Repeat([]byte{7}, 40), uint8(3))
	f.Add("Basic dXNlcjpwYXNz", []byte(nil), uint8(0))
	f.Add("Bearer", []byte(nil), uint8(0))
	f.Add("Bearer ab=c", []byte(nil), uint8(0))
	f.Fuzz(func(t *testing.T, header string, raw []byte, spaces uint8) {
		token, err := ParseBearer(header)
		if err != nil {
			checkParseError(t, header, err)
			if token != "" {
				t.Fatalf("token %q with error", token)
			}
		} else {
			if !token68(token) || !strings.HasSuffix(header, " "+token) || !asciiEqualFold(header[:6], "bearer") {
				t.Fatalf("ParseBearer(%q) accepted it with token %q", header, token)
			}
			if again, err := ParseBearer("Bearer " + token); err != nil || again != token {
				t.Fatalf("token %q does not round-trip: %q, %v", token, again, err)
			}
		}
		// A key always goes through, whatever the scheme's case and the spaces.
		if key, id, ok := keyFromBytes(raw); ok {
			h := []byte("Bearer" + strings.Repeat(" ", 1+int(spaces%8)) + key)
			for i := range 6 {
				if spaces>>i&1 == 1 {
					h[i] ^= 'a' - 'A'
				}
			}
			tok, err := ParseBearer(string(h))
			if err != nil || tok != key {
				t.Fatalf("ParseBearer(%q) = %q, %v", h, tok, err)
			}
			if got, err := ParseKey(tok); err != nil || got != id {
				t.Fatalf("ParseKey(%q) = %q, %v; want %q", tok, got, err, id)
			}
		}
	})
}
