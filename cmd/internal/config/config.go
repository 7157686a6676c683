package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	// BurntSushi/toml is the de-facto Go TOML library: small, dependency free,
	// TOML 1.0 complete and maintained for over a decade.
	"github.com/BurntSushi/toml"
)

// FileName is the configuration file's name inside an appliance directory.
const FileName = "hsmkms.toml"

// EnvPrefix starts every environment override: HSMKMS_<SECTION>_<KEY>.
const EnvPrefix = "HSMKMS"

// Config is the whole configuration file.
type Config struct {
	// Path is the file Load read ("" for Default); Dir is its directory, the base of
	// relative paths.
	Path string `toml:"-"`
	Dir  string `toml:"-"`

	Server Server `toml:"server"`
	TLS    TLS    `toml:"tls"`
	HSM    HSM    `toml:"hsm"`
	Store  Store  `toml:"store"`
	Log    Log    `toml:"log"`
	Auth   Auth   `toml:"auth"`
	Admin  Admin  `toml:"admin"`
	Audit  Audit  `toml:"audit"`
	Backup Backup `toml:"backup"`
	Mirror Mirror `toml:"mirror"`
}

// Mirror configures active-active replication with paired appliances.
type Mirror struct {
	// Enabled starts the mirror listener and replication with paired peers.
	Enabled bool `toml:"enabled"`
	// Listen is the mirror listener (mutual TLS, paired peers only).
	Listen string `toml:"listen"`
	// Advertise is the address peers dial to reach Listen ("" = Listen).
	Advertise string `toml:"advertise"`
	// Name is how peers' `mirror status` shows this appliance ("" = host name).
	Name string `toml:"name"`
	// WriteAck is local, one or all: how many peers hold a new object before
	// Create and Register succeed.
	WriteAck string `toml:"write_ack"`
	// AckTimeout bounds the wait for write_ack peers.
	AckTimeout time.Duration `toml:"ack_timeout"`
	// AntiEntropy is how often digests are compared with each peer.
	AntiEntropy time.Duration `toml:"anti_entropy"`
}

// AdvertiseAddr is where peers reach this appliance's mirror listener.
func (m Mirror) AdvertiseAddr() string {
	if m.Advertise != "" {
		return m.Advertise
	}
	return m.Listen
}

// Server configures the KMIP listener.
type Server struct {
	Listen           string        `toml:"listen"`
	MaxMessageSize   int           `toml:"max_message_size"`
	MaxConnections   int           `toml:"max_connections"`
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	ReadTimeout      time.Duration `toml:"read_timeout"`
	IdleTimeout      time.Duration `toml:"idle_timeout"`
	// MaxRequestsPerClient bounds one client identity's requests in flight across
	// all its connections.
	MaxRequestsPerClient int `toml:"max_requests_per_client"`
	// DefaultObjectGroup is the KMIP Object Group of new objects created
	// without one ("" = none).
	DefaultObjectGroup string `toml:"default_object_group"`
}

