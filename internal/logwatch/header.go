package logwatch

import (
	"bytes"
	"time"
)

// header is a line cut into its parts; every field is a sub-slice of the line.
type header struct {
	sysDate []byte // date of a syslog/journald prefix, if any
	uuid    []byte // session UUID that starts channel lines, if any
	date    []byte // FreeSWITCH's own date: "YYYY-MM-DD HH:MM:SS.ffffff" or "MM-DD HH:MM:SS.ffffff"
	level   []byte // WARNING, WARN, DEBUG, ...
	file    []byte // "sofia_reg.c:1787"
	msg     []byte // the text, trailing blanks and CR removed
}

// splitHeader cuts a FreeSWITCH log line:
//
//	[syslog prefix] [UUID ] DATE [NN.NN% ][LEVEL] file.c:N text
//	MM-DD HH:MM:SS.ffffff [WARN] [SOFIA] [sofia_reg.c:N] text
//
// where the syslog prefix is "2016-09-25T18:57:58.150982 host prog[pid]: " or
// "Sep 25 18:57:58 host prog[pid]: ", and DATE may be missing after such a
// prefix. Lines of another shape (continuation lines, banners, SQL dumps)
// are not offenses: ok is false.
func splitHeader(line []byte) (h header, ok bool) {
	h, i, ok := cutHead(line)
	if !ok {
		return h, false
	}
	return cutTail(h, line, i)
}

// cutHead cuts a line up to its level; i is where the rest starts.
func cutHead(line []byte) (h header, i int, ok bool) {
	// A NUL run is what a non-appending writer leaves after copytruncate.
	for i < len(line) && line[i] == 0 {
		i++
	}
	if len(line)-i < 24 {
		return h, 0, false
	}
	if isUUID(line[i:]) {
		h.uuid = line[i : i+36]
		i += 37
	} else if n, d := syslogPrefix(line[i:]); n > 0 {
		h.sysDate = d
		i += n
		if isUUID(line[i:]) {
			h.uuid = line[i : i+36]
			i += 37
		}
	}
	if n := dateLen(line[i:]); n > 0 {
		h.date = line[i : i+n]
		i += n + 1
	} else if h.sysDate == nil {
		return h, 0, false
	}
	// Idle CPU, "96.77% " (FreeSWITCH >= 1.10.7).
	if i < len(line) && line[i] >= '0' && line[i] <= '9' {
		j := i
		for j < len(line) && (line[j] >= '0' && line[j] <= '9' || line[j] == '.') {
			j++
		}
		if j+1 >= len(line) || line[j] != '%' || line[j+1] != ' ' {
			return h, 0, false
		}
		i = j + 2
	}
	// [LEVEL]
	if i+3 > len(line) || line[i] != '[' {
		return h, 0, false
	}
	j := i + 1
	for j < len(line) && line[j] >= 'A' && line[j] <= 'Z' {
		j++
	}
	if j == i+1 || j+1 >= len(line) || line[j] != ']' || line[j+1] != ' ' {
		return h, 0, false
	}
	h.level = line[i+1 : j]
	return h, j + 2, true
}

// cutTail cuts the rest of a line after its level: optional tags
// ([SOFIA]), the source file (file.c:N or [file.c:N]) and the message.
func cutTail(h header, line []byte, i int) (header, bool) {
	end := len(line)
	for end > i && (line[end-1] == '\r' || line[end-1] == ' ' || line[end-1] == '\n' || line[end-1] == '\t') {
		end--
	}
	line = line[:end]
	for i < len(line) && line[i] == '[' {
		j := bytes.IndexByte(line[i:], ']')
		if j < 0 || i+j+1 >= len(line) || line[i+j+1] != ' ' {
			return h, false
		}
		tok := line[i+1 : i+j]
		i += j + 2
		if isFile(tok) {
			h.file = tok
			break
		}
	}
	if h.file == nil {
		j := bytes.IndexByte(line[i:], ' ')
		if j < 0 || !isFile(line[i:i+j]) {
			return h, false
		}
		h.file = line[i : i+j]
		i += j + 1
	}
	h.msg = line[i:]
	return h, true
}

