package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/nxmesh/nxmesh/app"
)

// argonParams are the argon2id cost parameters of new password hashes. Stored
// hashes carry their own parameters (PHC string format), so raising these
// later only affects passwords set afterwards.
type argonParams struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	SaltLen int
	KeyLen  uint32
}

// owaspArgon2id is OWASP's recommended minimum for argon2id: 19 MiB, two
// iterations, one lane.
var owaspArgon2id = argonParams{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// hashPassword returns password's argon2id hash in PHC string format:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (unpadded standard base64).
func hashPassword(password string, p argonParams) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errMalformedHash = errors.New("malformed argon2id hash")

// Password hashing is bounded: every argon2id computation (a login's check, a
// new password's hash) takes one of auth.password_hash_concurrency slots
// (default twice GOMAXPROCS), so a burst of logins costs at most that many
// times 19 MiB instead of 19 MiB per request. A caller waits for a slot with
// its request context, at most hashSlotWait; after that it gets
// ErrPasswordHashingBusy (503 with Retry-After) rather than queueing without
// bound. Logins are counted by the throttle before they wait, so a refused
// login never takes a slot.
const hashSlotWait = 5 * time.Second

// hashEvent is what hashHook observes of one password hash.
type hashEvent int

const (
	hashWaiting hashEvent = iota // asks for a slot
	hashStarted                  // holds a slot and starts hashing
	hashDone                     // finished hashing; the slot is released right after
)

// hashSlotsFor is the number of concurrent password hashes for configured n.
func hashSlotsFor(n int) int {
	if n > 0 {
		return n
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// withHashSlot runs fn, which hashes a password, holding one hashing slot.
func (s *Service) withHashSlot(ctx context.Context, fn func()) error {
	if s.hashHook != nil {
		s.hashHook(hashWaiting)
	}
	timer := time.NewTimer(s.hashWait)
	defer timer.Stop()
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a password hashing slot: %w", ctx.Err())
	case <-timer.C:
		s.logger.WarnContext(ctx, "password hashing is saturated; refusing with 503",
			"slots", cap(s.hashSlots), "waited", s.hashWait)
		return ErrPasswordHashingBusy
	}
	defer func() { <-s.hashSlots }()
	if s.hashHook != nil {
		s.hashHook(hashStarted)
		defer s.hashHook(hashDone)
	}
	fn()
	return nil
}

// newPasswordHash hashes password with the service's parameters in a hashing slot.
func (s *Service) newPasswordHash(ctx context.Context, password string) (string, error) {
	var (
		hash string
		err  error
	)
	if serr := s.withHashSlot(ctx, func() { hash, err = hashPassword(password, s.argon) }); serr != nil {
		return "", serr
	}
	return hash, err
}

// checkPassword reports whether password matches the PHC-encoded argon2id
// hash, comparing in constant time.
func checkPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errMalformedHash
	}
	var p argonParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return false, errMalformedHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, errMalformedHash
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errMalformedHash
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// The password policy (NIST SP 800-63B, section 3.1.1.2) applies wherever a
// password is set: POST /v1/users, `nxmesh users create`, the first
// administrator from admin.password (NXMESH_ADMIN_PASSWORD) and SetPassword.
// A password must be valid UTF-8 without NUL characters, 8 to 256 characters
// long (any characters, spaces included, so long passphrases work), and must
// not be
//   - one of the most common passwords listed in common_passwords.txt, also
//     when followed only by digits, punctuation or spaces ("monkey2024!") or
//     with digits standing for letters ("p4ssw0rd");
//   - the account's e-mail address or its local part;
//   - a repeated character or short unit ("aaaaaaaa", "passpass"), a sequence
//     or keyboard walk ("12345678", "abcdefgh", "qwertyui", "1qaz2wsx"), or
//     made of only a few of those.
//
// Logins do not apply it: existing passwords keep working.
const (
	minPasswordLen = 8   // characters
	maxPasswordLen = 256 // characters
)

//go:embed common_passwords.txt
var commonPasswordsFile string

// commonPasswords is the set of common_passwords.txt, read once.
var commonPasswords = sync.OnceValue(func() map[string]struct{} {
	set := map[string]struct{}{}
	for line := range strings.Lines(commonPasswordsFile) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			set[strings.ToLower(line)] = struct{}{}
		}
	}
	return set
})

// checkPasswordPolicy adds to v, under field, why pw cannot be the password of
// the account with email (see the policy above).
func checkPasswordPolicy(v *app.Validator, field, pw, email string) {
	if code, msg, ok := passwordWeakness(pw, email); ok {
		v.Add(field, code, msg)
	}
}

