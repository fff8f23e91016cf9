package graph

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func tg(n string) Tag    { return Tag{Name: n} }
func and(l, r Expr) Expr { return And{L: l, R: r} }
func or(l, r Expr) Expr  { return Or{L: l, R: r} }
func not(x Expr) Expr    { return Not{X: x} }

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Expr
		str  string // String() of the result; "" means in
	}{
		{"a", tg("a"), ""},
		{"  a  ", tg("a"), "a"},
		{"a and b", and(tg("a"), tg("b")), ""},
		{"a AND b Or c", or(and(tg("a"), tg("b")), tg("c")), "a and b or c"},
		{"a or b and c", or(tg("a"), and(tg("b"), tg("c"))), ""},
		{"not a and b", and(not(tg("a")), tg("b")), ""},
		{"not (a and b)", not(and(tg("a"), tg("b"))), ""},
		{"NOT not a", not(not(tg("a"))), "not not a"},
		{"a and b and c", and(and(tg("a"), tg("b")), tg("c")), ""},
		{"a and (b and c)", and(tg("a"), and(tg("b"), tg("c"))), ""},
		{"a or (b or c)", or(tg("a"), or(tg("b"), tg("c"))), ""},
		{"(a or b) and c", and(or(tg("a"), tg("b")), tg("c")), ""},
		{"((a))", tg("a"), "a"},
		{"(a)and(b)", and(tg("a"), tg("b")), "a and b"},
		{`"and" or "not"`, or(tg("and"), tg("not")), ""},
		{`"to do" and done`, and(tg("to do"), tg("done")), ""},
		{`"say \"hi\"" or "back\\slash"`, or(tg(`say "hi"`), tg(`back\slash`)), `"say \"hi\"" or back\slash`},
		{`back\slash`, tg(`back\slash`), ""},
		{"ünïcödé and 日本", and(tg("ünïcödé"), tg("日本")), ""},
		{"a\tand\nb", and(tg("a"), tg("b")), "a and b"},
		{"andy or order", or(tg("andy"), tg("order")), ""},
		{"a-b+c:d@e", tg("a-b+c:d@e"), ""},
		{`"a(b)"`, tg("a(b)"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			want := tt.str
			if want == "" {
				want = tt.in
			}
			if s := got.String(); s != want {
				t.Errorf("String() = %q, want %q", s, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	deep := strings.Repeat("(", MaxExprDepth+1) + "a" + strings.Repeat(")", MaxExprDepth+1)
	okDeep := strings.Repeat("(", MaxExprDepth) + "a" + strings.Repeat(")", MaxExprDepth)
	nots := strings.Repeat("not ", MaxExprDepth+1) + "a"
	many := strings.TrimSuffix(strings.Repeat("t or ", MaxExprTags+1), " or ")
	tests := []struct {
		in     string
		msg    string // substring of the error
		offset int
	}{
		{"", "empty expression", 0},
		{"   ", "empty expression", 3},
		{"a and", "unexpected end of expression", 5},
		{"and a", `unexpected "and"`, 0},
		{"a b", `unexpected tag "b"`, 2},
		{"a (b)", `unexpected "("`, 2},
		{"a not b", `unexpected "not"`, 2},
		{"(a or b) or c)", `unexpected ")"`, 13},
		{"(a or b", `missing ")" for "(" at 0`, 7},
		{"()", `unexpected ")"`, 1},
		{"a or )", `unexpected ")"`, 5},
		{`"abc`, "unterminated string", 0},
		{`"abc\`, "unterminated string", 0},
		{`a or "x\n"`, `invalid escape "\n"`, 7},
		{`""`, "invalid tag: empty", 0},
		{`a or b/c`, `contains "/"`, 5},
		{`a or .hidden`, `starts with "."`, 5},
		{`x,y`, `contains ","`, 0},
		{`" a"`, "leading or trailing whitespace", 0},
		{"a or \xff", "invalid UTF-8", 5},
		{"a\x01", "control character", 0},
		{deep, "expression nested deeper than 32", MaxExprDepth},
		{nots, "expression nested deeper than 32", 4 * MaxExprDepth},
		{many, "more than 256 tags in expression", 5 * MaxExprTags},
		{strings.Repeat("a", MaxExprBytes+1), "expression longer than 4096 bytes", MaxExprBytes},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tt.in)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if !errors.Is(err, ErrBadTag) {
				t.Errorf("error %v does not wrap ErrBadTag", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if pe.Offset != tt.offset {
				t.Errorf("error %q at offset %d, want %d", err, pe.Offset, tt.offset)
			}
		})
	}
	if _, err := Parse(okDeep); err != nil {
		t.Errorf("nesting of exactly %d: %v", MaxExprDepth, err)
	}
	if _, err := Parse(strings.TrimSuffix(strings.Repeat("t or ", MaxExprTags), " or ")); err != nil {
		t.Errorf("exactly %d tags: %v", MaxExprTags, err)
	}
	if _, err := Parse(`unexpected ")"`); err == nil || err.Error() != `unexpected tag ")", expected "and", "or", ")" or the end at 11` {
		t.Errorf("message: %v", err)
	}
}

func TestEvalAndTagsIn(t *testing.T) {
	e, err := Parse(`(a or b) and not c or "d e"`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := TagsIn(e), []string{"a", "b", "c", "d e"}; !reflect.DeepEqual(got, want) {
		t.Errorf("TagsIn = %q, want %q", got, want)
	}
	tests := []struct {
		tags []string
		want bool
	}{
		{nil, false},
		{[]string{"a"}, true},
		{[]string{"b"}, true},
		{[]string{"a", "c"}, false},
		{[]string{"c", "d e"}, true},
		{[]string{"d"}, false},
	}
	for _, tt := range tests {
		has := func(tag string) bool {
			for _, x := range tt.tags {
				if x == tag {
					return true
				}
			}
			return false
		}
		if got := Eval(e, has); got != tt.want {
			t.Errorf("Eval(%v, %q) = %v, want %v", e, tt.tags, got, tt.want)
		}
	}
	if TagsIn(and(tg("x"), tg("x")))[0] != "x" || len(TagsIn(and(tg("x"), tg("x")))) != 1 {
		t.Error("TagsIn does not dedupe")
	}
}

func TestValidTag(t *testing.T) {
	tests := []struct {
		name string
		rule string // "" when valid
	}{
		{"music", ""},
		{"to do", ""},
		{"日本語", ""},
		{"a.b", ""},
		{"x" + strings.Repeat("y", 254), ""},
		{"", "empty"},
		{strings.Repeat("y", 256), "longer than 255 bytes"},
		{"a/b", `contains "/"`},
		{"a,b", `contains ","`},
		{"a\x00b", "contains NUL"},
		{"a\tb", "control character U+0009"},
		{"a\u0085b", "control character U+0085"},
		{".hidden", `starts with "."`},
		{"..", `starts with "."`},
		{"   ", "only whitespace"},
		{"\u00a0", "only whitespace"},
		{" a", "leading or trailing whitespace"},
		{"a ", "leading or trailing whitespace"},
		{"a\u3000", "leading or trailing whitespace"},
		{"\xffab", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := ValidTag(tt.name)
		switch {
		case tt.rule == "" && err != nil:
			t.Errorf("ValidTag(%q) = %v", tt.name, err)
		case tt.rule != "" && err == nil:
			t.Errorf("ValidTag(%q) accepted", tt.name)
		case tt.rule != "" && (!strings.Contains(err.Error(), tt.rule) || !errors.Is(err, ErrBadTag)):
			t.Errorf("ValidTag(%q) = %v, want %q wrapping ErrBadTag", tt.name, err, tt.rule)
		}
	}
}

func TestParseTagList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"a", []string{"a"}, ""},
		{"b,a", []string{"b", "a"}, ""},
		{" b , a ,, b,\n", []string{"b", "a"}, ""},
		{",,,", nil, ""},
		{"to do, done", []string{"to do", "done"}, ""},
		{"a,.b", nil, `starts with "."`},
		{"a,b/c", nil, `contains "/"`},
		{strings.Repeat("a,", MaxTagListBytes/2+1), nil, "longer than 65536"},
	}
	for _, tt := range tests {
		got, err := ParseTagList([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrBadTag) {
				t.Errorf("ParseTagList(%.20q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseTagList(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if got := string(FormatTagList([]string{"b", "to do", "a"})); got != "b,to do,a" {
		t.Errorf("FormatTagList = %q", got)
	}
	if got := FormatTagList(nil); len(got) != 0 {
		t.Errorf("FormatTagList(nil) = %q", got)
	}
	back, err := ParseTagList(FormatTagList([]string{"x", "y z"}))
	if err != nil || !reflect.DeepEqual(back, []string{"x", "y z"}) {
		t.Errorf("round trip: %q, %v", back, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a", "a and b or not c", `"and" or "x \" y"`, "((a or b) and (c or not d))",
		"not not not x", "a b", ")", `"\\"`, "ünï and 日本",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q): error %v is not a *ParseError", s, err)
			}
			if pe.Offset < 0 || pe.Offset > len(s) {
				t.Fatalf("Parse(%q): offset %d outside the input", s, pe.Offset)
			}
			return
		}
		tags := TagsIn(e)
		if len(tags) == 0 || len(tags) > MaxExprTags {
			t.Fatalf("Parse(%q): %d tags", s, len(tags))
		}
		for _, tag := range tags {
			if err := ValidTag(tag); err != nil {
				t.Fatalf("Parse(%q) accepted tag %q: %v", s, tag, err)
			}
		}
		out := e.String()
		if !utf8.ValidString(out) {
			t.Fatalf("String() of %q is not UTF-8", s)
		}
		// Printing never nests deeper than the input; it may grow a little
		// longer (spaces around operators, quotes).
		if len(out) <= MaxExprBytes {
			back, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(%q).String() = %q does not parse: %v", s, out, err)
			}
			if !reflect.DeepEqual(back, e) {
				t.Fatalf("round trip of %q via %q: %#v != %#v", s, out, back, e)
			}
		}
		// Eval agrees with itself on the re-printed form and handles every tag.
		has := func(tag string) bool { return len(tag)%2 == 0 }
		_ = Eval(e, has)
	})
}