// isFile reports whether tok looks like "file.c:123".
func isFile(tok []byte) bool {
	k := len(tok) - 1
	for k > 0 && tok[k] >= '0' && tok[k] <= '9' {
		k--
	}
	return k > 0 && k < len(tok)-1 && tok[k] == ':'
}

// isUUID reports whether b starts with "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx ".
func isUUID(b []byte) bool {
	if len(b) < 37 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' || b[36] != ' ' {
		return false
	}
	b = b[:36]
	ok := isHex[b[0]] & isHex[b[1]] & isHex[b[2]] & isHex[b[3]] & isHex[b[4]] & isHex[b[5]] & isHex[b[6]] & isHex[b[7]] &
		isHex[b[9]] & isHex[b[10]] & isHex[b[11]] & isHex[b[12]] &
		isHex[b[14]] & isHex[b[15]] & isHex[b[16]] & isHex[b[17]] &
		isHex[b[19]] & isHex[b[20]] & isHex[b[21]] & isHex[b[22]] &
		isHex[b[24]] & isHex[b[25]] & isHex[b[26]] & isHex[b[27]] & isHex[b[28]] & isHex[b[29]] &
		isHex[b[30]] & isHex[b[31]] & isHex[b[32]] & isHex[b[33]] & isHex[b[34]] & isHex[b[35]]
	return ok == 1
}

// isHex maps hexadecimal digits to 1.
var isHex = func() (t [256]uint8) {
	for _, c := range []byte("0123456789abcdefABCDEF") {
		t[c] = 1
	}
	return t
}()

// dateLen returns the length of FreeSWITCH's date at the start of b (which
// must be followed by a space), or 0.
func dateLen(b []byte) int {
	var n int
	switch {
	case len(b) >= 20 && b[4] == '-' && b[7] == '-' && b[10] == ' ' && b[13] == ':' && b[16] == ':':
		n = 19
	case len(b) >= 15 && b[2] == '-' && b[5] == ' ' && b[8] == ':' && b[11] == ':':
		n = 14
	default:
		return 0
	}
	if b[n] == '.' {
		n++
		for n < len(b) && b[n] >= '0' && b[n] <= '9' {
			n++
		}
	}
	if n >= len(b) || b[n] != ' ' {
		return 0
	}
	return n
}

// syslogPrefix returns the length of a syslog/journald prefix at the start
// of b ("DATE host prog[pid]: ") and its date, or 0.
func syslogPrefix(b []byte) (int, []byte) {
	var dn int
	switch {
	case len(b) > 20 && b[4] == '-' && b[7] == '-' && b[10] == 'T':
		// ISO 8601, maybe with fraction and zone: up to the space.
		dn = bytes.IndexByte(b, ' ')
		if dn < 19 {
			return 0, nil
		}
	case len(b) > 16 && b[3] == ' ' && b[6] == ' ' && b[9] == ':' && b[12] == ':' && month(b[:3]) > 0:
		dn = 15
		if b[dn] == '.' { // journalctl -o short-precise
			dn++
			for dn < len(b) && b[dn] >= '0' && b[dn] <= '9' {
				dn++
			}
		}
	default:
		return 0, nil
	}
	i := dn
	if i >= len(b) || b[i] != ' ' {
		return 0, nil
	}
	i++
	// host
	j := bytes.IndexByte(b[i:], ' ')
	if j <= 0 {
		return 0, nil
	}
	i += j + 1
	// prog[pid]:
	j = bytes.IndexByte(b[i:], ' ')
	if j <= 1 || b[i+j-1] != ':' {
		return 0, nil
	}
	return i + j + 1, b[:dn]
}

