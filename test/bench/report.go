package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Row is one line of the report: an operation at one concurrency level.
type Row struct {
	Op      string
	Clients int
	Ours    Sample  // hsmkms
	PyKMIP  *Sample // nil when PyKMIP was not measured
	Raw     float64 // raw PKCS#11 ops/s of the same work; 0 when there is no ceiling
}

// Ratio is hsmkms's rate over PyKMIP's; ok is false when there is nothing to compare.
func (r Row) Ratio() (x float64, ok bool) {
	if r.PyKMIP == nil || r.PyKMIP.Rate() == 0 {
		return 0, false
	}
	return r.Ours.Rate() / r.PyKMIP.Rate(), true
}

// OfRaw is hsmkms's rate as a percentage of the raw PKCS#11 rate; ok is false when
// there is no ceiling.
func (r Row) OfRaw() (pct float64, ok bool) {
	if r.Raw == 0 {
		return 0, false
	}
	return 100 * r.Ours.Rate() / r.Raw, true
}

// Report is the outcome of Run.
type Report struct {
	Rows   []Row
	Setup  []string      // how the numbers were measured, one line each
	PyKMIP string        // "" when measured, else why not ("unavailable (...)")
	Raw    string        // "" when measured, else why not
	Mirror *MirrorReport // nil when mirroring was not measured
}

// Verdict is the outcome of one target.
type Verdict struct {
	Status string // PASS, MISS or n/a
	Text   string
}

// Targets of the issue (on a 2-core machine).
const (
	minVsPyKMIP     = 50.0   // Get and Encrypt: at least 50x PyKMIP
	minPctOfRaw     = 40.0   // Get and Encrypt: at least 40% of the raw PKCS#11 rate
	minCreateRate   = 1500.0 // Create, 8 clients, committed: at least 1,500/s
	createRateConns = 8
)

// Verdicts checks every target against the rows: the two ratio targets at every
// concurrency level measured, the Create rate at 8 clients.
func (r *Report) Verdicts() []Verdict {
	var out []Verdict
	for _, op := range []string{opGet, opEncrypt} {
		for _, row := range r.rowsOf(op) {
			subject := fmt.Sprintf("%s, %s", op, clientsLabel(row.Clients))
			if x, ok := row.Ratio(); ok {
				out = append(out, verdict(x >= minVsPyKMIP, "%s: %s PyKMIP (target ≥ %gx)",
					subject, fmtRatio(x), minVsPyKMIP))
			} else {
				out = append(out, Verdict{"n/a", fmt.Sprintf("%s vs PyKMIP: %s", subject, orDefault(r.PyKMIP, "not measured"))})
			}
			if pct, ok := row.OfRaw(); ok {
				out = append(out, verdict(pct >= minPctOfRaw, "%s: %s of raw PKCS#11 (target ≥ %g%%)",
					subject, fmtPct(pct), minPctOfRaw))
			} else {
				out = append(out, Verdict{"n/a", fmt.Sprintf("%s vs raw PKCS#11: %s", subject, orDefault(r.Raw, "not measured"))})
			}
		}
	}
	if m := r.Mirror; m != nil {
		out = append(out, m.verdicts()...)
	}
	for _, row := range r.rowsOf(opCreate) {
		if row.Clients == createRateConns {
			out = append(out, verdict(row.Ours.Rate() >= minCreateRate, "%s, %s: %s ops/s, each committed before the reply (target ≥ %s/s)",
				opCreate, clientsLabel(row.Clients), fmtRate(row.Ours.Rate()), fmtRate(minCreateRate)))
		}
	}
	return out
}

func verdict(pass bool, format string, args ...any) Verdict {
	status := "MISS"
	if pass {
		status = "PASS"
	}
	return Verdict{status, fmt.Sprintf(format, args...)}
}

func (r *Report) rowsOf(op string) []Row {
	var out []Row
	for _, row := range r.Rows {
		if row.Op == op {
			out = append(out, row)
		}
	}
	return out
}

// Markdown renders the setup, the table and the verdicts.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("## hsmkms bench\n\n")
	for _, s := range r.Setup {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	fmt.Fprintf(&b, "- PyKMIP: %s\n", orDefault(r.PyKMIP, "measured"))
	fmt.Fprintf(&b, "- raw PKCS#11: %s\n", orDefault(r.Raw, "measured"))
	b.WriteString("\n| operation | clients | hsmkms ops/s | p50 | p99 | PyKMIP ops/s | ratio (x) | raw PKCS#11 ops/s | % of raw |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range r.Rows {
		py, ratio, raw, pct := none, none, none, none
		if row.PyKMIP != nil {
			py = fmtRate(row.PyKMIP.Rate())
		}
		if x, ok := row.Ratio(); ok {
			ratio = fmtRatio(x)
		}
		if row.Raw != 0 {
			raw = fmtRate(row.Raw)
		}
		if p, ok := row.OfRaw(); ok {
			pct = fmtPct(p)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", row.Op, row.Clients,
			fmtRate(row.Ours.Rate()), fmtLatency(row.Ours.P50), fmtLatency(row.Ours.P99), py, ratio, raw, pct)
	}
	if r.Mirror != nil {
		r.Mirror.markdown(&b)
	}
	b.WriteString("\n### Targets\n\n")
	for _, v := range r.Verdicts() {
		fmt.Fprintf(&b, "- %s %s\n", v.Status, v.Text)
	}
	return b.String()
}

// none marks a cell with nothing to show.
const none = "—"

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func clientsLabel(n int) string {
	if n == 1 {
		return "1 client"
	}
	return strconv.Itoa(n) + " clients"
}

// fmtRate prints ops/s: whole numbers with thousands separators, one decimal below 100.
func fmtRate(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtLatency prints milliseconds with three significant digits or more.
func fmtLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + " ms"
	case ms < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
}

// fmtRatio prints a speed-up: one decimal below 100x, whole above.
func fmtRatio(x float64) string {
	if x < 100 {
		return strconv.FormatFloat(x, 'f', 1, 64) + "x"
	}
	return strconv.FormatFloat(x, 'f', 0, 64) + "x"
}

func fmtPct(p float64) string { return strconv.FormatFloat(p, 'f', 0, 64) + "%" }
