package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// MasterLabel is the label (and Wrapped.KEK) of the first master wrapping
// key, made by InitKeys. RotateMaster adds hsmkms-master-2, -3, ... (see
// master.go); new keys are wrapped under the newest one.
const MasterLabel = masterPrefix + "1"

// session is one slot of the pool. A slot whose epoch is older than the
// token's has lost its handle (the token dropped every session) and is
// reopened on the next acquire.
type session struct {
	h     pkcs11.SessionHandle
	epoch uint64 // 0: not open
}

// Token is an open, logged-in PKCS#11 token. It is safe for concurrent use.
type Token struct {
	p11     p11
	log     *slog.Logger
	label   string
	slot    uint
	pin     []byte // kept to log in again after the token drops its sessions
	ownInit bool   // this Token ran C_Initialize, so Close finalizes
	pool    chan *session
	cache   *handleCache
	epoch   atomic.Uint64
	errs    errorCounts // PKCS#11 errors by CKR name, for Stats

	// life is read-held by every operation and write-held by Close, so the
	// module is never finalized under a running call.
	life   sync.RWMutex
	closed bool

	// mu serialises use of the home session and guards the fields below.
	// Lock order: a pooled session is acquired before mu, never after.
	mu      sync.Mutex
	home    pkcs11.SessionHandle           // owns the cached session objects; never closed while open
	master  pkcs11.ObjectHandle            // newest master; 0 until InitKeys created it
	trusted bool                           // master has CKA_TRUSTED, so keys get CKA_WRAP_WITH_TRUSTED
	newest  string                         // label of master
	keks    map[string]pkcs11.ObjectHandle // KEK label -> handle, for every KEK used so far
	scanned time.Time                      // when the masters were last looked up (see masterKey)
}

// load sets cfg.SetEnv (SoftHSM2 reads SOFTHSM2_CONF at C_Initialize) and
// loads and initialises the module. A module already initialised by another
// Token in this process is shared; ownInit is then false.
func load(cfg Config) (ctx *pkcs11.Ctx, ownInit bool, err error) {
	for k, v := range cfg.SetEnv {
		if err := os.Setenv(k, v); err != nil {
			return nil, false, fmt.Errorf("set env %s: %w", k, err)
		}
	}
	ctx = pkcs11.New(cfg.Module)
	if ctx == nil {
		return nil, false, fmt.Errorf("load module %s: %w", cfg.Module, ErrTokenUnavailable)
	}
	err = ctx.Initialize()
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return ctx, false, nil
	}
	if err != nil {
		ctx.Destroy()
		return nil, false, fmt.Errorf("initialize module %s: %w", cfg.Module, mapErr(err, opOther))
	}
	return ctx, true, nil
}

// findSlot returns the slot of the initialised token labelled label.
func findSlot(c p11, label string) (uint, error) {
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", mapErr(err, opOther))
	}
	var found []uint
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err != nil {
			return 0, fmt.Errorf("read token info of slot %d: %w", s, mapErr(err, opOther))
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && ti.Label == label {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("find token %q: %w", label, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("find token %q: %d tokens carry this label: %w", label, len(found), ErrInvalidInput)
}

// InitToken initialises the first uninitialised token as cfg.TokenLabel with
// soPIN, then sets the user PIN from cfg.PIN as the SO. It is meant for
// SoftHSM2, which always offers one uninitialised slot. The PINs travel only
// through PKCS#11 calls, never argv.
func InitToken(ctx context.Context, cfg Config, soPIN []byte) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(soPIN) == 0 {
		return fmt.Errorf("init token %q: empty SO PIN: %w", cfg.TokenLabel, ErrInvalidInput)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("init token %q: %w", cfg.TokenLabel, err)
	}
	pin, err := cfg.PIN.Read()
	if err != nil {
		return fmt.Errorf("init token %q: %w", cfg.TokenLabel, err)
	}
	defer clear(pin)
	c, ownInit, err := load(cfg)
	if err != nil {
		return fmt.Errorf("init token %q: %w", cfg.TokenLabel, err)
	}
	defer func() {
		if ownInit {
			c.Finalize()
		}
		c.Destroy()
	}()
	if _, err := findSlot(c, cfg.TokenLabel); err == nil {
		return fmt.Errorf("init token %q: a token with this label exists: %w", cfg.TokenLabel, ErrInvalidInput)
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("init token %q: %w", cfg.TokenLabel, err)
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("init token %q: list slots: %w", cfg.TokenLabel, mapErr(err, opOther))
	}
	free, ok := uint(0), false
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, ok = s, true
			break
		}
	}
	if !ok {
		return fmt.Errorf("init token %q: no uninitialised slot: %w", cfg.TokenLabel, ErrNotFound)
	}
	if err := c.InitToken(free, string(soPIN), cfg.TokenLabel); err != nil {
		return fmt.Errorf("init token %q in slot %d: %w", cfg.TokenLabel, free, mapErr(err, opOther))
	}
	// SoftHSM2 may move the new token to another slot ID; look it up again.
	slot, err := findSlot(c, cfg.TokenLabel)
	if err != nil {
		return fmt.Errorf("init token %q: %w", cfg.TokenLabel, err)
	}
	sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("init token %q: open session: %w", cfg.TokenLabel, mapErr(err, opOther))
	}
	defer c.CloseSession(sh)
	if err := c.Login(sh, pkcs11.CKU_SO, string(soPIN)); err != nil {
		return fmt.Errorf("init token %q: log in SO: %w", cfg.TokenLabel, mapErr(err, opOther))
	}
	defer c.Logout(sh)
	if err := c.InitPIN(sh, string(pin)); err != nil {
		return fmt.Errorf("init token %q: set user PIN: %w", cfg.TokenLabel, mapErr(err, opOther))
	}
	return nil
}

