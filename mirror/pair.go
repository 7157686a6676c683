package mirror

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// Pairing. The inviting appliance stores the hash of a one-time secret and
// hands the operator an invitation: its id, mirror address, key pin and
// the secret. The joining appliance dials that address, accepts only the
// pinned key, and proves it holds the secret with an HMAC (keyed by the
// secret's hash) over both appliances' ids, pins and ECDH public keys; the
// inviter answers with its own proof and the check value of the pair KEK it
// derived. Each side derives the KEK inside its token from its ECDH key and
// the other's public key; equal check values prove they agree.

// invitePrefix starts every invitation string (version 1).
const invitePrefix = "hsmkms-invite-1."

// Invitation is what `mirror invite` prints and `mirror join` reads.
type Invitation struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	SPKI   string `json:"spki"`
	Secret []byte `json:"secret"`
}

// String encodes the invitation for an operator to carry to the other appliance.
func (i Invitation) String() string {
	b, _ := json.Marshal(i) // plain strings and bytes: cannot fail
	return invitePrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseInvitation decodes an invitation string.
func ParseInvitation(s string) (Invitation, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), invitePrefix)
	var inv Invitation
	if !ok {
		return inv, fmt.Errorf("read invitation: it does not start with %q", invitePrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err == nil {
		err = json.Unmarshal(b, &inv)
	}
	if err != nil {
		return inv, fmt.Errorf("read invitation: %w", err)
	}
	if inv.ID == "" || inv.Addr == "" || len(inv.SPKI) != 64 || len(inv.Secret) != 32 {
		return inv, errors.New("read invitation: incomplete")
	}
	return inv, nil
}

// Invite creates an invitation to pair with this appliance, valid for ttl
// and once. cert is this appliance's TLS identity, addr its mirror address.
func Invite(ctx context.Context, st Store, cert tls.Certificate, addr string, ttl time.Duration) (Invitation, error) {
	spki, err := certSPKI(cert.Certificate[0])
	if err != nil {
		return Invitation{}, fmt.Errorf("create invitation: %w", err)
	}
	inv := Invitation{Addr: addr, SPKI: spki, Secret: make([]byte, 32)}
	if _, err := rand.Read(inv.Secret); err != nil {
		return Invitation{}, fmt.Errorf("create invitation: %w", err)
	}
	key := sha256.Sum256(inv.Secret)
	err = st.Update(ctx, func(tx *meta.Tx) error {
		var err error
		if inv.ID, err = tx.ApplianceID(); err != nil {
			return err
		}
		return tx.AddInvite(hex.EncodeToString(key[:]), time.Now().Add(ttl))
	})
	if err != nil {
		return Invitation{}, fmt.Errorf("create invitation: %w", err)
	}
	return inv, nil
}

// proof is the pairing HMAC over a role and the fields both sides know.
func proof(key []byte, role string, fields ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hsmkms mirror pairing v1\x00" + role))
	for _, f := range fields {
		fmt.Fprintf(m, "\x00%d:", len(f))
		m.Write(f)
	}
	return m.Sum(nil)
}

// pairContext binds the pair KEK to both appliances and their ECDH keys, in
// an order both sides compute alike.
func pairContext(idA string, pubA []byte, idB string, pubB []byte) []byte {
	if idA > idB {
		idA, pubA, idB, pubB = idB, pubB, idA, pubA
	}
	var b []byte
	b = append(b, "hsmkms pair KEK v1\x00"...)
	for _, f := range [][]byte{[]byte(idA), pubA, []byte(idB), pubB} {
		b = append(b, byte(len(f)>>8), byte(len(f)))
		b = append(b, f...)
	}
	return b
}

// KEKLabel names the pair KEK shared with peer id in the token.
func KEKLabel(id string) string { return hsm.PairKEKPrefix + id }

// JoinConfig is what Join needs of the joining appliance.
type JoinConfig struct {
	Keys      Keys
	Store     Store
	Cert      tls.Certificate
	CA        []byte // this appliance's client CA (PEM)
	Name      string
	Advertise string // where the inviter will reach this appliance's mirror listener
	// Confirm shows both key fingerprints (this appliance's, the inviter's)
	// to the operator; false aborts before anything is exchanged.
	Confirm func(local, remote string) bool
}

// Join pairs this appliance with the one that issued inv, which must be
// serving its mirror listener. It returns the new peer.
func Join(ctx context.Context, cfg JoinConfig, inv Invitation) (*meta.Peer, error) {
	mySPKI, err := certSPKI(cfg.Cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	var self string
	if err := cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		self, err = tx.ApplianceID()
		return err
	}); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if self == inv.ID {
		return nil, fmt.Errorf("join: %w: the invitation comes from this appliance (or a copy of its database)", ErrRefused)
	}
	if !cfg.Confirm(Fingerprint(mySPKI), Fingerprint(inv.SPKI)) {
		return nil, errors.New("join: not confirmed")
	}
	pub, err := cfg.Keys.MirrorIdentity(ctx)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	c, err := dial(ctx, inv.Addr, cfg.Cert, inv.SPKI)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	key := sha256.Sum256(inv.Secret)
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	req := &frame{T: tJoin, From: self, Name: cfg.Name, Addr: cfg.Advertise, Pub: pub, CA: cfg.CA,
		Proof: proof(key[:], tJoin, []byte(self), []byte(mySPKI), pub, []byte(inv.SPKI))}
	if err := writeFrame(w, req); err != nil {
		return nil, fmt.Errorf("join %s: %w", inv.Addr, err)
	}
	f, err := readFrame(r)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", inv.Addr, err)
	}
	if f.T == tError {
		return nil, fmt.Errorf("join %s: %w: %s", inv.Addr, ErrRefused, f.Error)
	}
	want := proof(key[:], tJoined, []byte(f.From), []byte(inv.SPKI), f.Pub, []byte(mySPKI), f.Check)
	if f.T != tJoined || f.From != inv.ID || !hmac.Equal(f.Proof, want) {
		return nil, fmt.Errorf("join %s: %w: the answer does not prove knowledge of the invitation", inv.Addr, ErrRefused)
	}
	label := KEKLabel(inv.ID)
	check, err := cfg.Keys.DerivePairKEK(ctx, label, f.Pub, pairContext(self, pub, inv.ID, f.Pub))
	if err != nil {
		return nil, fmt.Errorf("join: derive pair KEK: %w", err)
	}
	if !hmac.Equal(check, f.Check) {
		_ = cfg.Keys.DeletePairKEK(ctx, label)
		return nil, fmt.Errorf("join %s: %w: the two tokens derived different pair KEKs", inv.Addr, ErrRefused)
	}
	p := &meta.Peer{ID: inv.ID, Name: f.Name, Addr: inv.Addr, SPKI: inv.SPKI, ECDHPub: f.Pub, CAPEM: f.CA, KEK: label, Paired: time.Now()}
	if err := cfg.Store.Update(ctx, func(tx *meta.Tx) error { return tx.PutPeer(p) }); err != nil {
		return nil, fmt.Errorf("join: save peer: %w", err)
	}
	return p, nil
}

