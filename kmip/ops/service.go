package ops

import (
	"context"
	"crypto"
	"log/slog"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/meta"
)

// Keys is what the operations need from the token. *hsm.Token implements it.
type Keys interface {
	Generate(ctx context.Context, bits int) (w hsm.Wrapped, digest []byte, err error)
	Import(ctx context.Context, kind hsm.KeyKind, material []byte) (hsm.Wrapped, error)
	ExportPlain(ctx context.Context, k hsm.Key) ([]byte, error)
	Encrypt(ctx context.Context, r hsm.CipherRequest) (hsm.CipherResult, error)
	Decrypt(ctx context.Context, r hsm.CipherRequest) ([]byte, error)
	Random(ctx context.Context, n int) ([]byte, error)
	Forget(id string)

	// Asymmetric keys and key wrapping (create_key_pair.go, sign.go, wrap.go).
	GenerateKeyPair(ctx context.Context, r hsm.KeyPairRequest) (hsm.KeyPair, error)
	ImportPrivate(ctx context.Context, key crypto.PrivateKey) (hsm.Wrapped, error)
	Sign(ctx context.Context, r hsm.SignRequest) ([]byte, error)
	DecryptOAEP(ctx context.Context, r hsm.OAEPRequest) ([]byte, error)
	WrapKey(ctx context.Context, r hsm.WrapRequest) ([]byte, error)
	UnwrapKey(ctx context.Context, r hsm.UnwrapRequest) (hsm.Unwrapped, error)

	// HMAC and 3DES keys and MACs (create.go, rekey.go, mac.go).
	GenerateSecret(ctx context.Context, kind hsm.KeyKind, bits int) (hsm.Wrapped, []byte, error)
	MAC(ctx context.Context, r hsm.MACRequest) ([]byte, error)
	VerifyMAC(ctx context.Context, r hsm.MACRequest, mac []byte) (bool, error)
}

// Store is what the operations need from the metadata database. *meta.Store implements it.
type Store interface {
	View(ctx context.Context, fn func(*meta.Tx) error) error
	Update(ctx context.Context, fn func(*meta.Tx) error) error
}

var (
	_ Keys  = (*hsm.Token)(nil)
	_ Store = (*meta.Store)(nil)
)

// Config assembles a Service.
type Config struct {
	Keys   Keys
	Store  Store
	Logger *slog.Logger // nil: discard
	// Policy decides the role of a connection's peer (authz.go); nil gives everyone
	// the built-in client role.
	Policy *Policy
	Now    func() time.Time // nil: time.Now
	// ServerInfo is the vendor text Query reports.
	ServerInfo string
	// DefaultObjectGroup is the Object Group given to new objects created
	// without one; empty: none.
	DefaultObjectGroup string
	// Replicas, when set, must hold new objects before their creation is
	// acknowledged (replicas.go).
	Replicas Replicas
}

// Service implements the KMIP operations on a token and a store.
type Service struct {
	keys     Keys
	store    Store
	log      *slog.Logger
	policy   *Policy
	now      func() time.Time
	info     string
	cache    *objectCache
	streams  *streams
	mux      *kmip.Mux // what Register installed, which Query reports
	replicas Replicas
	group    string // DefaultObjectGroup
}

// cachedObjects bounds the object cache: about 2 KiB each, so a few tens of MiB.
const cachedObjects = 16384

// New builds a Service.
func New(cfg Config) *Service {
	s := &Service{keys: cfg.Keys, store: cfg.Store, log: cfg.Logger, policy: cfg.Policy, now: cfg.Now, info: cfg.ServerInfo,
		cache: newObjectCache(cachedObjects), streams: newStreams(), replicas: cfg.Replicas, group: cfg.DefaultObjectGroup}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.policy == nil {
		s.policy, _ = NewPolicy(nil, nil) // the built-in roles always compile
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.info == "" {
		s.info = "hsmkms"
	}
	return s
}

// Register adds every operation to m, each behind the policy's operation check.
func (s *Service) Register(m *kmip.Mux) {
	s.mux = m
	for op, h := range map[kmip14.Operation]kmip.HandlerFunc{
		kmip14.OperationDiscoverVersions:   s.discoverVersions,
		kmip14.OperationQuery:              s.query,
		kmip14.OperationCreate:             s.create,
		kmip14.OperationRegister:           s.register,
		kmip14.OperationGet:                s.get,
		kmip14.OperationGetAttributes:      s.getAttributes,
		kmip14.OperationGetAttributeList:   s.getAttributeList,
		kmip14.OperationModifyAttribute:    s.modifyAttribute,
		kmip14.OperationActivate:           s.activate,
		kmip14.OperationRevoke:             s.revoke,
		kmip14.OperationDestroy:            s.destroy,
		kmip14.OperationLocate:             s.locate,
		kmip14.OperationEncrypt:            s.encrypt,
		kmip14.OperationDecrypt:            s.decrypt,
		kmip14.OperationCreateKeyPair:      s.createKeyPair,
		kmip14.OperationSign:               s.sign,
		kmip14.OperationSignatureVerify:    s.signatureVerify,
		kmip14.OperationAddAttribute:       s.addAttribute,
		kmip14.OperationDeleteAttribute:    s.deleteAttribute,
		kmip14.OperationCheck:              s.check,
		kmip14.OperationReKey:              s.reKey,
		kmip14.OperationObtainLease:        s.obtainLease,
		kmip14.OperationGetUsageAllocation: s.getUsageAllocation,
		kmip14.OperationMAC:                s.mac,
		kmip14.OperationMACVerify:          s.macVerify,
		kmip14.OperationRNGRetrieve:        s.rngRetrieve,
	} {
		m.Handle(uint32(op), s.authorized(op, h))
	}
}
