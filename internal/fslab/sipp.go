package fslab

import (
	"bufio"
	"embed"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

//go:embed scenarios/*.xml
var scenarios embed.FS

// SippRun says how to run one sipp.
type SippRun struct {
	NS       string     // namespace to run in
	Scenario string     // file name under scenarios/ (register.xml, ...)
	Rows     [][]string // injection CSV rows (SEQUENTIAL)
	Local    netip.Addr // -i (zero: the kernel's choice)
	Port     int        // -p local port (0: sipp's choice)
	Target   int        // FreeSWITCH port (0: InternalPort)
	Calls    int        // -m (0: len(Rows))
	Rate     float64    // calls per second (0: 10)
	Extra    []string   // more sipp arguments
}

// Sipp is one sipp process.
type Sipp struct {
	*Proc
	MessageFile string
}

var sippSeq atomic.Int64

// Sipp starts sipp against FreeSWITCH; it writes every message it sends
// and receives, with timestamps, to MessageFile.
func (l *Lab) Sipp(r SippRun) *Sipp {
	l.t.Helper()
	n := sippSeq.Add(1)
	dir := mkdir(l.t, filepath.Join(l.Dir, fmt.Sprintf("sipp-%d", n)))
	scen, err := scenarios.ReadFile("scenarios/" + r.Scenario)
	if err != nil {
		l.t.Fatal(err)
	}
	sf := filepath.Join(dir, r.Scenario)
	if err := os.WriteFile(sf, scen, 0o644); err != nil {
		l.t.Fatal(err)
	}
	target := r.Target
	if target == 0 {
		target = InternalPort
	}
	calls := r.Calls
	if calls == 0 {
		calls = len(r.Rows)
	}
	rate := r.Rate
	if rate == 0 {
		rate = 10
	}
	s := &Sipp{MessageFile: filepath.Join(dir, "messages.log")}
	args := []string{"sipp", fmt.Sprintf("%s:%d", FSAddr, target), "-sf", sf, "-m", strconv.Itoa(calls),
		"-r", strconv.FormatFloat(rate*1000, 'f', 0, 64), "-rp", "1000000", // rate*1000 calls per 1000 s
		"-trace_msg", "-message_file", s.MessageFile, "-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-nostdin", "-timeout", "120s", "-timeout_error", "-max_recv_loops", "10000"}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		args = append(args, "-max_socket", strconv.FormatUint(min(rl.Cur-64, 50000), 10))
	}
	if len(r.Rows) > 0 {
		var b strings.Builder
		b.WriteString("SEQUENTIAL\n")
		for _, row := range r.Rows {
			b.WriteString(strings.Join(row, ";"))
			b.WriteByte('\n')
		}
		inf := filepath.Join(dir, "users.csv")
		if err := os.WriteFile(inf, []byte(b.String()), 0o644); err != nil {
			l.t.Fatal(err)
		}
		args = append(args, "-inf", inf)
	}
	if r.Local.IsValid() {
		args = append(args, "-i", r.Local.String())
	}
	if r.Port != 0 {
		args = append(args, "-p", strconv.Itoa(r.Port))
	}
	args = append(args, r.Extra...)
	s.Proc = l.Start("sipp "+r.Scenario, r.NS, args...)
	return s
}

// Run waits for sipp to finish within timeout and fails the test if a call
// failed.
func (s *Sipp) Run(l *Lab, timeout time.Duration) {
	l.t.Helper()
	if err := s.Wait(timeout); err != nil {
		l.t.Fatalf("%s: %v\n%s\nerrors: %s\nmessages: %s", s.Name, err, lastLines(s.Output(), 30), readTail(filepath.Join(filepath.Dir(s.MessageFile), "errors.log")), tail(s.MessageFile, 60))
	}
}

func readTail(p string) string { return tail(p, 20) }

// Message is one SIP message sipp logged.
type Message struct {
	At       time.Time
	Received bool
	Text     string // the message, LF line ends
}

// FirstLine is the request or status line.
func (m Message) FirstLine() string { line, _, _ := strings.Cut(m.Text, "\n"); return line }

// Header is the first value of header name (case-insensitive, long form).
func (m Message) Header(name string) string {
	for _, line := range strings.Split(m.Text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Messages parses sipp's message log (blocks that start with a dashed
// line carrying the local date and time).
func (s *Sipp) Messages() ([]Message, error) {
	f, err := os.Open(s.MessageFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var msgs []Message
	var cur *Message
	var body strings.Builder
	flush := func() {
		if cur != nil {
			cur.Text = strings.TrimLeft(body.String(), "\n")
			msgs = append(msgs, *cur)
		}
		cur = nil
		body.Reset()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "----------------------------------------------- "); ok {
			flush()
			at, err := time.ParseInLocation("2006-01-02 15:04:05.000000", strings.Replace(strings.TrimSpace(rest), "\t", " ", 1), time.Local)
			if err != nil {
				return nil, fmt.Errorf("sipp message log: %q: %w", line, err)
			}
			cur = &Message{At: at}
			continue
		}
		if cur == nil {
			continue
		}
		if body.Len() == 0 && (strings.HasPrefix(line, "UDP message received") || strings.HasPrefix(line, "UDP message sent")) {
			cur.Received = strings.HasPrefix(line, "UDP message received")
			continue
		}
		body.WriteString(line)
		body.WriteByte('\n')
	}
	flush()
	return msgs, sc.Err()
}
