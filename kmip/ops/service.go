package ops

import (
	"context"
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

// Role is what a client may do.
type Role int

const (
	// RoleClient may create and register keys, which it then owns, and use, read and
	// manage only the objects it owns or was granted.
	RoleClient Role = iota
	// RoleAdmin may do everything to every object.
	RoleAdmin
)

// Config assembles a Service.
type Config struct {
	Keys   Keys
	Store  Store
	Logger *slog.Logger // nil: discard
	// RoleOf decides the role of a connection's peer; nil treats everyone as a client.
	RoleOf func(*kmip.Peer) Role
	Now    func() time.Time // nil: time.Now
	// ServerInfo is the vendor text Query reports.
	ServerInfo string
}

// Service implements the KMIP operations on a token and a store.
type Service struct {
	keys   Keys
	store  Store
	log    *slog.Logger
	roleOf func(*kmip.Peer) Role
	now    func() time.Time
	info   string
	cache  *objectCache
}

// cachedObjects bounds the object cache: about 2 KiB each, so a few tens of MiB.
const cachedObjects = 16384

// New builds a Service.
func New(cfg Config) *Service {
	s := &Service{keys: cfg.Keys, store: cfg.Store, log: cfg.Logger, roleOf: cfg.RoleOf, now: cfg.Now, info: cfg.ServerInfo,
		cache: newObjectCache(cachedObjects)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.roleOf == nil {
		s.roleOf = func(*kmip.Peer) Role { return RoleClient }
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.info == "" {
		s.info = "hsmkms"
	}
	return s
}

// Register adds every operation to m.
func (s *Service) Register(m *kmip.Mux) {
	for op, h := range map[kmip14.Operation]kmip.HandlerFunc{
		kmip14.OperationDiscoverVersions: s.discoverVersions,
		kmip14.OperationQuery:            s.query,
		kmip14.OperationCreate:           s.create,
		kmip14.OperationRegister:         s.register,
		kmip14.OperationGet:              s.get,
		kmip14.OperationGetAttributes:    s.getAttributes,
		kmip14.OperationGetAttributeList: s.getAttributeList,
		kmip14.OperationModifyAttribute:  s.modifyAttribute,
		kmip14.OperationActivate:         s.activate,
		kmip14.OperationRevoke:           s.revoke,
		kmip14.OperationDestroy:          s.destroy,
		kmip14.OperationLocate:           s.locate,
		kmip14.OperationEncrypt:          s.encrypt,
		kmip14.OperationDecrypt:          s.decrypt,
	} {
		m.Handle(uint32(op), h)
	}
}
