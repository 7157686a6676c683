package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// Keys is what mirroring needs from the token. *hsm.Token implements it.
type Keys interface {
	Rewrap(ctx context.Context, w hsm.Wrapped, kind hsm.KeyKind, toKEK string) (hsm.Wrapped, error)
	Masters(ctx context.Context) ([]string, error)
	Forget(id string)
	MirrorIdentity(ctx context.Context) ([]byte, error)
	DerivePairKEK(ctx context.Context, label string, peerPub, context []byte) ([]byte, error)
	DeletePairKEK(ctx context.Context, label string) error
}

// Store is what mirroring needs from the metadata database. *meta.Store implements it.
type Store interface {
	View(ctx context.Context, fn func(*meta.Tx) error) error
	Update(ctx context.Context, fn func(*meta.Tx) error) error
}

var (
	_ Keys  = (*hsm.Token)(nil)
	_ Store = (*meta.Store)(nil)
)

// Revocations is a revocation list of client certificate serials (hex).
type Revocations interface {
	List() ([]string, error)
	// Add adds serials and returns those that were not listed yet.
	Add(serials []string) ([]string, error)
}

// AckMode is mirror.write_ack: how many peers must hold a new object before
// Create or Register answers.
type AckMode int

// Acknowledgement modes.
const (
	AckLocal AckMode = iota // this appliance's commit is enough
	AckOne                  // and at least one peer's
	AckAll                  // and every paired peer's
)

// ParseAckMode reads "local", "one" or "all".
func ParseAckMode(s string) (AckMode, error) {
	switch s {
	case "", "local":
		return AckLocal, nil
	case "one":
		return AckOne, nil
	case "all":
		return AckAll, nil
	}
	return 0, fmt.Errorf("write_ack %q: want local, one or all", s)
}

func (m AckMode) String() string {
	return [...]string{"local", "one", "all"}[m]
}

// Config assembles a Node.
type Config struct {
	Keys   Keys
	Store  Store
	Logger *slog.Logger // nil: discard
	// Cert is this appliance's TLS identity (its KMIP server certificate);
	// peers pin the SHA-256 of its public key.
	Cert tls.Certificate
	// CA is this appliance's client CA certificate (PEM), given to peers at
	// pairing so that they accept the KMIP clients it issued.
	CA []byte
	// Name is shown to peers and in their `mirror status`.
	Name string
	// Advertise is where peers reach this appliance's mirror listener.
	Advertise string
	WriteAck  AckMode
	// AckTimeout bounds how long Await waits for peers (default 5s).
	AckTimeout time.Duration
	// AntiEntropy is the interval between digest comparisons with each peer
	// (default 30s).
	AntiEntropy time.Duration
	// KindOf tells which token key kind an object's material unwraps as.
	KindOf func(*meta.Object) hsm.KeyKind
	// Revocations, when set, is this appliance's client certificate
	// revocation list, which peers share: each stream carries the sender's
	// list when it changed, and the receiver adds what it lacks.
	Revocations Revocations
	// Audit records every page of peer changes applied here in the audit
	// trail (the Store must have been opened with an audit chain).
	Audit bool
	// OnApply is told of every object a peer's change altered here, after
	// it committed, so that caches drop it.
	OnApply func(id string)
}

// Node replicates this appliance's objects to its paired peers and applies
// theirs. It is safe for concurrent use.
type Node struct {
	cfg  Config
	log  *slog.Logger
	self string
	spki string

	mu     sync.Mutex
	peers  map[string]*peer
	notify chan struct{} // closed and replaced after each local commit
	acked  chan struct{} // closed and replaced when a peer acknowledges more
	master string
	mastAt time.Time
	status []meta.Peer // as last saved, for Status

	lastRefresh time.Time // of a reread caused by an unknown caller
}

// peer is a paired appliance and what this process knows of the link.
type peer struct {
	meta.Peer
	stop context.CancelFunc

	// guarded by Node.mu
	outAcked    int64 // our journal position it has applied
	streaming   bool  // it is pulling from us now
	pulling     bool  // we are pulling from it now
	lastContact time.Time
	lastErr     string
	remoteErr   string // what it reported failing on its side
	lags        []time.Duration
}

// New builds a Node; Run starts it.
func New(cfg Config) *Node {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.AntiEntropy <= 0 {
		cfg.AntiEntropy = 30 * time.Second
	}
	if cfg.OnApply == nil {
		cfg.OnApply = func(string) {}
	}
	return &Node{cfg: cfg, log: cfg.Logger, peers: make(map[string]*peer),
		notify: make(chan struct{}), acked: make(chan struct{})}
}

