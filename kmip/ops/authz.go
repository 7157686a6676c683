package ops

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Authorisation: a client certificate holds one role; a role is a set of operations
// and a scope. A role with AllObjects acts on every object; any other acts on the
// objects its identity owns (created or registered) or was granted (`hsmkms keys
// grant`). Discover Versions and Query describe the server, not objects, and are open
// to every authenticated client whatever its role says.

// Built-in role names. Unless the configuration defines roles with these names,
// RoleAdmin may do everything to every object and RoleClient everything to its own
// and granted objects.
const (
	RoleAdmin  = "admin"
	RoleClient = "client"
)

// RoleSpec is one configured role and the certificates that hold it.
type RoleSpec struct {
	Name string
	// Operations are KMIP operation names ("Get Attributes" or "GetAttributes"), or
	// "*" for every operation the server offers.
	Operations []string
	// AllObjects lets the role act on every object, not only its own and granted
	// ones.
	AllObjects bool
	// A certificate holds the role when its subject CN is one of Identities, its
	// subject (RFC 2253 string, e.g. "CN=app,O=Example") one of Subjects, one of its
	// DNS, e-mail, IP or URI SANs one of SANs, or its issuer's subject (or issuer CN)
	// one of Issuers.
	Identities, Subjects, SANs, Issuers []string
}

// role is a compiled RoleSpec.
type role struct {
	spec RoleSpec
	all  bool // every operation
	ops  map[kmip14.Operation]bool
}

func (r *role) allows(op kmip14.Operation) bool {
	return r.all || r.ops[op] || op == kmip14.OperationDiscoverVersions || op == kmip14.OperationQuery
}

// Policy maps a connection's peer to a role.
type Policy struct {
	roles    []*role
	byName   map[string]*role
	fallback func(*kmip.Peer) string
}

// NewPolicy compiles roles, checked in order: a certificate holds the first role
// whose matchers it meets, else the role fallback names (nil: RoleClient). The
// built-in admin and client roles are added unless specs define them.
func NewPolicy(specs []RoleSpec, fallback func(*kmip.Peer) string) (*Policy, error) {
	p := &Policy{byName: map[string]*role{}, fallback: fallback}
	if p.fallback == nil {
		p.fallback = func(*kmip.Peer) string { return RoleClient }
	}
	builtin := []RoleSpec{
		{Name: RoleAdmin, Operations: []string{"*"}, AllObjects: true},
		{Name: RoleClient, Operations: []string{"*"}},
	}
	for _, b := range builtin {
		if !slices.ContainsFunc(specs, func(s RoleSpec) bool { return s.Name == b.Name }) {
			specs = append(specs, b)
		}
	}
	for _, s := range specs {
		if s.Name == "" {
			return nil, fmt.Errorf("compile role: a role has no name")
		}
		if _, dup := p.byName[s.Name]; dup {
			return nil, fmt.Errorf("compile role %q: defined twice", s.Name)
		}
		r := &role{spec: s, ops: map[kmip14.Operation]bool{}}
		for _, name := range s.Operations {
			if name == "*" {
				r.all = true
				continue
			}
			v, ok := kmip14.OperationEnum.Value(name)
			if !ok {
				return nil, fmt.Errorf("compile role %q: unknown KMIP operation %q", s.Name, name)
			}
			r.ops[kmip14.Operation(v)] = true
		}
		p.roles = append(p.roles, r)
		p.byName[s.Name] = r
	}
	return p, nil
}

// RoleOf names the role of the peer.
func (p *Policy) RoleOf(peer *kmip.Peer) string { return p.roleOf(peer).spec.Name }

func (p *Policy) roleOf(peer *kmip.Peer) *role {
	if peer == nil {
		return p.byName[RoleClient]
	}
	if peer.Cert != nil {
		for _, r := range p.roles {
			if r.matches(peer.Cert) {
				return r
			}
		}
	}
	if r, ok := p.byName[p.fallback(peer)]; ok {
		return r
	}
	return p.byName[RoleClient]
}

// matches reports whether cert meets one of the role's matchers.
func (r *role) matches(cert *x509.Certificate) bool {
	s := r.spec
	if cert.Subject.CommonName != "" && slices.Contains(s.Identities, cert.Subject.CommonName) {
		return true
	}
	if slices.Contains(s.Subjects, cert.Subject.String()) {
		return true
	}
	if slices.Contains(s.Issuers, cert.Issuer.String()) || (cert.Issuer.CommonName != "" && slices.Contains(s.Issuers, cert.Issuer.CommonName)) {
		return true
	}
	sans := append(append([]string{}, cert.DNSNames...), cert.EmailAddresses...)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range cert.URIs {
		sans = append(sans, u.String())
	}
	for _, san := range sans {
		if slices.Contains(s.SANs, san) {
			return true
		}
	}
	return false
}

// authorized wraps the handler of op with the role's operation check.
func (s *Service) authorized(op kmip14.Operation, h kmip.HandlerFunc) kmip.HandlerFunc {
	return func(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
		if r := s.policy.roleOf(kmip.PeerFrom(ctx)); !r.allows(op) {
			return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "role %q may not use %v", r.spec.Name, op)
		}
		return h(ctx, it)
	}
}
