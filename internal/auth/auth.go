// Package auth issues and checks the service's API keys.
//
// A key is "ttk_" + id + "_" + secret: the id (16 lowercase hex digits) names
// the key's record in Redis, and the secret (32 random bytes, unpadded
// base64url) proves that the caller holds the key. Redis keeps only a
// SHA-256 of the whole key, so a copy of Redis holds no usable key. Each key
// carries limits of its own, which override the server's defaults.
package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// Key format.
const (
	keyPrefix = "ttk_"
	idBytes   = 8
	idLen     = 2 * idBytes // hex
	secretLen = 43          // 32 bytes, unpadded base64
	keyLen    = len(keyPrefix) + idLen + 1 + secretLen
)

// secretBytes is the secret's entropy: 256 bits, which is what makes a plain
// SHA-256 of the key a safe thing to store (see hashKey).
const secretBytes = 32

// ErrInvalidKey is matched (errors.Is) by every error that says the
// presented credentials are no good: ErrMalformed, ErrUnknownKey and
// ErrRevoked. An error that does not match it (Redis out of reach, say) says
// nothing about the credentials, so that the caller can answer 503 rather
// than 401.
var ErrInvalidKey = errors.New("invalid API key")

// invalidKeyError is an error that matches ErrInvalidKey while keeping a
// message of its own.
type invalidKeyError struct{ msg string }

func (e *invalidKeyError) Error() string        { return e.msg }
func (e *invalidKeyError) Is(target error) bool { return target == ErrInvalidKey }

// The ways credentials can be refused. Each matches ErrInvalidKey.
var (
	// ErrMalformed: the key or the Authorization header does not have the
	// expected format. Errors that say why wrap it.
	ErrMalformed error = &invalidKeyError{"malformed credentials"}
	// ErrUnknownKey: no such key, or the secret does not match.
	ErrUnknownKey error = &invalidKeyError{"unknown API key"}
	// ErrRevoked: the key was revoked.
	ErrRevoked error = &invalidKeyError{"revoked API key"}
)

// ErrNoCredentials: the request has no Authorization header. It does not
// match ErrInvalidKey: RFC 6750 answers a request without credentials
// differently (no error code) from one with bad ones.
var ErrNoCredentials = errors.New("no credentials")

// The reasons ParseKey and ParseBearer give. They are fixed values, never
// built from the input, so that a key presented by mistake (or a secret
// pasted into the wrong header) cannot end up in a log through an error.
var (
	errKeyLength    = wrapMalformed("an API key is 64 characters long")
	errKeyPrefix    = wrapMalformed(`an API key starts with "ttk_"`)
	errKeyID        = wrapMalformed("an API key's id is 16 lowercase hex digits")
	errKeySeparator = wrapMalformed(`an API key's id is followed by "_"`)
	errKeySecret    = wrapMalformed("an API key's secret is 43 characters of unpadded base64url")

	errBearerScheme  = wrapMalformed("the Authorization scheme is not Bearer")
	errBearerNoToken = wrapMalformed("the Authorization header has no token")
	errBearerToken   = wrapMalformed("the bearer token has characters a token68 cannot have")
)

// parseErrors lists every error ParseKey and ParseBearer return; the tests
// check that nothing else comes out.
var parseErrors = []error{
	errKeyLength, errKeyPrefix, errKeyID, errKeySeparator, errKeySecret,
	errBearerScheme, errBearerNoToken, errBearerToken, ErrNoCredentials,
}

// reasonError is a fixed reason that wraps ErrMalformed.
type reasonError struct{ reason string }

func wrapMalformed(reason string) error { return &reasonError{reason} }

func (e *reasonError) Error() string { return ErrMalformed.Error() + ": " + e.reason }
func (e *reasonError) Unwrap() error { return ErrMalformed }

// ParseKey checks that s has the exact format of an API key and returns its
// id. It never panics and its error, which wraps ErrMalformed, never
// contains s. Besides length and character set it checks that the secret is
// the canonical encoding of 32 bytes, so that one key has one spelling.
func ParseKey(s string) (id string, err error) {
	if len(s) != keyLen {
		return "", errKeyLength
	}
	if s[:len(keyPrefix)] != keyPrefix {
		return "", errKeyPrefix
	}
	id = s[len(keyPrefix) : len(keyPrefix)+idLen]
	if !validID(id) {
		return "", errKeyID
	}
	if s[len(keyPrefix)+idLen] != '_' {
		return "", errKeySeparator
	}
	secret := s[len(keyPrefix)+idLen+1:]
	for i := 0; i < len(secret); i++ {
		if base64URLValue(secret[i]) < 0 {
			return "", errKeySecret
		}
	}
	// 43 characters carry 258 bits: the last one's two low bits are padding
	// and must be zero in the canonical encoding.
	if base64URLValue(secret[len(secret)-1])&3 != 0 {
		return "", errKeySecret
	}
	return id, nil
}

// validID reports whether id is 16 lowercase hex digits. Ids go into Redis
// key names inside a hash tag, so nothing else may get there.
func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// base64URLValue returns the value of c in the base64url alphabet, or -1.
func base64URLValue(c byte) int {
	switch {
	case c >= 'A' && c <= 'Z':
		return int(c - 'A')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 26
	case c >= '0' && c <= '9':
		return int(c-'0') + 52
	case c == '-':
		return 62
	case c == '_':
		return 63
	}
	return -1
}

// ParseBearer returns the token of an Authorization header of the "Bearer"
// scheme (RFC 6750): the scheme name in any case, one or more spaces, and a
// token68. An empty header gives ErrNoCredentials; any other header that is
// not that gives an error wrapping ErrMalformed. It never panics and its
// errors never contain the header. The token is not checked to be an API
// key: ParseKey and Keys.Verify do that.
func ParseBearer(header string) (token string, err error) {
	if header == "" {
		return "", ErrNoCredentials
	}
	const scheme = "bearer"
	if len(header) < len(scheme) || !asciiEqualFold(header[:len(scheme)], scheme) {
		return "", errBearerScheme
	}
	rest := header[len(scheme):]
	if rest == "" {
		return "", errBearerNoToken
	}
	if rest[0] != ' ' {
		// "Bearerx …" is another scheme.
		return "", errBearerScheme
	}
	i := 0
	for i < len(rest) && rest[i] == ' ' {
		i++
	}
	token = rest[i:]
	if token == "" {
		return "", errBearerNoToken
	}
	if !token68(token) {
		return "", errBearerToken
	}
	return token, nil
}

// asciiEqualFold compares ASCII case-insensitively. strings.EqualFold would
// also take some non-ASCII letters (the Kelvin sign for "k") as equal, and
// a scheme name is ASCII.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// token68 reports whether s is a token68 (RFC 9110 section 11.2):
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func token68(s string) bool {
	n := len(s)
	for n > 0 && s[n-1] == '=' {
		n--
	}
	if n == 0 {
		return false
	}
	for i := 0; i < n; i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

// newKey returns a fresh key and its id, from crypto/rand.
func newKey() (key, id string, err error) {
	var b [idBytes + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("generate API key: %w", err)
	}
	key = formatKey(b[:idBytes], b[idBytes:])
	return key, key[len(keyPrefix) : len(keyPrefix)+idLen], nil
}

// formatKey spells a key from its id's and secret's bytes (8 and 32).
func formatKey(id, secret []byte) string {
	return keyPrefix + hex.EncodeToString(id) + "_" + base64.RawURLEncoding.EncodeToString(secret)
}