var months = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func month(b []byte) time.Month {
	for k, m := range months {
		if string(b) == m {
			return time.Month(k + 1)
		}
	}
	return 0
}

// lineTime returns the time a line was written: FreeSWITCH's own date, else
// the syslog prefix's.
func (p *Parser) lineTime(h *header) (time.Time, bool) {
	if h.date != nil {
		return p.fsTime(h.date)
	}
	return p.syslogTime(h.sysDate)
}

func (p *Parser) fsTime(b []byte) (time.Time, bool) {
	if len(b) >= 19 && b[4] == '-' {
		// Offenses come in bursts: reuse the last second's conversion.
		if p.secOK && string(b[:19]) == string(p.sec[:]) {
			ns, ok := frac(b[19:])
			return p.secTime.Add(time.Duration(ns)), ok
		}
		y, ok1 := num(b[0:4])
		t, ok2 := p.clock(y, b[5:])
		if ok1 && ok2 {
			copy(p.sec[:], b[:19])
			p.secTime, p.secOK = t.Truncate(time.Second), true
		}
		return t, ok1 && ok2
	}
	return p.yearless(b)
}

// clock reads "MM-DD HH:MM:SS[.ffffff]" in year y.
func (p *Parser) clock(y int, b []byte) (time.Time, bool) {
	if len(b) < 14 {
		return time.Time{}, false
	}
	mo, ok1 := num(b[0:2])
	d, ok2 := num(b[3:5])
	hh, ok3 := num(b[6:8])
	mm, ok4 := num(b[9:11])
	ss, ok5 := num(b[12:14])
	if !(ok1 && ok2 && ok3 && ok4 && ok5) || mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, false
	}
	ns, ok := frac(b[14:])
	if !ok {
		return time.Time{}, false
	}
	return time.Date(y, time.Month(mo), d, hh, mm, ss, ns, p.loc), true
}

// yearless reads "MM-DD HH:MM:SS.ffffff" and picks the year that puts it
// closest to now without being more than a day ahead (so December lines
// read in January land in the year before).
func (p *Parser) yearless(b []byte) (time.Time, bool) {
	now := p.now()
	y := now.In(p.loc).Year()
	limit := now.Add(24 * time.Hour)
	t, ok := p.clock(y+1, b)
	if !ok {
		return t, false
	}
	if !t.After(limit) {
		return t, true
	}
	t, _ = p.clock(y, b)
	if !t.After(limit) {
		return t, true
	}
	t, _ = p.clock(y-1, b)
	return t, true
}

// syslogTime reads "2016-09-25T18:57:58.150982[zone]" or "Sep 25 18:57:58".
func (p *Parser) syslogTime(b []byte) (time.Time, bool) {
	if len(b) >= 19 && b[10] == 'T' {
		s := string(b)
		for _, layout := range []string{"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999Z0700"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, true
			}
		}
		// No zone: local time.
		var buf [32]byte
		c := append(buf[:0], b[5:]...)
		c[5] = ' '
		y, ok := num(b[0:4])
		if !ok {
			return time.Time{}, false
		}
		return p.clock(y, c)
	}
	if len(b) >= 15 && b[3] == ' ' {
		mo := month(b[:3])
		d := b[4:6]
		if d[0] == ' ' {
			d = d[1:]
		}
		dd, ok := num(d)
		if mo == 0 || !ok {
			return time.Time{}, false
		}
		var buf [32]byte
		c := buf[:0]
		c = append(c, byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+dd/10), byte('0'+dd%10), ' ')
		c = append(c, b[7:]...)
		return p.yearless(c)
	}
	return time.Time{}, false
}

func num(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// frac reads an optional ".ffffff" into nanoseconds.
func frac(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, true
	}
	if b[0] != '.' || len(b) == 1 {
		return 0, false
	}
	ns, scale := 0, 100000000
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		ns += int(c-'0') * scale
		scale /= 10
	}
	return ns, true
}
