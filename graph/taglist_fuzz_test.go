package graph

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzValidTag: ValidTag never panics, its errors wrap ErrBadTag, and what
// it accepts obeys every rule of a tag name.
func FuzzValidTag(f *testing.F) {
	for _, s := range []string{"cat", "", " ", ".hidden", "a/b", "a,b", "a\x00b", "tab\t", " lead", "trail ",
		"日本語", "\xff\xfe", "\u00a0nbsp", "zero\u200bwidth", "\u0085next", strings.Repeat("x", 255), strings.Repeat("x", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidTag(s)
		if err != nil {
			if !errors.Is(err, ErrBadTag) {
				t.Fatalf("ValidTag(%q): %v does not wrap ErrBadTag", s, err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("ValidTag(%q): the message is not UTF-8: %q", s, err.Error())
			}
			return
		}
		first, _ := utf8.DecodeRuneInString(s)
		last, _ := utf8.DecodeLastRuneInString(s)
		switch {
		case s == "" || len(s) > MaxTagBytes || !utf8.ValidString(s):
			t.Fatalf("accepted %q: empty, too long or not UTF-8", s)
		case s[0] == '.' || strings.ContainsAny(s, "/,\x00"):
			t.Fatalf("accepted %q: leading dot, slash, comma or NUL", s)
		case strings.IndexFunc(s, unicode.IsControl) >= 0:
			t.Fatalf("accepted %q: a control character", s)
		case unicode.IsSpace(first) || unicode.IsSpace(last):
			t.Fatalf("accepted %q: leading or trailing space", s)
		}
		// A valid tag survives a tag list round trip.
		back, err := ParseTagList(FormatTagList([]string{s}))
		if err != nil || !slices.Equal(back, []string{s}) {
			t.Fatalf("tag %q does not round-trip through a tag list: %q %v", s, back, err)
		}
	})
}

// FuzzParseTagList: ParseTagList never panics; what it returns is a list of
// distinct valid tags that formats and parses back to itself, within the
// xattr size limit.
func FuzzParseTagList(f *testing.F) {
	for _, s := range []string{"", "a", "a,b", " a , b ,, a ", ",,,", "a,.b", "x\x00y", "日本,語", "\xff",
		"a, b c ,d", strings.Repeat("t,", 1000), strings.Repeat("x", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		tags, err := ParseTagList(v)
		if err != nil {
			if !errors.Is(err, ErrBadTag) {
				t.Fatalf("ParseTagList(%q): %v does not wrap ErrBadTag", v, err)
			}
			return
		}
		if len(v) > MaxTagListBytes {
			t.Fatalf("accepted a %d-byte list", len(v))
		}
		seen := map[string]bool{}
		for _, tag := range tags {
			if err := ValidTag(tag); err != nil {
				t.Fatalf("ParseTagList(%q) returned an invalid tag: %v", v, err)
			}
			if seen[tag] {
				t.Fatalf("ParseTagList(%q) returned %q twice", v, tag)
			}
			seen[tag] = true
		}
		out := FormatTagList(tags)
		if len(out) > len(v) {
			t.Fatalf("formatting %q grew it to %q", v, out)
		}
		back, err := ParseTagList(out)
		if err != nil || !slices.Equal(back, tags) {
			t.Fatalf("round trip of %q via %q: %q %v", v, out, back, err)
		}
	})
}
