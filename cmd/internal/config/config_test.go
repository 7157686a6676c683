package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadDefaults(t *testing.T) {
	path := writeConfig(t, "")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := Default()
	want.Path, want.Dir = path, dir
	want.TLS = TLS{CA: filepath.Join(dir, "pki/ca.pem"), Cert: filepath.Join(dir, "pki/server.pem"), Key: filepath.Join(dir, "pki/server-key.pem")}
	want.HSM.PINFile = filepath.Join(dir, "softhsm/user.pin")
	want.HSM.SoftHSMConf = filepath.Join(dir, "softhsm/softhsm2.conf")
	want.Store.Path = filepath.Join(dir, "hsmkms.db")
	want.Backup.Dir = filepath.Join(dir, "backups")
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(empty) =\n%+v\nwant\n%+v", c, want)
	}
	if c.Server.Listen != "127.0.0.1:5696" || c.Server.MaxMessageSize != 1048576 || c.Server.IdleTimeout != time.Hour {
		t.Errorf("server defaults = %+v", c.Server)
	}
}

func TestLoadFileValues(t *testing.T) {
	path := writeConfig(t, `
[server]
listen = "0.0.0.0:15696"
read_timeout = "5s"
[tls]
ca = "/etc/hsmkms/ca.pem"
[hsm]
module = "/opt/vendor/lib/p11.so"
token_label = "prod"
pin_file = ""
pin_env = "HSM_PIN"
softhsm_conf = ""
max_sessions = 8
[store]
path = "db/meta.db"
[log]
format = "json"
[auth]
admins = ["ops", "backup"]
[[auth.roles]]
name = "auditor"
operations = ["Locate", "Get Attributes"]
all_objects = true
sans = ["audit.example.com"]
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Server.Listen, "0.0.0.0:15696"},
		{"read timeout", c.Server.ReadTimeout, 5 * time.Second},
		{"absolute path kept", c.TLS.CA, "/etc/hsmkms/ca.pem"},
		{"relative path resolved", c.TLS.Cert, filepath.Join(dir, "pki/server.pem")},
		{"store path", c.Store.Path, filepath.Join(dir, "db/meta.db")},
		{"module", c.HSM.Module, "/opt/vendor/lib/p11.so"},
		{"label", c.HSM.TokenLabel, "prod"},
		{"pin env", c.HSM.PINEnv, "HSM_PIN"},
		{"pin file cleared", c.HSM.PINFile, ""},
		{"softhsm cleared", c.HSM.SoftHSMConf, ""},
		{"sessions", c.HSM.MaxSessions, 8},
		{"format", c.Log.Format, "json"},
		{"admins", c.Auth.Admins, []string{"ops", "backup"}},
		{"roles", c.Auth.Roles, []Role{{Name: "auditor", Operations: []string{"Locate", "Get Attributes"}, AllObjects: true, SANs: []string{"audit.example.com"}}}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestLoadEnvOverride(t *testing.T) {
	path := writeConfig(t, "[server]\nlisten = \"127.0.0.1:1\"\n")
	t.Setenv("HSMKMS_SERVER_LISTEN", "127.0.0.1:2")
	t.Setenv("HSMKMS_SERVER_IDLE_TIMEOUT", "2m")
	t.Setenv("HSMKMS_HSM_MAX_SESSIONS", "4")
	t.Setenv("HSMKMS_AUTH_ADMINS", "alice, bob,")
	t.Setenv("HSMKMS_STORE_PATH", "other.db")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "127.0.0.1:2" {
		t.Errorf("listen = %q, want the environment's", c.Server.Listen)
	}
	if c.Server.IdleTimeout != 2*time.Minute {
		t.Errorf("idle timeout = %v", c.Server.IdleTimeout)
	}
	if c.HSM.MaxSessions != 4 {
		t.Errorf("max sessions = %d", c.HSM.MaxSessions)
	}
	if !reflect.DeepEqual(c.Auth.Admins, []string{"alice", "bob"}) {
		t.Errorf("admins = %q", c.Auth.Admins)
	}
	if want := filepath.Join(filepath.Dir(path), "other.db"); c.Store.Path != want {
		t.Errorf("store path = %q, want %q (env paths are relative to the config too)", c.Store.Path, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		env     map[string]string
		wantErr []string // substrings the message must contain
	}{
		{"unknown key", "[server]\nlisten_addr = \"x\"\n", nil, []string{"unknown key server.listen_addr"}},
		{"syntax", "[server\n", nil, []string{FileName}},
		{"bad listen", "[server]\nlisten = \"5696\"\n", nil, []string{"key server.listen"}},
		{"bad port", "[server]\nlisten = \"h:99999\"\n", nil, []string{"key server.listen", "65535"}},
		{"small messages", "[server]\nmax_message_size = 10\n", nil, []string{"key server.max_message_size"}},
		{"zero timeout", "[server]\nread_timeout = \"0s\"\n", nil, []string{"key server.read_timeout"}},
		{"bad duration", "[server]\nread_timeout = \"soon\"\n", nil, []string{FileName}},
		{"no module", "[hsm]\nsofthsm_conf = \"\"\n", nil, []string{"key hsm.module"}},
		{"both pins", "[hsm]\npin_env = \"P\"\n", nil, []string{"key hsm.pin_env", "only one"}},
		{"no pin", "[hsm]\npin_file = \"\"\n", nil, []string{"key hsm.pin_file"}},
		{"long label", "[hsm]\ntoken_label = \"" + strings.Repeat("x", 33) + "\"\n", nil, []string{"key hsm.token_label"}},
		{"level", "[log]\nlevel = \"loud\"\n", nil, []string{"key log.level", "debug, info, warn, error"}},
		{"format", "[log]\nformat = \"xml\"\n", nil, []string{"key log.format"}},
		{"empty admin", "[auth]\nadmins = [\"\"]\n", nil, []string{"key auth.admins"}},
		{"role without name", "[[auth.roles]]\noperations = [\"*\"]\n", nil, []string{"key auth.roles", "no name"}},
		{"role twice", "[[auth.roles]]\nname = \"a\"\noperations = [\"*\"]\n[[auth.roles]]\nname = \"a\"\noperations = [\"Get\"]\n", nil, []string{"key auth.roles", "twice"}},
		{"role without operations", "[[auth.roles]]\nname = \"a\"\n", nil, []string{"key auth.roles", "no operations"}},
		{"unknown role key", "[[auth.roles]]\nname = \"a\"\noperations = [\"*\"]\nlevel = 3\n", nil, []string{"unknown key auth.roles.level"}},
		{"roles from env", "", map[string]string{"HSMKMS_AUTH_ROLES": "x"}, []string{"HSMKMS_AUTH_ROLES", "file only"}},
		{"no connections", "[server]\nmax_connections = 0\n", nil, []string{"key server.max_connections"}},
		{"negative retention", "[audit]\nretention = \"-1h\"\n", nil, []string{"key audit.retention"}},
		{"env not int", "", map[string]string{"HSMKMS_SERVER_MAX_CONNECTIONS": "many"}, []string{"HSMKMS_SERVER_MAX_CONNECTIONS", "server.max_connections"}},
		{"env bad duration", "", map[string]string{"HSMKMS_SERVER_IDLE_TIMEOUT": "1 hour"}, []string{"HSMKMS_SERVER_IDLE_TIMEOUT"}},
		{"two faults", "[log]\nlevel = \"x\"\nformat = \"y\"\n", nil, []string{"key log.level", "key log.format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := writeConfig(t, tt.body)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file %s", msg, path)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, FileName))
	if err == nil || !strings.Contains(err.Error(), "hsmkms init --dir "+dir) {
		t.Fatalf("Load(missing) error = %v, want a hint to run init", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	c := Default()
	c.Server.Listen = "[::1]:5696"
	c.HSM.Module = `/opt/odd "path"\lib.so`
	c.HSM.PINFile, c.HSM.PINEnv = "", "PIN\tVAR"
	c.Auth.Admins = []string{"alice", "o\"brien"}
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := Load(writeConfig(t, b.String()))
	if err != nil {
		t.Fatalf("Load(Encode(c)): %v\n%s", err, b.String())
	}
	if got.Server != c.Server || got.HSM.Module != c.HSM.Module || got.HSM.PINEnv != c.HSM.PINEnv ||
		got.HSM.PINFile != "" || !reflect.DeepEqual(got.Auth.Admins, c.Auth.Admins) || got.Log != c.Log {
		t.Errorf("round trip changed the config:\n%+v\nwant\n%+v", got, c)
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		log      Log
		wantText string
		wantNot  string
	}{
		{Log{Level: "warn", Format: "text"}, "level=WARN msg=shown", "hidden"},
		{Log{Level: "debug", Format: "json"}, `"msg":"shown"`, ""},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		l, err := tt.log.NewLogger(&b)
		if err != nil {
			t.Fatal(err)
		}
		l.Info("hidden")
		l.Warn("shown")
		if !strings.Contains(b.String(), tt.wantText) {
			t.Errorf("%+v: log %q lacks %q", tt.log, b.String(), tt.wantText)
		}
		if tt.wantNot != "" && strings.Contains(b.String(), tt.wantNot) {
			t.Errorf("%+v: log %q has %q below the level", tt.log, b.String(), tt.wantNot)
		}
	}
	if _, err := (Log{Level: "loud"}).NewLogger(&bytes.Buffer{}); err == nil {
		t.Error("NewLogger accepted level loud")
	}
}
