package jail

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/offense"
)

const stateVersion = 1

// maxStateScored caps how many addresses without ban history are saved
// (highest scores first), so a flood of distinct sources cannot make the
// state file huge.
const maxStateScored = 65536

type stateFile struct {
	Version   int           `json:"version"`
	SavedAt   time.Time     `json:"saved_at"`
	Offenders []stateRecord `json:"offenders"`
	// Extra is Options.StateExtra's state (the whitelist's live
	// registrations); absent in files written before it existed.
	Extra json.RawMessage `json:"extra,omitempty"`
}

type stateRecord struct {
	IP string `json:"ip"`
	// Bits is set when the entry's key is not the jail's usual one for IP
	// (an address scored alone inside a split IPv6 prefix).
	Bits     int               `json:"bits,omitempty"`
	Split    bool              `json:"split,omitempty"`
	WinStart int64             `json:"win_start,omitempty"` // unix ns
	Last     int64             `json:"last,omitempty"`      // unix ns
	Cur      float32           `json:"cur,omitempty"`
	Prev     float32           `json:"prev,omitempty"`
	Counts   map[string]uint32 `json:"counts,omitempty"`
	User     string            `json:"user,omitempty"`
	Peak     float32           `json:"peak,omitempty"`
	Bans     int               `json:"bans,omitempty"`
	LastBan  int64             `json:"last_ban,omitempty"` // unix ns
	BanDur   time.Duration     `json:"ban_duration,omitempty"`
	Ban      *stateBan         `json:"ban,omitempty"`
}

type stateBan struct {
	Prefix  string    `json:"prefix"`
	Addr    string    `json:"addr,omitempty"` // the offender that caused it
	Rule    string    `json:"rule"`
	Reason  string    `json:"reason"`
	Created time.Time `json:"created_at"`
	Expires time.Time `json:"expires_at,omitzero"`
}

// saveNow writes the state file now (atomically: temp file, fsync,
// rename, fsync of the directory). Run saves every SaveEvery when something
// changed, and at stop.
func (j *Jail) saveNow() error {
	if j.opt.StateFile == "" {
		return nil
	}
	j.dirty.Store(false)
	if err := j.saveState(j.opt.StateFile); err != nil {
		j.dirty.Store(true)
		return err
	}
	return nil
}

func (j *Jail) saveIfDirty() error {
	if j.opt.StateFile == "" || !j.dirty.Load() {
		return nil
	}
	return j.saveNow()
}

// snapEntry is one entry copied under its shard's lock; the record is
// built from the copy after the lock is released.
type snapEntry struct {
	k       netip.Prefix
	of      offender
	hist    history
	ban     activeBan
	hasBan  bool
	hasHist bool
}

func (j *Jail) snapshot() (stateFile, error) {
	now := j.now()
	nn := now.UnixNano()
	F := int64(j.policy.Load().Findtime)
	var (
		keep   []stateRecord
		full   []snapEntry // bans, history, split prefixes: always saved
		scored []scoredKey
		top    = make(minScores, 0, maxStateScored+1)
	)
	// Pass 1, one shard at a time: what is always saved is copied, the
	// rest only scored; the copies become records after the lock.
	for i := range j.shards {
		sh := &j.shards[i]
		full, scored = full[:0], scored[:0]
		sh.mu.Lock()
		for k, of := range sh.offenders {
			if e, ok := j.copyEntry(k, of, now); ok {
				full = append(full, e)
			} else if sc := of.score(max(nn, of.last), F); sc > 0 {
				scored = append(scored, scoredKey{sc, k})
			}
		}
		sh.mu.Unlock()
		runtime.Gosched()
		for i := range full {
			keep = append(keep, j.record(&full[i]))
		}
		for _, c := range scored {
			if len(top) < maxStateScored {
				heap.Push(&top, c)
			} else if c.s > top[0].s {
				top[0] = c
				heap.Fix(&top, 0)
			}
		}
	}
	// Pass 2: the highest scores without history, at most maxStateScored.
	for _, c := range top {
		sh := j.shardOf(c.k)
		sh.mu.Lock()
		of := sh.offenders[c.k]
		var e snapEntry
		if of != nil {
			e, _ = j.copyEntry(c.k, of, now)
		}
		sh.mu.Unlock()
		if of != nil {
			keep = append(keep, j.record(&e))
		}
	}
	sort.Slice(keep, func(a, b int) bool { return keep[a].IP < keep[b].IP })
	st := stateFile{Version: stateVersion, SavedAt: now.UTC(), Offenders: keep}
	if j.opt.StateExtra != nil {
		b, err := j.opt.StateExtra.MarshalState()
		if err != nil {
			return st, fmt.Errorf("extra state: %w", err)
		}
		if len(b) > 0 {
			if !json.Valid(b) {
				return st, fmt.Errorf("extra state: not JSON")
			}
			st.Extra = b
		}
	}
	return st, nil
}

// copyEntry copies an entry under its shard's lock; ok reports whether it
// is always saved (a ban, ban history, a split prefix).
func (j *Jail) copyEntry(k netip.Prefix, of *offender, now time.Time) (e snapEntry, ok bool) {
	e = snapEntry{k: k, of: *of}
	if of.hist != nil {
		e.hist, e.hasHist = *of.hist, true
	}
	if b := of.ban; b != nil && (b.expires.IsZero() || b.expires.After(now)) {
		e.ban, e.hasBan = *b, true
	}
	return e, e.hasBan || e.hasHist || of.split
}

