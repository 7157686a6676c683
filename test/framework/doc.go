// Package framework runs hsmkms and its clients as real processes for the end-to-end
// suites under test/ (build tag e2e). It has three parts:
//
//   - Build finds or builds the hsmkms binary once per test binary, in TestMain;
//   - Process starts any command, keeps its combined stdout and stderr, stops it with
//     SIGTERM, kills it with SIGKILL, restarts it, and prints its logs when the test
//     fails (and always kills it at cleanup);
//   - Appliance is a running hsmkms: `init` in a temporary directory, then `serve` on a
//     free loopback port, ready when the port accepts connections. It knows the
//     paths of the administrator bundle and the CA and issues client bundles.
//
// A raw KMIP test client (Dial, Client, ClientTLS) lives in kmipclient.go.
//
// Typical suite:
//
//	var bin string
//
//	func TestMain(m *testing.M) {
//		var cleanup func()
//		var err error
//		bin, cleanup, err = framework.Build()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		cleanup()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		app := framework.StartAppliance(t, bin, framework.ApplianceOptions{})
//		bundle := app.IssueClient(t, "pykmip", "client")
//		c, err := framework.Dial(t.Context(), app.Addr, mustRead(bundle), mustRead(app.CAPEM))
//		...
//	}
//
// Everything is cleaned up through t.Cleanup; no state is shared between tests, so
// suites may run with t.Parallel.
package framework