// Notify tells the Node that the journal grew (meta.Options.OnCommit).
// Changes made by other processes are seen within a second without it.
func (n *Node) Notify() {
	n.mu.Lock()
	close(n.notify)
	n.notify = make(chan struct{})
	n.mu.Unlock()
}

func (n *Node) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.notify
}

// Load reads this appliance's identity and its pairings. Call it before
// serving KMIP, so that write_ack counts the paired peers from the start.
func (n *Node) Load(ctx context.Context) error {
	if err := n.init(ctx); err != nil {
		return err
	}
	n.refresh(ctx)
	return nil
}

// Run replicates until ctx ends (after Load, or it loads itself). It picks
// up pairings made or removed by `hsmkms mirror` within two seconds.
func (n *Node) Run(ctx context.Context) error {
	if err := n.init(ctx); err != nil {
		return err
	}
	refresh := time.NewTicker(2 * time.Second)
	status := time.NewTicker(time.Second)
	defer refresh.Stop()
	defer status.Stop()
	n.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			n.mu.Lock()
			for _, p := range n.peers {
				p.stop()
			}
			n.mu.Unlock()
			return nil
		case <-refresh.C:
			n.refresh(ctx)
		case <-status.C:
			n.saveStatus(ctx)
		}
	}
}

func (n *Node) init(ctx context.Context) error {
	if n.self != "" {
		return nil
	}
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		n.self, err = tx.ApplianceID()
		return err
	})
	if err != nil {
		return fmt.Errorf("start mirroring: %w", err)
	}
	if len(n.cfg.Cert.Certificate) == 0 {
		return errors.New("start mirroring: no TLS certificate")
	}
	if n.spki, err = certSPKI(n.cfg.Cert.Certificate[0]); err != nil {
		return fmt.Errorf("start mirroring: %w", err)
	}
	return nil
}

// refresh starts replication with new peers and stops it with removed ones.
func (n *Node) refresh(ctx context.Context) {
	var peers []*meta.Peer
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		peers, err = tx.Peers()
		return err
	})
	if err != nil {
		n.log.Warn("mirror: read pairings", "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	seen := make(map[string]bool, len(peers))
	for _, mp := range peers {
		seen[mp.ID] = true
		if p, ok := n.peers[mp.ID]; ok && p.SPKI == mp.SPKI && p.Addr == mp.Addr && p.KEK == mp.KEK {
			continue
		} else if ok {
			p.stop()
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &peer{Peer: *mp, stop: cancel, outAcked: mp.Acked}
		n.peers[mp.ID] = p
		n.log.Info("mirror: peer added", "peer", mp.ID, "name", mp.Name, "addr", mp.Addr)
		go n.pullLoop(pctx, p)
		go n.antiEntropyLoop(pctx, p)
	}
	for id, p := range n.peers {
		if !seen[id] {
			p.stop()
			delete(n.peers, id)
			n.log.Info("mirror: peer removed", "peer", id)
		}
	}
	n.signalAcked()
}

// Await returns once the configured number of peers have durably applied
// this appliance's journal through pos, or an error when they have not
// within the ack timeout.
func (n *Node) Await(ctx context.Context, pos int64) error {
	if n.cfg.WriteAck == AckLocal {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AckTimeout)
	defer cancel()
	for {
		n.mu.Lock()
		have, total := 0, len(n.peers)
		for _, p := range n.peers {
			if p.outAcked >= pos {
				have++
			}
		}
		wait := n.acked
		n.mu.Unlock()
		need := total
		if n.cfg.WriteAck == AckOne {
			need = min(1, total)
		}
		if have >= need {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("%w: write_ack=%s needs %d of %d paired appliances, %d acknowledged within %s",
				ErrNotAcknowledged, n.cfg.WriteAck, need, total, have, n.cfg.AckTimeout)
		}
	}
}

// signalAcked wakes Await; n.mu is held.
func (n *Node) signalAcked() {
	close(n.acked)
	n.acked = make(chan struct{})
}

func (n *Node) setAcked(id string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[id]; p != nil && pos > p.outAcked {
		p.outAcked = pos
		p.lastContact = time.Now()
		n.signalAcked()
	}
}

// PeerCAs returns the client CA certificates (PEM) of the paired peers.
func (n *Node) PeerCAs() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out [][]byte
	for _, p := range n.peers {
		if len(p.CAPEM) > 0 {
			out = append(out, p.CAPEM)
		}
	}
	return out
}

func (n *Node) peerBySPKI(spki string) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peers {
		if p.SPKI == spki {
			return p
		}
	}
	return nil
}