// acceptJoin answers a join: it checks the proof against the outstanding
// invitations, derives the pair KEK and records the peer.
func (n *Node) acceptJoin(ctx context.Context, remote, spki string, w *bufio.Writer, f *frame) {
	refuse := func(why string, err error) {
		n.log.Warn("mirror: pairing refused", "remote_addr", remote, "fingerprint", Fingerprint(spki), "reason", why, "err", err)
		n.auditPairing(ctx, f, remote, spki, "Failed", why)
		_ = writeFrame(w, &frame{T: tError, Error: why})
	}
	var hashes []string
	if err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		hashes, err = tx.Invites()
		return err
	}); err != nil {
		refuse("the inviting appliance cannot read its invitations", err)
		return
	}
	var key []byte
	for _, h := range hashes {
		k, err := hex.DecodeString(h)
		if err == nil && hmac.Equal(f.Proof, proof(k, tJoin, []byte(f.From), []byte(spki), f.Pub, []byte(n.spki))) {
			key = k
			break
		}
	}
	switch {
	case key == nil:
		refuse("the invitation is unknown, expired or used", nil)
		return
	case f.From == "" || f.From == n.self:
		refuse("the joining appliance has this appliance's id (a copied database?)", nil)
		return
	case f.Addr == "":
		refuse("the joining appliance gave no mirror address", nil)
		return
	}
	pub, err := n.cfg.Keys.MirrorIdentity(ctx)
	if err != nil {
		refuse("the inviting appliance's token failed", err)
		return
	}
	label := KEKLabel(f.From)
	check, err := n.cfg.Keys.DerivePairKEK(ctx, label, f.Pub, pairContext(n.self, pub, f.From, f.Pub))
	if err != nil {
		refuse("the inviting appliance could not derive the pair KEK", err)
		return
	}
	p := &meta.Peer{ID: f.From, Name: f.Name, Addr: f.Addr, SPKI: spki, ECDHPub: f.Pub, CAPEM: f.CA, KEK: label, Paired: time.Now()}
	err = n.cfg.Store.Update(ctx, func(tx *meta.Tx) error {
		if err := tx.UseInvite(hex.EncodeToString(key)); err != nil {
			return err
		}
		if err := tx.PutPeer(p); err != nil {
			return err
		}
		if !n.cfg.Audit {
			return nil
		}
		return tx.AppendAudit(pairingRecord(f, remote, spki, "Success", "paired; pair KEK "+label))
	})
	if err != nil {
		refuse("the invitation was used meanwhile, or the store failed", err)
		return
	}
	reply := &frame{T: tJoined, From: n.self, Name: n.cfg.Name, Pub: pub, Check: check, CA: n.cfg.CA,
		Proof: proof(key, tJoined, []byte(n.self), []byte(n.spki), pub, []byte(spki), check)}
	if err := writeFrame(w, reply); err != nil {
		n.log.Warn("mirror: pairing reply lost; the other side must join again", "peer", f.From, "err", err)
		return
	}
	n.log.Info("mirror: paired", "peer", f.From, "name", f.Name, "addr", f.Addr, "fingerprint", Fingerprint(spki))
	n.refresh(ctx)
}

