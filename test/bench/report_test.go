package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"rate zero", fmtRate(0), "0.0"},
		{"rate below 100 keeps a decimal", fmtRate(15.44), "15.4"},
		{"rate 100", fmtRate(100), "100"},
		{"rate rounds to nearest", fmtRate(999.5), "1,000"},
		{"rate thousands", fmtRate(12345.4), "12,345"},
		{"rate millions", fmtRate(1234567), "1,234,567"},
		{"latency sub-ms", fmtLatency(420 * time.Microsecond), "0.42 ms"},
		{"latency below 10 ms", fmtLatency(2590 * time.Microsecond), "2.59 ms"},
		{"latency below 100 ms", fmtLatency(24700 * time.Microsecond), "24.7 ms"},
		{"latency above 100 ms", fmtLatency(1197 * time.Millisecond), "1197 ms"},
		{"ratio below 100", fmtRatio(65.94), "65.9x"},
		{"ratio exactly target", fmtRatio(50), "50.0x"},
		{"ratio above 100", fmtRatio(163.4), "163x"},
		{"percent", fmtPct(37.4), "37%"},
		{"percent rounds", fmtPct(39.6), "40%"},
		{"clients one", clientsLabel(1), "1 client"},
		{"clients many", clientsLabel(8), "8 clients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// sample makes a Sample with the given rate over one second.
func sample(rate int) Sample {
	return Sample{Ops: rate, Elapsed: time.Second, P50: time.Millisecond, P99: 3 * time.Millisecond}
}

func TestRowRatios(t *testing.T) {
	py := sample(20)
	zero := Sample{}
	tests := []struct {
		name      string
		row       Row
		wantX     float64
		wantXOK   bool
		wantPct   float64
		wantPctOK bool
	}{
		{"both baselines", Row{Ours: sample(1000), PyKMIP: &py, Raw: 4000}, 50, true, 25, true},
		{"no PyKMIP", Row{Ours: sample(1000), Raw: 2000}, 0, false, 50, true},
		{"PyKMIP did nothing", Row{Ours: sample(1000), PyKMIP: &zero}, 0, false, 0, false},
		{"no raw ceiling", Row{Ours: sample(1000), PyKMIP: &py}, 50, true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, ok := tt.row.Ratio()
			if x != tt.wantX || ok != tt.wantXOK {
				t.Errorf("Ratio = %v, %v; want %v, %v", x, ok, tt.wantX, tt.wantXOK)
			}
			pct, ok := tt.row.OfRaw()
			if pct != tt.wantPct || ok != tt.wantPctOK {
				t.Errorf("OfRaw = %v, %v; want %v, %v", pct, ok, tt.wantPct, tt.wantPctOK)
			}
		})
	}
}

func TestVerdicts(t *testing.T) {
	py := sample(100)
	rep := &Report{Rows: []Row{
		{Op: opCreate, Clients: 1, Ours: sample(900), PyKMIP: &py, Raw: 2000},
		{Op: opCreate, Clients: 8, Ours: sample(1500), PyKMIP: &py, Raw: 2000},
		{Op: opGet, Clients: 1, Ours: sample(4999), PyKMIP: &py, Raw: 10000},
		{Op: opGet, Clients: 8, Ours: sample(5000), PyKMIP: &py, Raw: 12501},
		{Op: opGetAttr, Clients: 8, Ours: sample(9000), PyKMIP: &py},
		{Op: opEncrypt, Clients: 1, Ours: sample(8000)},
	}, PyKMIP: "", Raw: ""}
	want := []Verdict{
		{"MISS", "Get, 1 client: 50.0x PyKMIP (target ≥ 50x)"},
		{"PASS", "Get, 1 client: 50% of raw PKCS#11 (target ≥ 40%)"},
		{"PASS", "Get, 8 clients: 50.0x PyKMIP (target ≥ 50x)"},
		{"MISS", "Get, 8 clients: 40% of raw PKCS#11 (target ≥ 40%)"},
		{"n/a", "Encrypt 64 B, 1 client vs PyKMIP: not measured"},
		{"n/a", "Encrypt 64 B, 1 client vs raw PKCS#11: not measured"},
		{"PASS", "Create, 8 clients: 1,500 ops/s, each committed before the reply (target ≥ 1,500/s)"},
	}
	if got := rep.Verdicts(); !slices.Equal(got, want) {
		t.Errorf("Verdicts:\n got %q\nwant %q", got, want)
	}

	rep.PyKMIP = "unavailable (not installed)"
	got := rep.Verdicts()
	if got[4].Text != "Encrypt 64 B, 1 client vs PyKMIP: unavailable (not installed)" {
		t.Errorf("verdict without PyKMIP = %q, want the reason", got[4].Text)
	}
}

func TestMarkdown(t *testing.T) {
	py := sample(50)
	rep := &Report{
		Rows: []Row{
			{Op: opGet, Clients: 8, Ours: sample(5000), PyKMIP: &py, Raw: 10000},
			{Op: opNewConn, Clients: 1, Ours: sample(300)},
		},
		Setup:  []string{"machine: test"},
		PyKMIP: "skipped",
	}
	md := rep.Markdown()
	for _, want := range []string{
		"- machine: test\n",
		"- PyKMIP: skipped\n",
		"- raw PKCS#11: measured\n",
		"| operation | clients | hsmkms ops/s | p50 | p99 | PyKMIP ops/s | ratio (x) | raw PKCS#11 ops/s | % of raw |\n",
		"| Get | 8 | 5,000 | 1.00 ms | 3.00 ms | 50.0 | 100x | 10,000 | 50% |\n",
		"| New connection (TLS + Get) | 1 | 300 | 1.00 ms | 3.00 ms | — | — | — | — |\n",
		"### Targets\n",
		"- PASS Get, 8 clients: 100x PyKMIP (target ≥ 50x)\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// Header, separator and one line per row: the table has no stray lines.
	if n := strings.Count(md, "\n|"); n != 2+len(rep.Rows) {
		t.Errorf("table has %d lines, want %d:\n%s", n, 2+len(rep.Rows), md)
	}
}
