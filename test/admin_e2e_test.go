//go:build e2e

package test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
)

// scrape reads /metrics of app and returns each sample line's value by its series
// (name and labels as printed).
func scrape(t *testing.T, app *framework.Appliance) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + app.AdminAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// createKey creates an AES-256 key on s and returns its identifier.
func createKey(s *kmipSession) string {
	s.t.Helper()
	p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)))
	uid := p.Child(kmip14.TagUniqueIdentifier)
	if uid == nil {
		s.t.Fatal("Create returned no Unique Identifier")
	}
	return uid.Text()
}

func probe(t *testing.T, app *framework.Appliance, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + app.AdminAddr + path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsAndRevocation drives a real server: requests move the request counters,
// a client without a certificate and a revoked one move the handshake counters, the
// probes answer, `certs revoke` takes effect without a restart and `config check`
// passes on the appliance init made.
func TestMetricsAndRevocation(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})

	if out := app.MustCLI(t, "config", "check"); !strings.Contains(out, "all checks passed") {
		t.Errorf("config check on a fresh appliance:\n%s", out)
	}
	if code, body := probe(t, app, "/healthz"); code != 200 {
		t.Errorf("healthz: %d %s", code, body)
	}
	if code, body := probe(t, app, "/readyz"); code != 200 || !strings.Contains(body, "token: ok") ||
		!strings.Contains(body, "store: ok") || !strings.Contains(body, "kmip: ok") {
		t.Errorf("readyz: %d\n%s", code, body)
	}
	before := scrape(t, app)

	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	id := createKey(s)
	for range 3 {
		s.ok(kmip14.OperationGetAttributes, framework.UID(id))
	}
	s.fail(kmip14.OperationGetAttributes, kmip14.ResultReasonItemNotFound, framework.UID("no-such-id"))

	// A client without a certificate is refused at the handshake.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(framework.ReadFile(t, app.CAPEM))
	if c, err := framework.DialTLS(t.Context(), app.Addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}); err == nil {
		if _, err := c.RoundTripRaw(framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationDiscoverVersions, nil)).Append(nil)); err == nil {
			t.Error("client without certificate served")
		}
		c.Close()
	}

	// Revoke a client by name while the server runs.
	bundle := app.IssueClient(t, "to-revoke", "client")
	keep := app.IssueClient(t, "to-keep", "client")
	openKMIP(t, app, bundle, framework.Header{Version: ver12}).ok(kmip14.OperationDiscoverVersions)
	out := app.MustCLI(t, "certs", "revoke", "--name", "to-revoke")
	if !strings.Contains(out, "revoked ") {
		t.Errorf("certs revoke printed:\n%s", out)
	}
	if c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, bundle), framework.ReadFile(t, app.CAPEM)); err == nil {
		if _, err := c.RoundTripRaw(framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationDiscoverVersions, nil)).Append(nil)); err == nil {
			t.Error("revoked client served")
		}
		c.Close()
	}
	openKMIP(t, app, keep, framework.Header{Version: ver12}).ok(kmip14.OperationDiscoverVersions)

	after := scrape(t, app)
	moved := func(series string, by float64) {
		t.Helper()
		if d := after[series] - before[series]; d < by {
			t.Errorf("%s moved by %v, want at least %v", series, d, by)
		}
	}
	moved(`hsmkms_kmip_requests_total{operation="Create",result="Success"}`, 1)
	moved(`hsmkms_kmip_requests_total{operation="GetAttributes",result="Success"}`, 3)
	moved(`hsmkms_kmip_requests_total{operation="GetAttributes",result="ItemNotFound"}`, 1)
	moved(`hsmkms_kmip_request_duration_seconds_count{operation="Create"}`, 1)
	moved(`hsmkms_tls_handshake_failures_total{cause="no_cert"}`, 1)
	moved(`hsmkms_tls_handshake_failures_total{cause="revoked"}`, 1)
	moved(`hsmkms_store_commit_duration_seconds_count`, 1)
	if after[`hsmkms_kmip_connections_open`] < 3 { // s, the to-revoke and to-keep sessions are open
		t.Errorf("connections_open %v, want at least 3", after[`hsmkms_kmip_connections_open`])
	}
	if after[`hsmkms_hsm_sessions`] < 1 {
		t.Errorf("hsm_sessions %v", after[`hsmkms_hsm_sessions`])
	}
	if logs := app.Server.Logs(); strings.Count(logs, "cause=revoked") != 1 || !strings.Contains(logs, "cause=no_cert") {
		t.Errorf("handshake failures not logged once each:\n%s", logs)
	}

	// Stopping the server takes the admin listener down with it.
	app.Stop(t)
	if _, err := http.Get("http://" + app.AdminAddr + "/healthz"); err == nil {
		t.Error("admin listener still up after serve exited")
	}
}

// TestTLSKeyInToken serves with the TLS key inside the token: clients complete the
// handshake against the certificate init issued, no key file is on disk and config
// check agrees.
func TestTLSKeyInToken(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{InitArgs: []string{"--tls-key-in-token"}})
	if _, err := os.Stat(filepath.Join(app.Dir, "pki", "server-key.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("server-key.pem: %v, want it gone", err)
	}
	cfg := string(framework.ReadFile(t, filepath.Join(app.Dir, "hsmkms.toml")))
	if !strings.Contains(cfg, `key = "pkcs11:object=hsmkms-tls"`) {
		t.Errorf("config does not point tls.key at the token:\n%s", cfg)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		tc, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
		if err != nil {
			t.Fatal(err)
		}
		tc.MaxVersion = v
		c, err := framework.DialTLS(t.Context(), app.Addr, tc)
		if err != nil {
			t.Fatalf("TLS %x with the token key: %v", v, err)
		}
		if _, err := c.RoundTripRaw(framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationDiscoverVersions, nil)).Append(nil)); err != nil {
			t.Errorf("TLS %x: %v", v, err)
		}
		c.Close()
	}
	if out := app.MustCLI(t, "config", "check"); !strings.Contains(out, "ok   tls.key: pkcs11:object=hsmkms-tls in the token") {
		t.Errorf("config check:\n%s", out)
	}
}