// Open loads the module, finds the token by label, logs the user in and
// builds the session pool. Close releases it all.
//
// Several Tokens may use one module in a process: the first one runs
// C_Initialize and finalizes on Close, so it must be closed last; the others
// only open and close their own sessions.
func Open(ctx context.Context, cfg Config) (*Token, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open token %q: %w", cfg.TokenLabel, err)
	}
	pin, err := cfg.PIN.Read()
	if err != nil {
		return nil, fmt.Errorf("open token %q: %w", cfg.TokenLabel, err)
	}
	c, ownInit, err := load(cfg)
	if err != nil {
		clear(pin)
		return nil, fmt.Errorf("open token %q: %w", cfg.TokenLabel, err)
	}
	t := &Token{
		p11:     c,
		log:     cfg.logger(),
		label:   cfg.TokenLabel,
		pin:     pin,
		ownInit: ownInit,
		pool:    make(chan *session, cfg.maxSessions()),
		cache:   newHandleCache(cfg.cacheSize()),
		keks:    make(map[string]pkcs11.ObjectHandle),
	}
	t.epoch.Store(1)
	if err := t.start(); err != nil {
		t.shutdown()
		return nil, fmt.Errorf("open token %q: %w", cfg.TokenLabel, err)
	}
	for range cap(t.pool) {
		t.pool <- &session{}
	}
	t.log.Info("token opened", "token", t.label, "slot", t.slot,
		"sessions", cap(t.pool), "master_key", t.master != 0, "trusted_wrap", t.trusted)
	return t, nil
}

// start finds the slot, opens and logs in the home session and looks up the
// master key.
func (t *Token) start() error {
	slot, err := findSlot(t.p11, t.label)
	if err != nil {
		return err
	}
	t.slot = slot
	if t.home, _, err = t.openSession(); err != nil {
		return err
	}
	return t.findMaster()
}

// openSession opens an RW session and logs the user in. fresh reports that
// the token had no login, i.e. it dropped every private session object.
func (t *Token) openSession() (sh pkcs11.SessionHandle, fresh bool, err error) {
	sh, err = t.p11.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, false, fmt.Errorf("open session: %w", mapErr(err, opOther))
	}
	err = t.p11.Login(sh, pkcs11.CKU_USER, string(t.pin))
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return sh, false, nil
	}
	if err != nil {
		t.p11.CloseSession(sh)
		return 0, false, fmt.Errorf("log in user: %w", mapErr(err, opOther))
	}
	return sh, true, nil
}

// findMaster looks every master key up on the home session and makes the
// newest generation the one new keys are wrapped under; t.mu is held (or the
// Token is not shared yet).
func (t *Token) findMaster() error {
	found, err := t.findLabelled(t.home, masterPrefix)
	if err != nil {
		return err
	}
	t.scanned = time.Now()
	for label := range t.keks {
		if _, ok := masterGen(label); ok {
			delete(t.keks, label)
		}
	}
	newest, gen := "", 0
	for label, h := range found {
		g, ok := masterGen(label)
		if !ok {
			continue
		}
		t.keks[label] = h
		if g > gen {
			newest, gen = label, g
		}
	}
	if newest == "" {
		t.master, t.newest, t.trusted = 0, "", false
		return nil
	}
	h := found[newest]
	attrs, err := t.p11.GetAttributeValue(t.home, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TRUSTED, nil)})
	if err != nil {
		return fmt.Errorf("read CKA_TRUSTED of %s: %w", newest, mapErr(err, opOther))
	}
	t.master, t.newest = h, newest
	t.trusted = len(attrs) == 1 && len(attrs[0].Value) == 1 && attrs[0].Value[0] != 0
	return nil
}