// TLS names the server's PEM files. Client certificates must chain to CA.
type TLS struct {
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// HSM selects the PKCS#11 token.
type HSM struct {
	// Module is the PKCS#11 library. Empty means the SoftHSM2 module found in the usual
	// install locations, which is only valid together with SoftHSMConf.
	Module     string `toml:"module"`
	TokenLabel string `toml:"token_label"`
	PINFile    string `toml:"pin_file"`
	PINEnv     string `toml:"pin_env"`
	// SoftHSMConf is the embedded SoftHSM2 token's configuration, exported to the module
	// as SOFTHSM2_CONF. Empty for a real HSM.
	SoftHSMConf string `toml:"softhsm_conf"`
	MaxSessions int    `toml:"max_sessions"`
	CacheSize   int    `toml:"cache_size"`
}

// Admin configures the admin HTTP listener (/metrics, /healthz, /readyz).
type Admin struct {
	// Listen is host:port; "" disables the listener. Keep it on loopback or a
	// management network: it needs no credentials.
	Listen string `toml:"listen"`
}

// Audit configures the audit trail.
type Audit struct {
	// Retention is how long records are kept; serve prunes older ones daily. Zero
	// keeps them forever.
	Retention time.Duration `toml:"retention"`
}

// Backup configures the backups serve writes on a schedule.
type Backup struct {
	// Schedule is the interval between backups as a Go duration ("24h"); ""
	// disables them.
	Schedule string `toml:"schedule"`
	// Dir receives the files, hsmkms-<UTC time>.hkb.
	Dir string `toml:"dir"`
	// Keep is how many of the newest files are kept; older ones are removed.
	Keep int `toml:"keep"`
}

// Interval is Schedule parsed; 0 means off. Validate has checked it.
func (b Backup) Interval() time.Duration {
	d, _ := time.ParseDuration(b.Schedule)
	return d
}

// Store locates the SQLite metadata database.
type Store struct {
	Path string `toml:"path"`
	// MaxSizeMB caps the database (a quota, in MiB); writes beyond it fail cleanly
	// with General Failure. 0 means unlimited.
	MaxSizeMB int `toml:"max_size_mb"`
}

// Log configures the server's log on stderr.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Auth grants roles beyond what certificates carry.
type Auth struct {
	// Admins are client identities (certificate subject CN) given the admin role in
	// addition to certificates whose OU is hsmkms-admin.
	Admins []string `toml:"admins"`
	// Roles are what clients may do, checked in order (see Role).
	Roles []Role `toml:"roles"`
}

// Role is one [[auth.roles]] table: a name, the KMIP operations it may use ("*" for
// all), whether it acts on every object or only on its own and granted ones, and the
// certificates that hold it (by subject CN, subject DN, SAN or issuer). A certificate
// that matches no role is "admin" when its OU is hsmkms-admin or its CN is in
// auth.admins, else "client". Roles named admin and client replace the built-in ones
// (all operations; every object for admin).
type Role struct {
	Name       string   `toml:"name"`
	Operations []string `toml:"operations"`
	AllObjects bool     `toml:"all_objects"`
	Identities []string `toml:"identities"`
	Subjects   []string `toml:"subjects"`
	SANs       []string `toml:"sans"`
	Issuers    []string `toml:"issuers"`
}

// Default returns the configuration of an embedded-SoftHSM appliance, with paths
// relative to the appliance directory.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:           "127.0.0.1:5696",
			MaxMessageSize:   1 << 20,
			MaxConnections:   10000,
			HandshakeTimeout: 10 * time.Second,
			ReadTimeout:      30 * time.Second,
			IdleTimeout:      time.Hour,

			MaxRequestsPerClient: 64,
		},
		TLS: TLS{CA: "pki/ca.pem", Cert: "pki/server.pem", Key: "pki/server-key.pem"},
		HSM: HSM{
			TokenLabel:  "hsmkms",
			PINFile:     "softhsm/user.pin",
			SoftHSMConf: "softhsm/softhsm2.conf",
		},
		Store:  Store{Path: "hsmkms.db"},
		Log:    Log{Level: "info", Format: "text"},
		Auth:   Auth{Admins: []string{}},
		Admin:  Admin{Listen: "127.0.0.1:9696"},
		Audit:  Audit{Retention: 0},
		Backup: Backup{Schedule: "", Dir: "backups", Keep: 7},
		Mirror: Mirror{Listen: "127.0.0.1:5697", WriteAck: "local", AckTimeout: 5 * time.Second, AntiEntropy: 30 * time.Second},
	}
}

// Load reads path over the defaults, applies the environment overrides, makes paths
// absolute and validates the result.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load config %s: %w (run `hsmkms init --dir %s` first, or pass the right --dir)", abs, err, filepath.Dir(abs))
	}
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", abs, err)
	}
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", abs, err)
	}
	if extra := md.Undecoded(); len(extra) > 0 {
		return nil, fmt.Errorf("load config %s: unknown key %s (check the spelling against README.md)", abs, extra[0])
	}
	if err := c.applyEnv(os.LookupEnv); err != nil {
		return nil, fmt.Errorf("load config %s: %w", abs, err)
	}
	c.Path, c.Dir = abs, filepath.Dir(abs)
	c.resolve()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("load config %s: %w", abs, err)
	}
	return c, nil
}

