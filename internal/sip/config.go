package sip

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Config holds the rule parameters of the Analyzer. Rule on/off and weights
// belong to the jail, not here.
type Config struct {
	// ScannerUserAgents are case-insensitive substrings matched against
	// User-Agent, the From/To display names and the From/To/Contact URIs
	// (as "sip:user@host") of requests.
	ScannerUserAgents []string
	// TollPatterns are regular expressions (RE2) matched against the
	// Request-URI user of INVITEs that carry no Authorization or
	// Proxy-Authorization header.
	TollPatterns []string
	// FloodRequests requests from one address within FloodWindow are
	// allowed; the next one raises one flood offense for the window and the
	// rest of the window is counted but not parsed.
	FloodRequests int
	FloodWindow   time.Duration
	// ScanUsers distinct To users in requests from one address within
	// ScanWindow raise extension_scan (once per window).
	ScanUsers  int
	ScanWindow time.Duration
	// ScanFailures distinct To users answered 404 or 403 to one address
	// within ScanWindow raise extension_scan too.
	ScanFailures int
	// SIPPorts are the ports whose UDP/TCP payloads ReadCapture treats as
	// SIP even when they do not start like SIP (so garbage sent to them
	// counts as malformed_sip). Payloads on other ports are taken only when
	// they start with a SIP start line.
	SIPPorts []int
	// MaxTrackedIPs bounds the per-address state (flood, scan windows).
	MaxTrackedIPs int
}

// defaultScannerUserAgents are the tools seen in the wild and in the lab.
var defaultScannerUserAgents = []string{
	"friendly-scanner", // SIPVicious svmap/svwar/svcrack
	"sipvicious",       // SIPVicious From display name
	"sipcli",
	"sundayddr",
	"sipsscuser",
	"vaxsipuseragent",
	"pplsip", // sippts
	"sipsak",
	"smap",
	"sip:nm@nm", // nmap sip-methods / sip-enum-users
	"iwar",
	"sipscan",
	"simplesip",
	"sip-scan",
	"voipbuster",
	"cyb3r",
	"fscan",
	"sipptk",
}

// defaultTollPatterns match Request-URI users that dial abroad or premium:
// an E.164 "+", the 00/011 international prefixes, the same behind up to six
// tech-prefix digits or */# (9011..., 900..., *00...), and digit strings too
// long for any national plan.
var defaultTollPatterns = []string{
	`^\+[0-9]{7,}$`,
	`^(00|011)[1-9][0-9]{5,}$`,
	`^[0-9*#]{1,6}(00|011)[1-9][0-9]{5,}$`,
	`^[0-9]{16,}$`,
}

// DefaultConfig returns the built-in rule parameters.
func DefaultConfig() Config {
	return Config{
		ScannerUserAgents: append([]string(nil), defaultScannerUserAgents...),
		TollPatterns:      append([]string(nil), defaultTollPatterns...),
		FloodRequests:     30,
		FloodWindow:       2 * time.Second,
		ScanUsers:         10,
		ScanWindow:        time.Minute,
		ScanFailures:      8,
		SIPPorts:          []int{5060, 5080},
		MaxTrackedIPs:     100_000,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for i, p := range c.TollPatterns {
		if _, err := regexp.Compile(p); err != nil {
			errs = append(errs, fmt.Errorf("toll pattern %d %q: %w", i, p, err))
		}
	}
	for i, s := range c.ScannerUserAgents {
		if strings.TrimSpace(s) == "" {
			errs = append(errs, fmt.Errorf("scanner user agent %d is empty", i))
		}
	}
	if c.FloodRequests <= 0 {
		errs = append(errs, errors.New("flood requests must be > 0"))
	}
	if c.FloodWindow <= 0 {
		errs = append(errs, errors.New("flood window must be > 0"))
	}
	if c.ScanUsers <= 0 {
		errs = append(errs, errors.New("scan users must be > 0"))
	}
	if c.ScanWindow <= 0 {
		errs = append(errs, errors.New("scan window must be > 0"))
	}
	if c.ScanFailures < 0 {
		errs = append(errs, errors.New("scan failures must be >= 0"))
	}
	for _, p := range c.SIPPorts {
		if p <= 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("bad SIP port %d", p))
		}
	}
	if c.MaxTrackedIPs < 0 {
		errs = append(errs, errors.New("max tracked IPs must be >= 0"))
	}
	return errors.Join(errs...)
}
