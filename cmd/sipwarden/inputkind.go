package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// checkInputKind refuses, before any work, a replay input that is neither
// a FreeSWITCH log (text, plain or gzip) nor a pcap/pcapng capture: a
// compressed format replay does not read, or binary data. Reading it
// anyway would report "0 sources" and let the operator believe the night
// was quiet.
func checkInputKind(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory: name the log files or captures in it", path)
	}
	head := make([]byte, 8<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return fmt.Errorf("%s: %w", path, err)
	}
	head = head[:n]
	if kind, hint := compressed(head); kind != "" {
		return fmt.Errorf("%s is %s-compressed, which replay does not read: %s", path, kind, hint)
	}
	if ext := strings.ToLower(filepath.Ext(path)); n == 0 && (ext == ".xz" || ext == ".zst" || ext == ".bz2" || ext == ".zip") {
		return fmt.Errorf("%s: an empty %s file", path, ext)
	}
	inner, what := head, ""
	if bytes.HasPrefix(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(head))
		if err != nil {
			return fmt.Errorf("%s: gzip header: %w", path, err)
		}
		inner, _ = io.ReadAll(io.LimitReader(zr, 8<<10)) // a truncated head is fine: only the start is judged
		what = " (inside the gzip)"
		if kind, hint := compressed(inner); kind != "" {
			return fmt.Errorf("%s holds %s-compressed data%s: %s", path, kind, what, hint)
		}
	}
	if isCapture(inner) {
		return nil
	}
	if !looksLikeText(inner) {
		return fmt.Errorf("%s is neither a FreeSWITCH log nor a pcap/pcapng capture%s (binary data): replay reads logs (plain or .gz) and captures", path, what)
	}
	return nil
}

func compressed(b []byte) (kind, hint string) {
	switch {
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz", "decompress it first (xz -dk FILE)"
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd", "decompress it first (zstd -d FILE)"
	case bytes.HasPrefix(b, []byte("BZh")) && len(b) > 3 && b[3] >= '1' && b[3] <= '9':
		return "bzip2", "decompress it first (bunzip2 -k FILE)"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		return "zip", "unzip it first"
	case bytes.HasPrefix(b, []byte{0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c}):
		return "7z", "extract it first"
	}
	return "", ""
}

// isCapture: pcap (either byte order, micro or nano seconds) or pcapng.
func isCapture(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	switch string(b[:4]) {
	case "\xa1\xb2\xc3\xd4", "\xd4\xc3\xb2\xa1", "\xa1\xb2\x3c\x4d", "\x4d\x3c\xb2\xa1", "\x0a\x0d\x0d\x0a":
		return true
	}
	return false
}

// looksLikeText: no NUL byte and mostly valid UTF-8 (a log may carry a few
// stray bytes from a client; random data is invalid almost everywhere).
func looksLikeText(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	bad, ctl := 0, 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			if len(b) < utf8.UTFMax {
				break // a rune cut by the end of the head
			}
			bad++
		} else if r < 0x20 && r != '\n' && r != '\r' && r != '\t' && r != 0x1b {
			ctl++
		}
		b = b[size:]
	}
	return bad+ctl <= 8
}