// resolve makes every non-empty relative path absolute against c.Dir.
func (c *Config) resolve() {
	for _, p := range []*string{&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.HSM.Module, &c.HSM.PINFile, &c.HSM.SoftHSMConf, &c.Store.Path, &c.Backup.Dir} {
		// A TLS key held in the token is a pkcs11: URI, not a path.
		if *p != "" && !filepath.IsAbs(*p) && !strings.HasPrefix(*p, "pkcs11:") {
			*p = filepath.Join(c.Dir, *p)
		}
	}
}

// Validate checks every key; the error names each key at fault and what is allowed.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("key %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, port, err := net.SplitHostPort(c.Server.Listen); err != nil {
		bad("server.listen", "%q is not host:port (e.g. \"127.0.0.1:5696\")", c.Server.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("server.listen", "port %q is not a number from 0 to 65535", port)
	}
	if c.Server.MaxMessageSize < 1024 {
		bad("server.max_message_size", "%d is below the minimum of 1024 bytes", c.Server.MaxMessageSize)
	}
	if c.Server.MaxConnections < 1 {
		bad("server.max_connections", "%d must be at least 1", c.Server.MaxConnections)
	}
	if c.Server.MaxRequestsPerClient < 1 {
		bad("server.max_requests_per_client", "%d must be at least 1", c.Server.MaxRequestsPerClient)
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			bad("admin.listen", "%q is not host:port (e.g. \"127.0.0.1:9696\"), or \"\" to disable", c.Admin.Listen)
		}
	}
	durations := []struct {
		key string
		d   time.Duration
	}{
		{"server.handshake_timeout", c.Server.HandshakeTimeout},
		{"server.read_timeout", c.Server.ReadTimeout},
		{"server.idle_timeout", c.Server.IdleTimeout},
	}
	for _, f := range durations {
		if f.d <= 0 {
			bad(f.key, "%v must be a positive duration such as \"30s\"", f.d)
		}
	}
	paths := []struct{ key, path string }{
		{"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}, {"store.path", c.Store.Path},
	}
	for _, f := range paths {
		if f.path == "" {
			bad(f.key, "must name a file")
		}
	}
	if c.HSM.Module == "" && c.HSM.SoftHSMConf == "" {
		bad("hsm.module", "must name the PKCS#11 library of the HSM (it may be empty only with hsm.softhsm_conf set)")
	}
	if l := len(c.HSM.TokenLabel); l == 0 || l > 32 {
		bad("hsm.token_label", "%q must be 1 to 32 bytes", c.HSM.TokenLabel)
	}
	switch {
	case c.HSM.PINFile == "" && c.HSM.PINEnv == "":
		bad("hsm.pin_file", "set hsm.pin_file or hsm.pin_env: the token's user PIN comes from one of them")
	case c.HSM.PINFile != "" && c.HSM.PINEnv != "":
		bad("hsm.pin_env", "set only one of hsm.pin_file and hsm.pin_env (clear pin_file with pin_file = \"\")")
	}
	if c.Audit.Retention < 0 {
		bad("audit.retention", "%v is negative (\"0\" keeps records forever)", c.Audit.Retention)
	}
	if d, err := time.ParseDuration(c.Backup.Schedule); c.Backup.Schedule != "" && (err != nil || d < time.Second) {
		bad("backup.schedule", "%q must be a positive duration such as \"24h\", or \"\" to disable scheduled backups", c.Backup.Schedule)
	}
	if _, _, err := net.SplitHostPort(c.Mirror.Listen); err != nil {
		bad("mirror.listen", "%q is not host:port (e.g. \"127.0.0.1:5697\")", c.Mirror.Listen)
	}
	if _, _, err := net.SplitHostPort(c.Mirror.AdvertiseAddr()); err != nil {
		bad("mirror.advertise", "%q is not host:port", c.Mirror.Advertise)
	}
	switch c.Mirror.WriteAck {
	case "local", "one", "all":
	default:
		bad("mirror.write_ack", "%q is not one of local, one, all", c.Mirror.WriteAck)
	}
	if c.Mirror.AckTimeout <= 0 {
		bad("mirror.ack_timeout", "%v must be a positive duration such as \"5s\"", c.Mirror.AckTimeout)
	}
	if c.Mirror.AntiEntropy < time.Second {
		bad("mirror.anti_entropy", "%v must be at least 1s", c.Mirror.AntiEntropy)
	}
	if c.Backup.Keep < 1 {
		bad("backup.keep", "%d must be at least 1", c.Backup.Keep)
	}
	if c.Store.MaxSizeMB < 0 {
		bad("store.max_size_mb", "%d is negative (0 means unlimited)", c.Store.MaxSizeMB)
	}
	if c.HSM.MaxSessions < 0 {
		bad("hsm.max_sessions", "%d is negative (0 means the default)", c.HSM.MaxSessions)
	}
	if c.HSM.CacheSize < 0 {
		bad("hsm.cache_size", "%d is negative (0 means the default)", c.HSM.CacheSize)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for _, a := range c.Auth.Admins {
		if strings.TrimSpace(a) == "" {
			bad("auth.admins", "contains an empty identity")
		}
	}
	roles := map[string]bool{}
	for i, r := range c.Auth.Roles {
		switch {
		case strings.TrimSpace(r.Name) == "":
			bad("auth.roles", "role %d has no name", i+1)
		case roles[r.Name]:
			bad("auth.roles", "role %q is defined twice", r.Name)
		case len(r.Operations) == 0:
			bad("auth.roles", "role %q lists no operations (\"*\" means all)", r.Name)
		}
		roles[r.Name] = true
	}
	return errors.Join(errs...)
}

// NewLogger builds the logger l describes, writing to w.
func (l Log) NewLogger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// EnvName is the environment variable that overrides section.key.
func EnvName(section, key string) string {
	return EnvPrefix + "_" + strings.ToUpper(section) + "_" + strings.ToUpper(key)
}

// applyEnv overrides every key for which lookup finds HSMKMS_<SECTION>_<KEY>. It walks
// the struct tags, so a new key is overridable without touching this function.
func (c *Config) applyEnv(lookup func(string) (string, bool)) error {
	cv := reflect.ValueOf(c).Elem()
	for i := range cv.NumField() {
		section := cv.Type().Field(i).Tag.Get("toml")
		if section == "-" {
			continue
		}
		sv := cv.Field(i)
		for j := range sv.NumField() {
			key := sv.Type().Field(j).Tag.Get("toml")
			name := EnvName(section, key)
			raw, ok := lookup(name)
			if !ok {
				continue
			}
			if err := setFromString(sv.Field(j), raw); err != nil {
				return fmt.Errorf("environment %s (key %s.%s): %w", name, section, key, err)
			}
		}
	}
	return nil
}

func setFromString(f reflect.Value, raw string) error {
	switch f.Interface().(type) {
	case string:
		f.SetString(raw)
	case bool:
		v, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		f.SetBool(v)
	case int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		f.SetInt(int64(n))
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as \"30s\"", raw)
		}
		f.SetInt(int64(d))
	case []Role:
		return errors.New("roles are set in the file only ([[auth.roles]] tables)")
	case []string:
		list := []string{}
		for s := range strings.SplitSeq(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		// A field type added to Config without support here is a programming mistake.
		panic(fmt.Sprintf("config: no environment parser for %s", f.Type()))
	}
	return nil
}

