package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Probe steps, in the order Probe runs them.
const (
	ProbeModule = "module loads"
	ProbeToken  = "token found"
	ProbeLogin  = "user PIN logs in"
)

// ProbeResult is the outcome of one Probe step; Err is nil when it passed.
type ProbeResult struct {
	Step string
	Err  error
}

// Probe checks, one step at a time, that cfg's module loads, that the token labelled
// cfg.TokenLabel exists and that the user PIN logs in, so an operator learns which
// one is wrong (`hsmkms config check`). It stops at the first failure; the results
// list the steps run. It leaves nothing open and never logs the PIN. A process that
// already has the token open is logged in as a whole, so there the PIN is not
// checked again.
func Probe(ctx context.Context, cfg Config) []ProbeResult {
	if err := cfg.Validate(); err != nil {
		return []ProbeResult{{ProbeModule, err}}
	}
	if err := ctx.Err(); err != nil {
		return []ProbeResult{{ProbeModule, err}}
	}
	c, ownInit, err := load(cfg)
	if err != nil {
		return []ProbeResult{{ProbeModule, err}}
	}
	defer func() {
		if ownInit {
			c.Finalize()
		}
		c.Destroy()
	}()
	out := []ProbeResult{{ProbeModule, nil}}
	slot, err := findSlot(c, cfg.TokenLabel)
	out = append(out, ProbeResult{ProbeToken, err})
	if err != nil {
		return out
	}
	return append(out, ProbeResult{ProbeLogin, login(c, slot, cfg.PIN, ownInit)})
}

// login opens a session on slot and logs the user in, and out again when this
// process has no other Token on the module (logging out is token-wide).
func login(c p11, slot uint, src PINSource, logout bool) error {
	pin, err := src.Read()
	if err != nil {
		return err
	}
	defer clear(pin)
	sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return fmt.Errorf("open session: %w", mapErr(err, opOther))
	}
	defer c.CloseSession(sh)
	err = c.Login(sh, pkcs11.CKU_USER, string(pin))
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("log in user (PIN from %v): %w", src, mapErr(err, opOther))
	}
	if logout {
		c.Logout(sh)
	}
	return nil
}
