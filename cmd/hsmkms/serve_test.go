package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/hsmkms/hsmkms/cmd/internal/pki"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/ops"
)

func TestRoleOf(t *testing.T) {
	t.Parallel()
	cert := func(cn string, ou ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ou}}
	}
	roleOf := roleOf([]string{"ops"})
	tests := []struct {
		name string
		peer *kmip.Peer
		want ops.Role
	}{
		{"admin OU", &kmip.Peer{Identity: "a", Cert: cert("a", pki.OUAdmin)}, ops.RoleAdmin},
		{"client OU", &kmip.Peer{Identity: "c", Cert: cert("c", pki.OUClient)}, ops.RoleClient},
		{"listed in auth.admins", &kmip.Peer{Identity: "ops", Cert: cert("ops", pki.OUClient)}, ops.RoleAdmin},
		{"no OU", &kmip.Peer{Identity: "x", Cert: cert("x")}, ops.RoleClient},
		{"no certificate", &kmip.Peer{Identity: "y"}, ops.RoleClient},
		{"empty identity is never listed", &kmip.Peer{Cert: cert("")}, ops.RoleClient},
		{"no peer", nil, ops.RoleClient},
	}
	for _, tt := range tests {
		if got := roleOf(tt.peer); got != tt.want {
			t.Errorf("%s: role %v, want %v", tt.name, got, tt.want)
		}
	}
}