// Encode writes c as a commented TOML file. Paths are written as they are in c, so
// encode a Default-based Config (relative paths) to keep the appliance movable.
func (c *Config) Encode(w io.Writer) error {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# hsmkms appliance configuration. Relative paths are relative to this file's directory.\n")
	p("# Every key can be overridden by the environment as HSMKMS_<SECTION>_<KEY>.\n\n")
	p("[server]\n")
	p("listen = %s # KMIP over mutual TLS\n", quote(c.Server.Listen))
	p("max_message_size = %d # bytes; larger requests are refused\n", c.Server.MaxMessageSize)
	p("max_connections = %d # beyond it new connections are closed at once\n", c.Server.MaxConnections)
	p("handshake_timeout = %s\n", quote(c.Server.HandshakeTimeout.String()))
	p("read_timeout = %s # to read one request once it started\n", quote(c.Server.ReadTimeout.String()))
	p("idle_timeout = %s # between requests on one connection\n", quote(c.Server.IdleTimeout.String()))
	p("max_requests_per_client = %d # one identity's requests in flight over all its connections\n", c.Server.MaxRequestsPerClient)
	p("default_object_group = %s # KMIP Object Group of new objects created without one; \"\": none\n\n", quote(c.Server.DefaultObjectGroup))
	p("[tls]\n")
	p("ca = %s # client certificates must chain to this CA\n", quote(c.TLS.CA))
	p("cert = %s\n", quote(c.TLS.Cert))
	p("key = %s # a PEM file, or \"pkcs11:object=LABEL\" for a key held in the token\n\n", quote(c.TLS.Key))
	p("[hsm]\n")
	p("module = %s # PKCS#11 library; empty: the SoftHSM2 module\n", quote(c.HSM.Module))
	p("token_label = %s\n", quote(c.HSM.TokenLabel))
	p("pin_file = %s # the user PIN is read from this file (mode 0600)\n", quote(c.HSM.PINFile))
	p("pin_env = %s # or from this environment variable; set only one\n", quote(c.HSM.PINEnv))
	p("softhsm_conf = %s # embedded SoftHSM2 only; empty for a real HSM\n", quote(c.HSM.SoftHSMConf))
	p("max_sessions = %d # 0: default\n", c.HSM.MaxSessions)
	p("cache_size = %d # unwrapped key handles kept; 0: default\n\n", c.HSM.CacheSize)
	p("[store]\n")
	p("path = %s # SQLite metadata database\n", quote(c.Store.Path))
	p("max_size_mb = %d # quota in MiB; writes beyond it fail; 0: unlimited\n\n", c.Store.MaxSizeMB)
	p("[log]\n")
	p("level = %s # debug, info, warn, error\n", quote(c.Log.Level))
	p("format = %s # text, json\n\n", quote(c.Log.Format))
	p("[auth]\n")
	p("# identities (certificate CN) with the admin role besides certificates with OU hsmkms-admin\n")
	admins := make([]string, len(c.Auth.Admins))
	for i, a := range c.Auth.Admins {
		admins[i] = quote(a)
	}
	p("admins = [%s]\n", strings.Join(admins, ", "))
	p("# roles: [[auth.roles]] tables with name, operations (KMIP names or \"*\"), all_objects,\n")
	p("# and identities, subjects, sans, issuers naming the certificates that hold the role\n\n")
	p("[admin]\n")
	p("listen = %s # /metrics, /healthz, /readyz over plain HTTP; \"\" disables\n\n", quote(c.Admin.Listen))
	p("[audit]\n")
	p("retention = %s # how long audit records are kept, e.g. \"2160h\" (90 days); \"0s\": forever\n\n", quote(c.Audit.Retention.String()))
	p("[backup]\n")
	p("schedule = %s # serve writes a backup this often, e.g. \"24h\"; \"\": never\n", quote(c.Backup.Schedule))
	p("dir = %s # where scheduled backups go\n", quote(c.Backup.Dir))
	p("keep = %d # the newest files kept; older ones are removed\n\n", c.Backup.Keep)
	p("[mirror]\n")
	p("enabled = %t # replicate with appliances paired by `hsmkms mirror invite` / `join`\n", c.Mirror.Enabled)
	p("listen = %s # the mirror listener: mutual TLS, paired appliances only\n", quote(c.Mirror.Listen))
	p("advertise = %s # the address peers dial; \"\": listen\n", quote(c.Mirror.Advertise))
	p("name = %s # shown in peers' `mirror status`; \"\": the host name\n", quote(c.Mirror.Name))
	p("write_ack = %s # local, one or all: peers that must hold a new key before Create succeeds\n", quote(c.Mirror.WriteAck))
	p("ack_timeout = %s # how long Create waits for them\n", quote(c.Mirror.AckTimeout.String()))
	p("anti_entropy = %s # how often digests are compared with each peer\n", quote(c.Mirror.AntiEntropy.String()))
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return nil
}

// quote writes s as a TOML basic string. Go's strconv quoting is not used because its
// \x and \a escapes are not TOML.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
