package kmiptest_test

import (
	"context"
	"crypto/x509"
	"net"
	"slices"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

func TestPKI(t *testing.T) {
	t.Parallel()
	p := kmiptest.NewPKI(t)
	srv := p.ServerTLS().Certificates[0].Leaf
	if err := srv.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := srv.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	cli := p.ClientTLS(t, "alice").Certificates[0].Leaf
	if cli.Subject.CommonName != "alice" || !slices.Equal(cli.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("client certificate %v %v", cli.Subject, cli.ExtKeyUsage)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: p.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not chain to the CA: %v", err)
	}
	if len(p.ClientTLS(t, "").Certificates) != 0 {
		t.Error("empty identity still got a certificate")
	}
}

func TestCall(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, kmip.HandlerFunc(func(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
		if it.Operation != uint32(kmip14.OperationGet) {
			return nil, kmip.Errorf(kmip14.ResultReasonOperationNotSupported, "only get")
		}
		return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, kmip.PeerFrom(ctx).Identity)), nil
	}))
	if _, _, err := net.SplitHostPort(srv.Addr); err != nil {
		t.Fatal(err)
	}
	cl := srv.Dial(t, "bob")
	tests := []struct {
		op      kmip14.Operation
		status  kmip14.ResultStatus
		reason  kmip14.ResultReason
		message string
	}{
		{kmip14.OperationGet, kmip14.ResultStatusSuccess, 0, ""},
		{kmip14.OperationCreate, kmip14.ResultStatusOperationFailed, kmip14.ResultReasonOperationNotSupported, "only get"},
	}
	for _, tt := range tests {
		it, err := cl.Call(t.Context(), msg.Version{Major: 1, Minor: 2}, uint32(tt.op), nil)
		if err != nil {
			t.Fatal(err)
		}
		if status, reason, message := kmiptest.Result(it); status != tt.status || reason != tt.reason || message != tt.message {
			t.Errorf("%v: %v %v %q", tt.op, status, reason, message)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := cl.Call(ctx, msg.Version{Major: 1}, uint32(kmip14.OperationGet), nil); err == nil {
		t.Error("call with a cancelled context succeeded")
	}
}
