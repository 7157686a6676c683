// Command hsmkms is the appliance's single binary: it creates an appliance (init),
// serves KMIP (serve), issues client certificates (certs), inspects the key store
// (keys), measures (bench) and replays test vectors (conformance).
//
// Each command lives in its own file and only turns flags and the configuration file
// (package cmd/internal/config) into calls on the packages that own the work: it is
// the one place that builds an hsm.Token and a meta.Store and hands them to
// kmip/ops. Shared assembly (loading the config, opening the token and the store)
// is in appliance.go.
//
// Invariants:
//   - PINs are read from files or environment variables only, never from argv;
//   - every failure reaches the operator as one "hsmkms: ..." line naming the file,
//     key or flag at fault and the fix, with exit status 1;
//   - serve shuts down in reverse order of opening: listener and in-flight batches,
//     then the store, then the token;
//   - serve's metrics, limits and revocation list are wired in observe.go; the admin
//     listener (cmd/internal/admin) is the only importer of prometheus.
//
// Usage:
//
//	hsmkms init --dir data
//	hsmkms serve --dir data
//	hsmkms certs issue --dir data --name mongod-1 --out mongod-1.pem
package main