// findKey returns the token secret key with the given label.
func (t *Token) findKey(sh pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	if err := t.p11.FindObjectsInit(sh, tmpl); err != nil {
		return 0, fmt.Errorf("find key %s: %w", label, mapErr(err, opOther))
	}
	hs, _, err := t.p11.FindObjects(sh, 2)
	if ferr := t.p11.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	if err != nil {
		return 0, fmt.Errorf("find key %s: %w", label, mapErr(err, opOther))
	}
	switch len(hs) {
	case 0:
		return 0, fmt.Errorf("find key %s: %w", label, ErrNotFound)
	case 1:
		return hs[0], nil
	}
	return 0, fmt.Errorf("find key %s: several keys carry this label: %w", label, ErrInvalidInput)
}

// begin guards an operation against Close; the caller must call t.end.
func (t *Token) begin() error {
	t.life.RLock()
	if t.closed {
		t.life.RUnlock()
		return fmt.Errorf("use token %q: closed: %w", t.label, ErrTokenUnavailable)
	}
	return nil
}

func (t *Token) end() { t.life.RUnlock() }

// acquire takes a pooled session, opening it if needed. Waiting honours ctx;
// when ctx ends first the error is ErrBusy (and ctx's error).
func (t *Token) acquire(ctx context.Context) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("acquire session: %w", err)
	}
	var s *session
	select {
	case s = <-t.pool:
	default:
		select {
		case s = <-t.pool:
		case <-ctx.Done():
			return nil, fmt.Errorf("acquire session: %w: %w", ErrBusy, ctx.Err())
		}
	}
	if ep := t.epoch.Load(); s.epoch != ep {
		// An outdated handle died with the token's sessions: do not close it,
		// the number may already belong to a new session.
		sh, fresh, err := t.openSession()
		if err != nil {
			t.errs.count(err)
			s.epoch = 0
			t.pool <- s
			return nil, err
		}
		s.h, s.epoch = sh, ep
		if fresh {
			// The login was gone, so were the private session objects.
			t.resync()
		}
	}
	return s, nil
}

// release returns s to the pool. After ErrTokenUnavailable the session is
// replaced on next use and the home session and master handle are checked.
func (t *Token) release(s *session, err error) {
	t.errs.count(err)
	if !errors.Is(err, ErrTokenUnavailable) {
		t.pool <- s
		return
	}
	if !sessionDead(err) {
		t.p11.CloseSession(s.h)
	}
	s.epoch = 0
	t.pool <- s
	t.log.Warn("token session replaced", "token", t.label, "err", err)
	t.resync()
}

// resync makes the home session, login and master handle valid again after
// a token error. When the home session is gone, every session is: the epoch
// moves on (pooled sessions reopen lazily) and the cache forgets its handles,
// which died with the session that created them.
func (t *Token) resync() {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, err := t.p11.GetSessionInfo(t.home)
	switch {
	case err != nil:
		// Every session died with the home session: retire them all now, even if
		// no new one opens yet, so that none is tried again once the token is back.
		t.epoch.Add(1)
		t.cache.orphanAll()
		t.forgetObjects()
		home, _, err := t.openSession()
		if err != nil {
			t.log.Error("token unavailable", "token", t.label, "err", err)
			return
		}
		t.home = home
	case info.State != pkcs11.CKS_RW_USER_FUNCTIONS:
		// A logout destroyed the private session objects.
		if err := t.p11.Login(t.home, pkcs11.CKU_USER, string(t.pin)); err != nil &&
			!errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			t.log.Error("token login failed", "token", t.label, "err", err)
			return
		}
		t.cache.orphanAll()
		t.forgetObjects()
	case t.master == 0:
		return
	default:
		_, err := t.p11.GetAttributeValue(t.home, t.master, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)})
		if err == nil {
			return // healthy: the error was the caller's session alone
		}
	}
	if err := t.findMaster(); err != nil {
		t.log.Error("token master key lookup failed", "token", t.label, "err", err)
		return
	}
	t.log.Warn("token sessions recovered", "token", t.label)
}

