package app

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Secrets are the master's symmetric keys.
type Secrets struct {
	// JWTKey signs access tokens (HS256).
	JWTKey []byte
	// EncryptionKey (32 bytes) encrypts private keys and other secrets at rest.
	EncryptionKey []byte
}

// LoadSecrets takes the keys from cfg, or reads them from data_dir/secrets/,
// generating each once with 0600 permissions when absent.
func LoadSecrets(cfg Config) (Secrets, error) {
	var s Secrets
	var err error
	if s.JWTKey, err = secret(cfg.Auth.JWTSecret, cfg.DataDir, "jwt.key", 0); err != nil {
		return s, fmt.Errorf("jwt secret: %w", err)
	}
	if s.EncryptionKey, err = secret(cfg.Auth.EncryptionKey, cfg.DataDir, "encryption.key", 32); err != nil {
		return s, fmt.Errorf("encryption key: %w", err)
	}
	return s, nil
}

// secret decodes configured (base64 or hex; raw text for the JWT secret), or
// loads/generates dataDir/secrets/name. exact, when non-zero, is the required length.
func secret(configured, dataDir, name string, exact int) ([]byte, error) {
	if configured != "" {
		b := decodeKey(configured)
		if b == nil {
			if exact > 0 {
				return nil, fmt.Errorf("must be %d bytes in base64 or hex", exact)
			}
			b = []byte(configured)
		}
		if exact > 0 && len(b) != exact {
			return nil, fmt.Errorf("must be %d bytes, got %d", exact, len(b))
		}
		if exact == 0 && len(b) < 32 {
			return nil, errors.New("must be at least 32 bytes")
		}
		return b, nil
	}
	if dataDir == "" {
		return nil, errors.New("not configured and data_dir is empty")
	}
	dir := filepath.Join(dataDir, "secrets")
	path := filepath.Join(dir, name)
	if raw, err := os.ReadFile(path); err == nil {
		b := decodeKey(strings.TrimSpace(string(raw)))
		if b == nil || (exact > 0 && len(b) != exact) {
			return nil, fmt.Errorf("%s: malformed key file", path)
		}
		return b, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	n := exact
	if n == 0 {
		n = 32
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(b) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return b, nil
}

func decodeKey(s string) []byte {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) >= 16 {
		return b
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) >= 16 {
		return b
	}
	return nil
}

// Seal encrypts plaintext with AES-256-GCM; the nonce is prepended.
func (s Secrets) Seal(plaintext []byte) ([]byte, error) {
	gcm, err := s.gcm()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return gcm.Seal(nonce, nonce, plaintext, nil), nil
}

// Open decrypts what Seal produced.
func (s Secrets) Open(sealed []byte) ([]byte, error) {
	gcm, err := s.gcm()
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("decrypt: ciphertext too short")
	}
	out, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return out, nil
}

func (s Secrets) gcm() (cipher.AEAD, error) {
	block, err := aes.NewCipher(s.EncryptionKey)
	if err != nil {
		return nil, fmt.Errorf("cipher: %w", err)
	}
	return cipher.NewGCM(block)
}
