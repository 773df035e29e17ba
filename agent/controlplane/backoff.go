package controlplane

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff defaults: 1 s, ×1.6 per failure, ±20 % jitter, at most 120 s.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffFactor  = 1.6
	DefaultBackoffJitter  = 0.2
	DefaultBackoffMax     = 120 * time.Second
)

// Backoff computes reconnect delays: Initial × Factor^n after the n-th
// consecutive failure, spread by ±Jitter and capped at Max (after the
// jitter, so no delay ever exceeds Max). It is not safe for concurrent use.
type Backoff struct {
	Initial time.Duration
	Factor  float64
	Jitter  float64
	Max     time.Duration
	// Rand supplies the jitter; nil means a randomly seeded source.
	Rand *rand.Rand

	attempt int
}

// NewBackoff returns a Backoff with the defaults.
func NewBackoff(r *rand.Rand) *Backoff {
	return &Backoff{
		Initial: DefaultBackoffInitial,
		Factor:  DefaultBackoffFactor,
		Jitter:  DefaultBackoffJitter,
		Max:     DefaultBackoffMax,
		Rand:    r,
	}
}

// Next returns the delay before the next attempt and counts a failure.
func (b *Backoff) Next() time.Duration {
	if b.Rand == nil {
		b.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	base := float64(b.Initial) * math.Pow(b.Factor, float64(b.attempt))
	if base > float64(b.Max) || math.IsInf(base, 0) {
		base = float64(b.Max)
	} else {
		b.attempt++
	}
	d := base * (1 + b.Jitter*(2*b.Rand.Float64()-1))
	return time.Duration(min(d, float64(b.Max)))
}

// Reset starts over from Initial, after a connection that lived long
// enough or a successful registration.
func (b *Backoff) Reset() {
	b.attempt = 0
}
