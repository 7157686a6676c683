// Package softhsm lays out the files of an embedded SoftHSM2 token: a
// directory holding softhsm2.conf, the token store and two PIN files.
//
// It owns files only. It does not speak PKCS#11 (package hsm does), so it
// does not initialise the token either: hsm.InitToken does that through
// C_InitToken and C_InitPIN, which keeps the PINs off every command line.
//
// Invariants:
//   - the directory is mode 0700 and the PIN files 0600; PINs are 32 random hex
//     characters and are never logged or returned in errors;
//   - Provision never overwrites: an existing softhsm2.conf yields ErrExists.
//
// SoftHSM2 reads its configuration from the SOFTHSM2_CONF environment
// variable when the module is initialised (C_Initialize). The variable is
// process-wide, so one process serves one embedded token. The caller (cmd)
// passes Provisioned.Env() as hsm.Config.SetEnv, and hsm sets it right before
// loading the module:
//
//	p, err := softhsm.Provision(ctx, filepath.Join(dataDir, "softhsm"), "hsmkms")
//	cfg := hsm.Config{
//		Module:     p.Module,
//		TokenLabel: p.Label,
//		PIN:        hsm.PINSource{File: p.PINFile},
//		SetEnv:     p.Env(),
//	}
//	so, err := os.ReadFile(p.SOPINFile) // trim the newline
//	err = hsm.InitToken(ctx, cfg, so)
//	tok, err := hsm.Open(ctx, cfg)
package softhsm
