package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// appliance is the layout `hsmkms init` creates that the bench reads.
type appliance struct{ dir string }

func (a appliance) pki(name string) string { return filepath.Join(a.dir, "pki", name) }

// clientTLS is the administrator's mutual-TLS client configuration. It has no session
// cache, so every new connection pays a full handshake.
func (a appliance) clientTLS() (*tls.Config, error) {
	bundle, err := os.ReadFile(a.pki("admin.pem"))
	if err != nil {
		return nil, fmt.Errorf("load client bundle: %w", err)
	}
	cert, err := tls.X509KeyPair(bundle, bundle)
	if err != nil {
		return nil, fmt.Errorf("load client bundle %s: %w", a.pki("admin.pem"), err)
	}
	caPEM, err := os.ReadFile(a.pki("ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load CA %s: no certificate found", a.pki("ca.pem"))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// startHsmkms creates an appliance under dir with `bin init` and serves it on a free
// port, returning once it accepts TLS.
func startHsmkms(ctx context.Context, bin, dir string) (*proc, *target, error) {
	app := appliance{dir: filepath.Join(dir, "appliance")}
	if err := runOnce(ctx, bin, "init", "--dir", app.dir); err != nil {
		return nil, nil, fmt.Errorf("create appliance: %w", err)
	}
	cfg, err := app.clientTLS()
	if err != nil {
		return nil, nil, fmt.Errorf("create appliance: %w", err)
	}
	p, addr, err := serveOnFreePort(ctx, cfg, func(addr string) (*proc, error) {
		return startProc("hsmkms", filepath.Join(dir, "hsmkms.log"), dir,
			bin, "serve", "--dir", app.dir, "--listen", addr)
	})
	if err != nil {
		return nil, nil, err
	}
	return p, &target{name: "hsmkms", addr: addr, tls: cfg}, nil
}

// pykmipCommand finds the PyKMIP 0.10 server: Debian's console script, or the module
// run by python3.
func pykmipCommand(ctx context.Context) ([]string, error) {
	if p, err := exec.LookPath("pykmip-server"); err == nil {
		return []string{p}, nil
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("neither pykmip-server nor python3 is installed")
	}
	if err := exec.CommandContext(ctx, py, "-c", "import kmip.services.server.server").Run(); err != nil {
		return nil, fmt.Errorf("PyKMIP is not installed (apt-get install python3-pykmip)")
	}
	return []string{py, "-m", "kmip.services.server.server"}, nil
}

// startPyKMIP runs a PyKMIP server under dir/pykmip on a free port with the
// appliance's CA, server certificate and key: the same certificates as hsmkms, so the
// same client configuration reaches both. PyKMIP speaks TLS 1.2 only and checks the
// clientAuth extended key usage, which the appliance's client certificates carry.
// Its logging is at WARNING so that it does not pay for a log line per request, as
// hsmkms does not either.
func startPyKMIP(ctx context.Context, dir string, hsmkms *target) (*proc, *target, error) {
	argv, err := pykmipCommand(ctx)
	if err != nil {
		return nil, nil, err
	}
	app := appliance{dir: filepath.Join(dir, "appliance")}
	home := filepath.Join(dir, "pykmip")
	policies := filepath.Join(home, "policies")
	if err := os.MkdirAll(policies, 0o700); err != nil {
		return nil, nil, fmt.Errorf("prepare PyKMIP: %w", err)
	}
	// Its own log and its stderr (where a failed start's traceback goes) share a file.
	log := filepath.Join(home, "server.log")
	p, addr, err := serveOnFreePort(ctx, hsmkms.tls, func(addr string) (*proc, error) {
		_, port, _ := net.SplitHostPort(addr)
		conf := strings.Join([]string{
			"[server]",
			"hostname=127.0.0.1",
			"port=" + port,
			"certificate_path=" + app.pki("server.pem"),
			"key_path=" + app.pki("server-key.pem"),
			"ca_path=" + app.pki("ca.pem"),
			"auth_suite=TLS1.2",
			"enable_tls_client_auth=True",
			"policy_path=" + policies,
			"database_path=" + filepath.Join(home, "pykmip.db"),
			"logging_level=WARNING",
			"",
		}, "\n")
		confPath := filepath.Join(home, "server.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("prepare PyKMIP: %w", err)
		}
		return startProc("PyKMIP", log, home, slices.Concat(argv, []string{"-f", confPath, "-l", log})...)
	})
	if err != nil {
		return nil, nil, err
	}
	return p, &target{name: "PyKMIP", addr: addr, tls: hsmkms.tls}, nil
}

// portTries is how many free ports serveOnFreePort tries: between freePort and the
// server's bind another process may take the port.
const portTries = 3

// serveOnFreePort starts a server with start on a free loopback port and waits until
// it accepts TLS with cfg. When the server exits before that, as it does when the
// port was taken meanwhile, it tries another port.
func serveOnFreePort(ctx context.Context, cfg *tls.Config, start func(addr string) (*proc, error)) (*proc, string, error) {
	var last error
	for range portTries {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := start(addr)
		if err != nil {
			return nil, "", err
		}
		last = p.waitTLS(ctx, addr, cfg)
		if last == nil {
			return p, addr, nil
		}
		exited := p.exited()
		p.stop()
		if !exited || ctx.Err() != nil {
			break
		}
	}
	return nil, "", last
}
