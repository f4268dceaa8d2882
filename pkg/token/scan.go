package token

import (
	"bytes"
	"hash/crc32"
)

// Candidate is a string found by Scan: the prefix, a body and a checksum
// that holds. It is a token of the codec's format, not necessarily a
// genuine one: only Verify, with the keys, can tell (the checksum is not a
// secret, anyone can make one hold).
type Candidate struct {
	// Offset is the index in the scanned text of the candidate's first byte.
	Offset int
	// Token is the candidate string.
	Token string
}

// maxFailedStarts bounds the prefix occurrences Scan tries, without a
// match, inside one run of token characters: text made of the prefix
// repeated cannot make it check every suffix.
const maxFailedStarts = 4

// Scan finds the DefaultPrefix tokens in text: see Codec.Scan.
func Scan(text []byte) []Candidate {
	var c *Codec
	return c.Scan(text)
}

// Scan finds candidate tokens of the codec's prefix in text, offline and
// without keys, as a secret scanner does, and keeps only those whose
// checksum holds. Candidates come in the order they appear and do not
// overlap.
//
// A token is made of the prefix followed by base64url characters
// (A-Z a-z 0-9 - _), whose last six are the checksum. Scan looks for the
// prefix anywhere (also right after letters, as in MY_TOKEN=sigil_pat_…),
// then for the shortest string of token characters after it, no longer
// than MaxLen, whose last six characters are the checksum of what precedes
// them: so a token followed at once by more token characters (a trailing
// "_" or "-", or another token) is found too. A shorter look-alike inside
// a genuine token would need a CRC32 to hold by chance.
//
// The work is linear in the length of text: one running CRC per prefix
// occurrence, which stops at the first checksum that holds (the search
// goes on after it) or at the end of the run of token characters, and
// after maxFailedStarts fruitless occurrences in one run the rest of that
// run is skipped. So each byte is looked at no more than
// maxFailedStarts+2 times.
func (c *Codec) Scan(text []byte) []Candidate {
	prefix := []byte(c.Prefix())
	var out []Candidate
	failed, runEnd := 0, -1
	for i := 0; i < len(text); {
		j := bytes.Index(text[i:], prefix)
		if j < 0 {
			break
		}
		start := i + j
		if start >= runEnd {
			// A new run of token characters: reset the budget.
			failed, runEnd = 0, tokenRunEnd(text, start)
		}
		if end, ok := firstFrame(len(prefix), text[start:runEnd]); ok {
			out = append(out, Candidate{Offset: start, Token: string(text[start : start+end])})
			i = start + end
			continue
		}
		failed++
		if failed >= maxFailedStarts {
			i = runEnd
			continue
		}
		i = start + 1
	}
	return out
}

// tokenRunEnd returns the end of the run of prefix-or-token characters
// that starts at start.
func tokenRunEnd(text []byte, start int) int {
	end := start
	for end < len(text) && isTokenChar(text[end]) {
		end++
	}
	return end
}

// isTokenChar reports whether b may appear in a token: a prefix character
// (a-z, 0-9, '_'), a base64url character or a base62 checksum character.
func isTokenChar(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_'
}

// ieeeTable drives the running CRC of firstFrame, one byte at a time
// without a call per byte.
var ieeeTable = crc32.MakeTable(crc32.IEEE)

// firstFrame returns the length of the shortest prefix of run (which
// starts with the codec's prefix, prefixLen bytes long) that is a token
// frame: at least the shortest token, at most MaxLen, ending with the
// checksum of what precedes it. It runs one CRC over run, checking each
// position where a checksum could start, and stops at the first that
// holds.
func firstFrame(prefixLen int, run []byte) (int, bool) {
	limit := min(len(run), MaxLen)
	first := prefixLen + minBodyLen // the shortest signed part
	if first+checksumLen > limit {
		return 0, false
	}
	// state is the CRC register: the checksum of run[:n] is ^state.
	state := ^crc32.ChecksumIEEE(run[:first])
	for n := first; n+checksumLen <= limit; n++ {
		if sum, ok := parseChecksum(run[n : n+checksumLen]); ok && sum == ^state {
			return n + checksumLen, true
		}
		state = ieeeTable[byte(state)^run[n]] ^ state>>8
	}
	return 0, false
}
