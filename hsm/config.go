package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
)

// PINSource names where a PIN comes from: a file or an environment
// variable, exactly one of them. It never holds the PIN itself, so a Config
// can be logged or printed safely.
type PINSource struct {
	File string
	Env  string
}

// Read returns the PIN with one trailing newline (LF or CRLF) trimmed.
// Errors name the file or variable, never the PIN.
func (p PINSource) Read() ([]byte, error) {
	var (
		pin  []byte
		from string
	)
	switch {
	case p.File != "" && p.Env != "":
		return nil, fmt.Errorf("read PIN: both file %s and env %s set: %w", p.File, p.Env, ErrInvalidInput)
	case p.File != "":
		from = "file " + p.File
		b, err := os.ReadFile(p.File)
		if err != nil {
			return nil, fmt.Errorf("read PIN %s: %w", from, err)
		}
		pin = b
	case p.Env != "":
		from = "env " + p.Env
		v, ok := os.LookupEnv(p.Env)
		if !ok {
			return nil, fmt.Errorf("read PIN %s: variable not set: %w", from, ErrInvalidInput)
		}
		pin = []byte(v)
	default:
		return nil, fmt.Errorf("read PIN: neither file nor env set: %w", ErrInvalidInput)
	}
	pin = bytes.TrimSuffix(pin, []byte("\n"))
	pin = bytes.TrimSuffix(pin, []byte("\r"))
	if len(pin) == 0 {
		return nil, fmt.Errorf("read PIN %s: empty: %w", from, ErrInvalidInput)
	}
	return pin, nil
}

// String names the source, never the PIN.
func (p PINSource) String() string {
	switch {
	case p.File != "":
		return "file " + p.File
	case p.Env != "":
		return "env " + p.Env
	}
	return "none"
}

// Config configures Open and InitToken.
type Config struct {
	Module      string            // PKCS#11 module path
	TokenLabel  string            // token label to select the slot
	PIN         PINSource         // user PIN
	SetEnv      map[string]string // env vars set before loading the module (SOFTHSM2_CONF)
	MaxSessions int               // session pool size; 0 means 2*GOMAXPROCS+2
	CacheSize   int               // bounded LRU of unwrapped session-key handles; 0 means 4096
	Logger      *slog.Logger      // nil means discard
}

// Validate checks the fields Open needs.
func (c Config) Validate() error {
	var errs []error
	if c.Module == "" {
		errs = append(errs, errors.New("module path is empty"))
	}
	if c.TokenLabel == "" || len(c.TokenLabel) > 32 {
		errs = append(errs, fmt.Errorf("token label %q must be 1 to 32 bytes", c.TokenLabel))
	}
	if (c.PIN.File == "") == (c.PIN.Env == "") {
		errs = append(errs, errors.New("set exactly one of PIN file and PIN env"))
	}
	if c.MaxSessions < 0 || c.CacheSize < 0 {
		errs = append(errs, errors.New("MaxSessions and CacheSize must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate hsm config: %w: %w", ErrInvalidInput, err)
	}
	return nil
}

func (c Config) maxSessions() int {
	if c.MaxSessions > 0 {
		return c.MaxSessions
	}
	return 2*runtime.GOMAXPROCS(0) + 2
}

func (c Config) cacheSize() int {
	if c.CacheSize > 0 {
		return c.CacheSize
	}
	return 4096
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}