// passwordWeakness returns the field error code and message refusing pw for
// the account with email, or ok false when pw is acceptable.
func passwordWeakness(pw, email string) (code, msg string, ok bool) {
	switch n := utf8.RuneCountInString(pw); {
	case !utf8.ValidString(pw):
		return app.FieldInvalidFormat, "must be valid UTF-8 text", true
	case strings.ContainsRune(pw, 0):
		return app.FieldInvalidFormat, "must not contain NUL characters", true
	case n < minPasswordLen:
		return app.FieldInvalidValue, fmt.Sprintf("must be at least %d characters", minPasswordLen), true
	case n > maxPasswordLen:
		return app.FieldTooLong, fmt.Sprintf("must be at most %d characters", maxPasswordLen), true
	}
	lower := strings.ToLower(pw)
	stem := strings.TrimRightFunc(lower, func(r rune) bool {
		return unicode.IsDigit(r) || unicode.IsPunct(r) || unicode.IsSymbol(r) || unicode.IsSpace(r)
	})
	candidates := []string{lower, stem, leetAsI.Replace(stem), leetAsL.Replace(stem)}

	email = normalizeEmail(email)
	local, _, _ := strings.Cut(email, "@")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if email != "" && (c == email || c == local || c == strings.Map(dropSeparator, local)) {
			return app.FieldInvalidValue, "must not be the e-mail address or its local part", true
		}
	}
	common := commonPasswords()
	for _, c := range candidates {
		if _, found := common[c]; found && c != "" {
			return app.FieldInvalidValue, "is one of the most commonly used passwords; choose a less predictable one", true
		}
	}
	if unit, reps := repeatedUnit(lower); reps >= 2 {
		if _, found := common[unit]; found || utf8.RuneCountInString(unit) <= 4 {
			return app.FieldInvalidValue, "is a short part repeated (like aaaaaaaa or abcabcab); choose a less predictable one", true
		}
	}
	if r := []rune(lower); patternRuns(r) <= max(2, len(r)/4) {
		return app.FieldInvalidValue, "is made of repeated characters, sequences or keyboard rows (like aaaaaaaa, 12345678 or qwertyui); choose a less predictable one", true
	}
	return "", "", false
}

// Digits and symbols that commonly stand for letters, undone before comparing
// with the list ("1" is tried as both "i" and "l").
var (
	leetAsI = strings.NewReplacer("0", "o", "1", "i", "3", "e", "4", "a", "5", "s", "7", "t", "@", "a", "$", "s", "!", "i")
	leetAsL = strings.NewReplacer("0", "o", "1", "l", "3", "e", "4", "a", "5", "s", "7", "t", "@", "a", "$", "s", "!", "i")
)

// dropSeparator removes the separators of an e-mail local part ("alice.smith"
// is also "alicesmith").
func dropSeparator(r rune) rune {
	if strings.ContainsRune("._-+", r) {
		return -1
	}
	return r
}

// repeatedUnit returns the shortest unit that s is reps copies of (s itself
// and 1 when there is none).
func repeatedUnit(s string) (unit string, reps int) {
	for size := 1; size <= len(s)/2; size++ {
		if len(s)%size == 0 && strings.Repeat(s[:size], len(s)/size) == s {
			return s[:size], len(s) / size
		}
	}
	return s, 1
}

// keyboardRows are runs of neighbouring keys on common layouts (QWERTY,
// QWERTZ, AZERTY rows and QWERTY columns), each usable in both directions.
var keyboardRows = []string{
	"`1234567890-=", "qwertyuiop[]", "qwertzuiop", "azertyuiop", "asdfghjkl;'", "qsdfghjklm",
	"zxcvbnm,./", "yxcvbnm", "wxcvbn", "!@#$%^&*()_+",
	"1qaz", "2wsx", "3edc", "4rfv", "5tgb", "6yhn", "6zhn", "7ujm", "8ik,", "9ol.", "0p;/",
}

// keyNeighbours is the set of ordered pairs of neighbouring keys.
var keyNeighbours = sync.OnceValue(func() map[[2]rune]struct{} {
	set := map[[2]rune]struct{}{}
	for _, row := range keyboardRows {
		r := []rune(row)
		for i := 1; i < len(r); i++ {
			set[[2]rune{r[i-1], r[i]}] = struct{}{}
			set[[2]rune{r[i], r[i-1]}] = struct{}{}
		}
	}
	return set
})

// patternRuns is the number of pieces s falls into when a piece goes on as
// long as each character repeats the previous one, follows or precedes it in
// the alphabet or among the digits, or is its neighbour on a keyboard row:
// "12345678" and "aaaaaaaa" are 1, "1234abcd" and "qwerasdf" are 2, a random
// or real-word password is close to its length.
func patternRuns(s []rune) int {
	if len(s) == 0 {
		return 0
	}
	neighbours := keyNeighbours()
	runs := 1
	for i := 1; i < len(s); i++ {
		a, b := s[i-1], s[i]
		if a == b || sequential(a, b) {
			continue
		}
		if _, ok := neighbours[[2]rune{a, b}]; ok {
			continue
		}
		runs++
	}
	return runs
}

// sequential reports whether a and b are consecutive ASCII letters or digits,
// in either order.
func sequential(a, b rune) bool {
	if a-b != 1 && b-a != 1 {
		return false
	}
	inRange := func(lo, hi rune) bool { return a >= lo && a <= hi && b >= lo && b <= hi }
	return inRange('a', 'z') || inRange('0', '9')
}