// pairingRecord is the audit record of a join this appliance answered.
func pairingRecord(f *frame, remote, spki, status, msg string) meta.AuditRecord {
	return meta.AuditRecord{Kind: meta.AuditMirror, Actor: f.From + " (" + f.Name + ")", Fingerprint: spki,
		RemoteAddr: remote, Operation: "mirror pair", Status: status, Message: msg}
}

// auditPairing records a refused join; a failure to record is logged only,
// since the refusal stands either way.
func (n *Node) auditPairing(ctx context.Context, f *frame, remote, spki, status, msg string) {
	if !n.cfg.Audit {
		return
	}
	err := n.cfg.Store.Update(ctx, func(tx *meta.Tx) error {
		return tx.AppendAudit(pairingRecord(f, remote, spki, status, msg))
	})
	if err != nil {
		n.log.Error("mirror: could not record a refused pairing in the audit trail", "err", err)
	}
}

// Unpair forgets peer id: the pairing, then the pair KEK in the token.
func Unpair(ctx context.Context, keys Keys, st Store, id string) error {
	if err := st.Update(ctx, func(tx *meta.Tx) error { return tx.DeletePeer(id) }); err != nil {
		return fmt.Errorf("unpair %s: %w", id, err)
	}
	if err := keys.DeletePairKEK(ctx, KEKLabel(id)); err != nil {
		return fmt.Errorf("unpair %s: delete pair KEK: %w", id, err)
	}
	return nil
}