// forgetObjects drops the cached handles of token objects (KEKs; the audit
// key is found anew for each session copy, see auditKey): a module may
// renumber private objects once the login is lost, as SoftHSM2 does. They
// are looked up again on next use; t.mu is held.
func (t *Token) forgetObjects() {
	clear(t.keks)
}

// Close logs out, closes every session and finalizes the module (when this
// Token initialised it). It waits for running operations and is idempotent.
func (t *Token) Close() error {
	t.life.Lock()
	defer t.life.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	err := t.shutdown()
	t.log.Info("token closed", "token", t.label)
	return err
}

// shutdown releases everything start and the pool acquired.
func (t *Token) shutdown() error {
	var errs []error
	for len(t.pool) > 0 {
		if s := <-t.pool; s.epoch == t.epoch.Load() {
			t.p11.CloseSession(s.h)
		}
	}
	if t.home != 0 {
		// Logging out is token-wide: a Token sharing the module with another
		// one must not log the other out.
		if t.ownInit {
			if err := t.p11.Logout(t.home); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
				errs = append(errs, fmt.Errorf("log out token %q: %w", t.label, mapErr(err, opOther)))
			}
		}
		// Closing the home session destroys the cached session objects.
		t.p11.CloseSession(t.home)
	}
	if t.ownInit {
		if err := t.p11.Finalize(); err != nil {
			errs = append(errs, fmt.Errorf("finalize module: %w", mapErr(err, opOther)))
		}
	}
	t.p11.Destroy()
	clear(t.pin)
	return errors.Join(errs...)
}

// Ping checks that a session works and the master key is present.
func (t *Token) Ping(ctx context.Context) (err error) {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return fmt.Errorf("ping token %q: %w", t.label, err)
	}
	defer func() { t.release(s, err) }()
	master, err := t.masterKey()
	if err != nil {
		return fmt.Errorf("ping token %q: %w", t.label, err)
	}
	if _, err := t.p11.GetAttributeValue(s.h, master.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)}); err != nil {
		return fmt.Errorf("ping token %q: read %s: %w", t.label, master.label, mapErr(err, opOther))
	}
	return nil
}

// masterKey returns the newest master, which new keys are wrapped under. It
// looks the masters up again when the last look is older than masterRecheck,
// so a server learns of a master that `kek rotate-master` created in another
// process without a restart.
func (t *Token) masterKey() (kekRef, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.scanned) > masterRecheck {
		if err := t.findMaster(); err != nil {
			t.log.Warn("token master key lookup failed", "token", t.label, "err", err)
		}
	}
	if t.master == 0 {
		return kekRef{}, fmt.Errorf("find key %s (run init): %w", MasterLabel, ErrNotFound)
	}
	return kekRef{h: t.master, label: t.newest, trusted: t.trusted}, nil
}

// InitKeys creates the master wrapping key if it is missing. It is
// idempotent.
//
// soPIN is accepted so that managed keys could carry CKA_WRAP_WITH_TRUSTED,
// but on SoftHSM2 marking the master CKA_TRUSTED is not feasible: only the SO
// may set CKA_TRUSTED, and an SO session cannot see private objects
// (CKR_OBJECT_HANDLE_INVALID, verified on 2.6.1). Making the master public
// would let the SO see it, but SoftHSM2 stores public objects unencrypted on
// disk, exposing the key that protects every other. So InitKeys logs and
// skips that step. A master that is already trusted (set by a vendor tool)
// is detected, and new keys then get CKA_WRAP_WITH_TRUSTED.
func (t *Token) InitKeys(ctx context.Context, soPIN []byte) (err error) {
	if err := t.EnsureAuditKey(ctx); err != nil {
		return fmt.Errorf("init keys: %w", err)
	}
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return fmt.Errorf("init keys: %w", err)
	}
	defer func() { t.release(s, err) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.master == 0 {
		if err := t.findMaster(); err != nil {
			return fmt.Errorf("init keys: %w", err)
		}
	}
	if t.master == 0 {
		if err := t.createMaster(s, MasterLabel); err != nil {
			return fmt.Errorf("init keys: %w", err)
		}
	}
	if soPIN != nil && !t.trusted {
		t.log.Info("trusted wrapping unavailable", "token", t.label, "key_ref", MasterLabel,
			"reason", "the SO cannot see the private master key to set CKA_TRUSTED")
	}
	if err := t.initBackupKEK(s); err != nil {
		return fmt.Errorf("init keys: %w", err)
	}
	return nil
}
