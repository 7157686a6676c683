// Package config reads the appliance's configuration file, hsmkms.toml.
//
// It owns the file format, the defaults, the environment overrides and the checks that
// name the key at fault. It is internal to cmd because only cmd reads files, flags and
// the environment; the packages it configures (hsm, meta, kmip) take plain Config
// structs that cmd assembles from a *Config.
//
// Invariants:
//   - after Load, every path in the Config is absolute: relative paths in the file are
//     relative to the file's directory, never to the working directory, so an appliance
//     directory can be moved as a whole;
//   - an unknown key in the file is an error (a typo must not silently fall back to a
//     default);
//   - environment variables HSMKMS_<SECTION>_<KEY> (e.g. HSMKMS_SERVER_LISTEN) override the
//     file; lists (auth.admins) are comma separated;
//   - the file never holds a PIN, only where to read it from (hsm.pin_file or hsm.pin_env).
//
// Usage:
//
//	cfg, err := config.Load(filepath.Join(dir, config.FileName))
//	if err != nil { ... } // already validated; the message names the file and key
//	log, err := cfg.Log.NewLogger(os.Stderr)
package config
