package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// issuer is the iss claim of access tokens.
const issuer = "nxmesh"

// accessClaims are the claims of an access JWT: sub is the user id, sid the
// session (refresh-token family) it was issued from, amr how that session was
// authenticated (RFC 8176: "pwd", plus "otp" when an emailed one-time code was
// confirmed). The server reads the session's verification from its row, not
// from amr; the claim tells clients what kind of session they hold.
type accessClaims struct {
	SessionID string   `json:"sid"`
	AMR       []string `json:"amr,omitempty"`
	jwt.RegisteredClaims
}

// sessionAMR is the amr claim of a session confirmed (or not) with an emailed code.
func sessionAMR(emailCode bool) []string {
	if emailCode {
		return []string{"pwd", "otp"}
	}
	return []string{"pwd"}
}

// signAccessToken returns an HS256 access JWT for user in session, valid for ttl
// from now; emailCode says whether the session was confirmed with an emailed code.
func signAccessToken(key []byte, userID, sessionID uuid.UUID, emailCode bool, now time.Time, ttl time.Duration) (string, error) {
	claims := accessClaims{
		SessionID: sessionID.String(),
		AMR:       sessionAMR(emailCode),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   userID.String(),
			Issuer:    issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// parseAccessToken verifies raw's signature, issuer and expiry (at now) and
// returns its user and session ids and its expiry.
func parseAccessToken(key []byte, raw string, now func() time.Time) (userID, sessionID uuid.UUID, expires time.Time, err error) {
	var claims accessClaims
	_, err = jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	)
	// The reason (bad signature, expired, wrong issuer) stays out of the answer.
	if err != nil {
		return uuid.Nil, uuid.Nil, time.Time{}, ErrInvalidToken
	}
	if userID, err = uuid.Parse(claims.Subject); err != nil {
		return uuid.Nil, uuid.Nil, time.Time{}, ErrInvalidToken
	}
	if sessionID, err = uuid.Parse(claims.SessionID); err != nil {
		return uuid.Nil, uuid.Nil, time.Time{}, ErrInvalidToken
	}
	return userID, sessionID, claims.ExpiresAt.Time, nil
}

// newOpaqueToken returns a random 32-byte token (base64url, unpadded) and its
// SHA-256, the only form stored.
func newOpaqueToken() (token string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is the stored form of a refresh token, session cookie or API key.
// They carry 190+ bits of entropy, so a plain SHA-256 suffices.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 returns n characters drawn uniformly from [0-9A-Za-z].
func randomBase62(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate random string: %w", err)
		}
		for _, b := range buf {
			// 248 = 4*62: dropping larger bytes keeps the draw unbiased.
			if b < 248 && len(out) < n {
				out = append(out, base62Alphabet[b%62])
			}
		}
	}
	return string(out), nil
}

// randomDigits returns n decimal digits drawn uniformly.
func randomDigits(n int) (string, error) {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
	v, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return "", fmt.Errorf("generate code: %w", err)
	}
	return fmt.Sprintf("%0*d", n, v), nil
}

// codeMAC is the stored form of a one-time code: an HMAC keyed with the JWT key
// and bound to the user, so a leaked table cannot be brute-forced offline
// (a 6-digit code has only a million values).
func codeMAC(key []byte, userID uuid.UUID, code string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("nxmesh login code\x00"))
	m.Write(userID[:])
	m.Write([]byte(code))
	return m.Sum(nil)
}
