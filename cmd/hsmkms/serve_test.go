package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/hsmkms/hsmkms/cmd/internal/config"
	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/ops"
)

func TestRoleOf(t *testing.T) {
	t.Parallel()
	cert := func(cn string, ou ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ou}}
	}
	pol, err := policy(config.Auth{Admins: []string{"ops"}, Roles: []config.Role{
		{Name: "auditor", Operations: []string{"Get Attributes", "Locate"}, AllObjects: true, Identities: []string{"aud"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		peer *kmip.Peer
		want string
	}{
		{"configured role", &kmip.Peer{Identity: "aud", Cert: cert("aud", pki.OUAdmin)}, "auditor"},
		{"admin OU", &kmip.Peer{Identity: "a", Cert: cert("a", pki.OUAdmin)}, ops.RoleAdmin},
		{"client OU", &kmip.Peer{Identity: "c", Cert: cert("c", pki.OUClient)}, ops.RoleClient},
		{"listed in auth.admins", &kmip.Peer{Identity: "ops", Cert: cert("ops", pki.OUClient)}, ops.RoleAdmin},
		{"no OU", &kmip.Peer{Identity: "x", Cert: cert("x")}, ops.RoleClient},
		{"no certificate", &kmip.Peer{Identity: "y"}, ops.RoleClient},
		{"empty identity is never listed", &kmip.Peer{Cert: cert("")}, ops.RoleClient},
		{"no peer", nil, ops.RoleClient},
	}
	for _, tt := range tests {
		if got := pol.RoleOf(tt.peer); got != tt.want {
			t.Errorf("%s: role %v, want %v", tt.name, got, tt.want)
		}
	}
}