// note records the outcome of talking to p: err nil means it went well.
func (n *Node) note(p *peer, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		p.lastContact = time.Now()
		p.lastErr = ""
		return
	}
	if p.lastErr != err.Error() {
		n.log.Warn("mirror: peer link failed", "peer", p.ID, "addr", p.Addr, "err", err)
	}
	p.lastErr = err.Error()
}

// masterLabel is the newest master key, rechecked every 10 s.
func (n *Node) masterLabel(ctx context.Context) (string, error) {
	n.mu.Lock()
	label, at := n.master, n.mastAt
	n.mu.Unlock()
	if label != "" && time.Since(at) < 10*time.Second {
		return label, nil
	}
	ms, err := n.cfg.Keys.Masters(ctx)
	if err != nil {
		return "", err
	}
	if len(ms) == 0 {
		return "", fmt.Errorf("find master key: %w", hsm.ErrNotFound)
	}
	n.mu.Lock()
	n.master, n.mastAt = ms[len(ms)-1], time.Now()
	n.mu.Unlock()
	return ms[len(ms)-1], nil
}

// LagWindow is how many replication lag samples a peer keeps: the p50 and
// p99 of `mirror status` are over at most that many recent objects.
const LagWindow = 1024

func (n *Node) recordLag(p *peer, lag time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(p.lags) >= LagWindow {
		p.lags = p.lags[1:]
	}
	p.lags = append(p.lags, lag)
}

// LagPercentiles returns the p50 and p99 of the recent replication lags of
// objects peers created (their commit to this appliance's commit), over all
// peers, and how many samples there are.
func (n *Node) LagPercentiles() (p50, p99 time.Duration, samples int) {
	n.mu.Lock()
	var all []time.Duration
	for _, p := range n.peers {
		all = append(all, p.lags...)
	}
	n.mu.Unlock()
	return percentiles(all)
}

func percentiles(d []time.Duration) (p50, p99 time.Duration, samples int) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)], len(s)
}

// saveStatus writes each peer's link state for `mirror status`.
func (n *Node) saveStatus(ctx context.Context) {
	var head int64
	var oldest map[string]time.Time
	n.mu.Lock()
	ps := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) error {
		var err error
		if head, err = tx.JournalHead(); err != nil {
			return err
		}
		oldest = make(map[string]time.Time)
		for _, p := range ps {
			n.mu.Lock()
			acked := p.outAcked
			n.mu.Unlock()
			if acked >= head {
				continue
			}
			cs, err := tx.Changes(acked, 1)
			if err != nil {
				return err
			}
			if len(cs) > 0 {
				oldest[p.ID] = meta.ClockTime(max(cs[0].Object.Rev.Clock, cs[0].Object.Rev.LifeClock))
			}
		}
		return nil
	})
	if err != nil {
		n.log.Warn("mirror: read journal for status", "err", err)
		return
	}
	now := time.Now()
	var rows []*meta.Peer
	n.mu.Lock()
	for _, p := range ps {
		st := p.Peer
		st.Acked = p.outAcked
		st.LagEntries = max(0, head-p.outAcked)
		if t, ok := oldest[p.ID]; ok {
			st.Lag = max(0, now.Sub(t))
		} else {
			st.Lag = 0
		}
		st.LastContact = p.lastContact
		st.LastError = p.lastErr
		if p.remoteErr != "" {
			st.LastError = "peer reports: " + p.remoteErr
		}
		switch {
		case p.lastErr != "" || p.remoteErr != "":
			st.State = "error"
		case p.pulling && p.streaming && st.LagEntries == 0:
			st.State = "in-sync"
		case p.pulling || p.streaming:
			st.State = "catching-up"
		default:
			st.State = "disconnected"
		}
		st.LagP50, st.LagP99, _ = percentiles(p.lags)
		rows = append(rows, &st)
	}
	n.status = n.status[:0]
	for _, r := range rows {
		n.status = append(n.status, *r)
	}
	n.mu.Unlock()
	err = n.cfg.Store.Update(ctx, func(tx *meta.Tx) error {
		for _, r := range rows {
			if err := tx.SetPeerStatus(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		n.log.Debug("mirror: save status", "err", err)
	}
}

// Status returns each peer's link state as of the last second (the status
// fields of meta.Peer), for metrics.
func (n *Node) Status() []meta.Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.status)
}

// Serve accepts mirror connections on ln until it is closed.
func (n *Node) Serve(ctx context.Context, ln net.Listener) error {
	if err := n.init(ctx); err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{n.cfg.Cert},
		// Peers are pinned by public key, not by a CA: each appliance has its own.
		ClientAuth: tls.RequireAnyClientCert,
		MinVersion: tls.VersionTLS13,
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept mirror connection: %w", err)
		}
		go n.handle(ctx, tls.Server(c, cfg))
	}
}
