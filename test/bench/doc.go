// Package bench is the load generator and report behind `hsmkms bench`: it measures
// an hsmkms appliance, a PyKMIP server on the same machine as the baseline, and the
// raw PKCS#11 rate of the same work as the ceiling.
//
// It owns the child server processes it starts (a throwaway appliance made with
// `hsmkms init` in a temporary directory, then `hsmkms serve`; PyKMIP with a generated
// configuration) and a small KMIP client that builds requests with kmip/msg. It does
// not open a token itself: the caller (cmd) opens one and passes it as a RawRater,
// since only cmd builds an hsm.Token.
//
// Invariants:
//   - every reply is checked: Success, the operation echoed, and the payload holds what
//     the operation promises (a key value, the State attribute, 80 bytes of ciphertext);
//     a failure on hsmkms ends the run with its reason instead of counting;
//   - persistent connections are opened before the clock starts; the new-connection
//     workload pays a full handshake per operation (no session cache);
//   - p50 and p99 are exact (nearest rank over every latency recorded);
//   - servers run one at a time, and every child process group is stopped and the
//     temporary directory removed before Run returns, also on cancellation; the
//     servers themselves get a SIGKILL from the kernel if the bench is killed;
//   - PyKMIP that is missing, fails to start or fails mid-run leaves its column empty
//     with the reason in the report; it never fails the bench.
//
// Usage:
//
//	rep, err := bench.Run(ctx, bench.Config{Binary: self, Duration: 5 * time.Second, Raw: tok})
//	fmt.Print(rep.Markdown())
package bench