// record is the state file form of a copied entry.
func (j *Jail) record(e *snapEntry) stateRecord {
	of, k := &e.of, e.k
	r := stateRecord{IP: k.Addr().String(), WinStart: of.winStart, Last: of.last, Cur: of.cur, Prev: of.prev, User: of.user, Peak: of.peak, Split: of.split}
	if k != j.key(k.Addr()) {
		r.Bits = k.Bits()
	}
	for i, c := range of.counts {
		if c > 0 {
			if r.Counts == nil {
				r.Counts = make(map[string]uint32)
			}
			r.Counts[ruleName(i)] = c
		}
	}
	if e.hasHist {
		r.Bans, r.LastBan, r.BanDur = e.hist.count, e.hist.last, e.hist.dur
	}
	if b := &e.ban; e.hasBan {
		r.Ban = &stateBan{Prefix: b.prefix.String(), Rule: b.rule, Reason: b.why(), Created: b.created, Expires: b.expires}
		if b.addr.IsValid() {
			r.Ban.Addr = b.addr.String()
		}
	}
	return r
}

func (j *Jail) saveState(path string) error {
	st, err := j.snapshot()
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return writeFileAtomic(path, b)
}

func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("state %s: write: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("state %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("state %s: close: %w", path, err)
	}
	if err = os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state %s: rename: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: the rename is durable once the directory is
		d.Close()
	}
	return nil
}

// readState parses a state file. A missing file is not an error (nil, nil).
func readState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state %s: %w: %w", path, ban.ErrBadState, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("state %s: %w: version %d, want %d", path, ban.ErrBadState, s.Version, stateVersion)
	}
	return &s, nil
}

func (j *Jail) loadState(path string) error {
	s, err := readState(path)
	if err != nil {
		if errors.Is(err, ban.ErrBadState) {
			aside := path + ".corrupt"
			if rerr := os.Rename(path, aside); rerr == nil {
				err = fmt.Errorf("%w (moved to %s)", err, aside)
			}
		}
		return err
	}
	if s == nil {
		return nil
	}
	now := j.now()
	F := int64(j.policy.Load().Findtime)
	var bad, full int
	// Bans and ban history first: when the file holds more than
	// MaxOffenders entries, scores are what is left out.
	recs := slices.Clone(s.Offenders)
	sort.SliceStable(recs, func(a, b int) bool {
		return (recs[a].Ban != nil || recs[a].Bans > 0) && recs[b].Ban == nil && recs[b].Bans == 0
	})
	for _, r := range recs {
		ip, err := netip.ParseAddr(r.IP)
		if err != nil {
			bad++
			continue
		}
		ip = ip.Unmap().WithZone("")
		key := j.key(ip)
		if r.Bits > 0 {
			if key, err = ip.Prefix(r.Bits); err != nil {
				bad++
				continue
			}
		}
		var ban_ *activeBan
		if b := r.Ban; b != nil && (b.Expires.IsZero() || b.Expires.After(now)) {
			p, err := netip.ParsePrefix(b.Prefix)
			if err != nil || p.Masked() != key {
				// A ban the state cannot describe is not made up: the
				// kernel read-back adopts what really is in the sets.
				bad++
				continue
			}
			ban_ = &activeBan{prefix: p.Masked(), rule: b.Rule, reason: b.Reason, created: b.Created, expires: b.Expires}
			if a, err := netip.ParseAddr(b.Addr); err == nil && p.Contains(a.Unmap()) {
				ban_.addr = a.Unmap()
			}
		}
		sh, of := j.entry(key, 0, F, false)
		if of == nil {
			sh.mu.Unlock()
			if !j.reserve(0, F, false) {
				full++
				continue
			}
			sh.mu.Lock()
			of = &offender{}
			sh.insertLocked(key, of)
		}
		of.winStart, of.last, of.cur, of.prev, of.user, of.peak = r.WinStart, r.Last, max(r.Cur, 0), max(r.Prev, 0), r.User, max(r.Peak, 0)
		of.split = r.Split && !key.IsSingleIP()
		for name, c := range r.Counts {
			of.counts[ruleIndex(offense.Rule(name))] += c
		}
		if r.Bans > 0 {
			of.hist = &history{count: r.Bans, last: r.LastBan, dur: r.BanDur}
		}
		if ban_ != nil {
			if of.hist == nil {
				of.hist = &history{count: 1, last: ban_.created.UnixNano(), dur: ban_.expires.Sub(ban_.created)}
			}
			sh.setBan(key, of, ban_)
		}
		sh.mu.Unlock()
	}
	if bad > 0 {
		j.log.Warn("state file records with a bad address skipped", "count", bad, "file", path)
	}
	if full > 0 {
		j.log.Warn("state file records left out: more than max offenders", "count", full, "file", path)
	}
	if len(s.Extra) > 0 && j.opt.StateExtra != nil {
		if err := j.opt.StateExtra.UnmarshalState(s.Extra); err != nil {
			return fmt.Errorf("state %s: extra: %w: %w", path, ban.ErrBadState, err)
		}
	}
	return nil
}
