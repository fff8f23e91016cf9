package graph

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the expression language.
const (
	// MaxExprBytes is the longest expression Parse accepts.
	MaxExprBytes = 4096
	// MaxExprDepth is the deepest nesting of parentheses and "not" Parse accepts.
	MaxExprDepth = 32
	// MaxExprTags is the most tag references one expression may hold.
	MaxExprTags = 256
)

// Expr is a boolean expression over tags. Its nodes are the values Tag, And,
// Or and Not (not pointers to them); String gives a form that Parse reads back
// into the same tree.
type Expr interface {
	String() string
}

// Tag matches files carrying the tag Name.
type Tag struct{ Name string }

// And matches files matching both L and R.
type And struct{ L, R Expr }

// Or matches files matching L, R or both.
type Or struct{ L, R Expr }

// Not matches the tagged files not matching X.
type Not struct{ X Expr }

// Operator precedences for printing: a higher one binds tighter.
const (
	precOr = iota + 1
	precAnd
	precNot
	precAtom
)

func prec(e Expr) int {
	switch e.(type) {
	case Or:
		return precOr
	case And:
		return precAnd
	case Not:
		return precNot
	default:
		return precAtom
	}
}

// wrap prints e, in parentheses when it binds looser than min.
func wrap(e Expr, min int) string {
	if e == nil {
		return "()"
	}
	if prec(e) < min {
		return "(" + e.String() + ")"
	}
	return e.String()
}

// String prints the tag as a bare word when Parse reads it back as this tag,
// as a double-quoted string otherwise.
func (t Tag) String() string {
	if bareWord(t.Name) {
		return t.Name
	}
	return quote(t.Name)
}

// String prints "L and R"; operators are left-associative, so a right operand
// of the same operator gets parentheses.
func (a And) String() string { return wrap(a.L, precAnd) + " and " + wrap(a.R, precNot) }

// String prints "L or R".
func (o Or) String() string { return wrap(o.L, precOr) + " or " + wrap(o.R, precAnd) }

// String prints "not X".
func (n Not) String() string { return "not " + wrap(n.X, precNot) }

func isKeyword(w string) bool {
	return strings.EqualFold(w, "and") || strings.EqualFold(w, "or") || strings.EqualFold(w, "not")
}

// bareWord reports whether s reads back as a single bare tag word.
func bareWord(s string) bool {
	if s == "" || isKeyword(s) || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if isDelim(r) || r == '"' {
			return false
		}
	}
	return true
}

// isDelim reports whether r ends a bare word.
func isDelim(r rune) bool { return r == '(' || r == ')' || unicode.IsSpace(r) }

func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// ParseError is a syntax error in an expression, at byte Offset.
type ParseError struct {
	Offset int
	Msg    string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s at %d", e.Msg, e.Offset) }

// Unwrap makes every ParseError an ErrBadTag (a malformed expression).
func (e *ParseError) Unwrap() error { return ErrBadTag }

type tokKind int

const (
	tokEOF tokKind = iota
	tokLParen
	tokRParen
	tokAnd
	tokOr
	tokNot
	tokTag
)

type token struct {
	kind tokKind
	pos  int
	text string // the source text, for messages
	name string // the tag name of a tokTag
}

func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokTag:
		return "tag " + quote(t.name)
	default:
		return quote(t.text)
	}
}

type parser struct {
	src   string
	pos   int
	tok   token
	depth int
	tags  int
}

// Parse reads a boolean tag expression: tags combined with "and", "or", "not"
// (any case) and parentheses; "not" binds tighter than "and", "and" tighter
// than "or", and both are left-associative. A tag is a bare word (anything up
// to whitespace, a parenthesis or a double quote) or a double-quoted string in
// which \" and \\ stand for " and \, which can name tags such as "and" or
// "to do". Every tag must pass ValidTag. Errors are *ParseError.
func Parse(s string) (Expr, error) {
	if len(s) > MaxExprBytes {
		return nil, &ParseError{Offset: MaxExprBytes, Msg: fmt.Sprintf("expression longer than %d bytes", MaxExprBytes)}
	}
	p := &parser{src: s}
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind == tokEOF {
		return nil, &ParseError{Offset: p.tok.pos, Msg: "empty expression"}
	}
	e, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.unexpected(`"and", "or" or the end`)
	}
	return e, nil
}

func (p *parser) errorf(pos int, format string, args ...any) error {
	return &ParseError{Offset: pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) unexpected(want string) error {
	if p.tok.kind == tokEOF {
		return p.errorf(p.tok.pos, "unexpected end of expression, expected %s", want)
	}
	return p.errorf(p.tok.pos, "unexpected %s, expected %s", p.tok.describe(), want)
}

// next reads the next token into p.tok.
func (p *parser) next() error {
	s := p.src
	for p.pos < len(s) {
		r, n := utf8.DecodeRuneInString(s[p.pos:])
		if r == utf8.RuneError && n <= 1 {
			return p.errorf(p.pos, "invalid UTF-8")
		}
		if !unicode.IsSpace(r) {
			break
		}
		p.pos += n
	}
	start := p.pos
	if start == len(s) {
		p.tok = token{kind: tokEOF, pos: start}
		return nil
	}
	switch s[start] {
	case '(':
		p.pos++
		p.tok = token{kind: tokLParen, pos: start, text: "("}
		return nil
	case ')':
		p.pos++
		p.tok = token{kind: tokRParen, pos: start, text: ")"}
		return nil
	case '"':
		return p.quoted()
	}
	for p.pos < len(s) {
		r, n := utf8.DecodeRuneInString(s[p.pos:])
		if r == utf8.RuneError && n <= 1 {
			return p.errorf(p.pos, "invalid UTF-8")
		}
		if isDelim(r) || r == '"' {
			break
		}
		p.pos += n
	}
	w := s[start:p.pos]
	switch {
	case strings.EqualFold(w, "and"):
		p.tok = token{kind: tokAnd, pos: start, text: w}
	case strings.EqualFold(w, "or"):
		p.tok = token{kind: tokOr, pos: start, text: w}
	case strings.EqualFold(w, "not"):
		p.tok = token{kind: tokNot, pos: start, text: w}
	default:
		if err := ValidTag(w); err != nil {
			return p.errorf(start, "%v", err)
		}
		p.tok = token{kind: tokTag, pos: start, text: w, name: w}
	}
	return nil
}

// quoted reads a double-quoted tag name starting at p.pos.
func (p *parser) quoted() error {
	s := p.src
	start := p.pos
	var b strings.Builder
	i := start + 1
	for {
		if i >= len(s) {
			return p.errorf(start, "unterminated string")
		}
		c := s[i]
		switch c {
		case '"':
			p.pos = i + 1
			name := b.String()
			if err := ValidTag(name); err != nil {
				return p.errorf(start, "%v", err)
			}
			p.tok = token{kind: tokTag, pos: start, text: s[start:p.pos], name: name}
			return nil
		case '\\':
			if i+1 >= len(s) {
				return p.errorf(start, "unterminated string")
			}
			if e := s[i+1]; e != '"' && e != '\\' {
				r, _ := utf8.DecodeRuneInString(s[i+1:])
				return p.errorf(i, `invalid escape "\%c" (only \" and \\)`, r)
			}
			b.WriteByte(s[i+1])
			i += 2
		default:
			b.WriteByte(c)
			i++
		}
	}
}

func (p *parser) parseOr() (Expr, error) {
	l, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tokOr {
		if err := p.next(); err != nil {
			return nil, err
		}
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l = Or{L: l, R: r}
	}
	return l, nil
}

func (p *parser) parseAnd() (Expr, error) {
	l, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tokAnd {
		if err := p.next(); err != nil {
			return nil, err
		}
		r, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		l = And{L: l, R: r}
	}
	return l, nil
}

// enter counts one level of nesting (a parenthesis or a "not").
func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxExprDepth {
		return p.errorf(p.tok.pos, "expression nested deeper than %d", MaxExprDepth)
	}
	return nil
}

func (p *parser) parseNot() (Expr, error) {
	if p.tok.kind != tokNot {
		return p.parsePrimary()
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	if err := p.next(); err != nil {
		return nil, err
	}
	x, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	p.depth--
	return Not{X: x}, nil
}

func (p *parser) parsePrimary() (Expr, error) {
	switch p.tok.kind {
	case tokTag:
		p.tags++
		if p.tags > MaxExprTags {
			return nil, p.errorf(p.tok.pos, "more than %d tags in expression", MaxExprTags)
		}
		e := Tag{Name: p.tok.name}
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind == tokTag || p.tok.kind == tokLParen || p.tok.kind == tokNot {
			return nil, p.unexpected(`"and", "or", ")" or the end`)
		}
		return e, nil
	case tokLParen:
		open := p.tok.pos
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind == tokRParen {
			return nil, p.errorf(p.tok.pos, `unexpected ")", expected a tag, "not" or "("`)
		}
		e, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRParen {
			if p.tok.kind == tokEOF {
				return nil, p.errorf(p.tok.pos, `missing ")" for "(" at %d`, open)
			}
			return nil, p.unexpected(`"and", "or" or ")"`)
		}
		p.depth--
		if err := p.next(); err != nil {
			return nil, err
		}
		return e, nil
	default:
		return nil, p.unexpected(`a tag, "not" or "("`)
	}
}

// Eval reports whether a file whose tags are given by has matches e.
func Eval(e Expr, has func(tag string) bool) bool {
	switch x := e.(type) {
	case Tag:
		return has(x.Name)
	case And:
		return Eval(x.L, has) && Eval(x.R, has)
	case Or:
		return Eval(x.L, has) || Eval(x.R, has)
	case Not:
		return !Eval(x.X, has)
	default:
		return false
	}
}

// TagsIn lists the distinct tags e refers to, sorted.
func TagsIn(e Expr) []string {
	seen := map[string]bool{}
	var walk func(Expr)
	walk = func(e Expr) {
		switch x := e.(type) {
		case Tag:
			seen[x.Name] = true
		case And:
			walk(x.L)
			walk(x.R)
		case Or:
			walk(x.L)
			walk(x.R)
		case Not:
			walk(x.X)
		}
	}
	walk(e)
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// MaxTagBytes is the longest tag name: tags are directory names under .tags.
const MaxTagBytes = 255

// MaxTagListBytes is the largest user.xdg.tags value: JuiceFS refuses xattr
// values longer than 65536 bytes (pkg/vfs xattrMaxSize in v1.4.1, E2BIG).
const MaxTagListBytes = 65536

// TagsXattr is the extended attribute holding a file's tags.
const TagsXattr = "user.xdg.tags"

// ValidTag checks that name can be a tag: a non-empty name of at most 255
// bytes of valid UTF-8, with no '/', ',', NUL or other control character, not
// starting with '.', and with no leading or trailing whitespace. Errors wrap
// ErrBadTag and name the broken rule.
func ValidTag(name string) error {
	bad := func(rule string) error {
		return fmt.Errorf("%w %s: %s", ErrBadTag, quoteShort(name), rule)
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadTag)
	case len(name) > MaxTagBytes:
		return bad(fmt.Sprintf("longer than %d bytes", MaxTagBytes))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case strings.TrimFunc(name, unicode.IsSpace) == "":
		return bad("only whitespace")
	case name[0] == '.':
		return bad(`starts with "."`)
	}
	for _, r := range name {
		switch {
		case r == 0:
			return bad("contains NUL")
		case r == '/':
			return bad(`contains "/"`)
		case r == ',':
			return bad(`contains ","`)
		case unicode.IsControl(r):
			return bad(fmt.Sprintf("contains control character %U", r))
		}
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return bad("leading or trailing whitespace")
	}
	return nil
}

// quoteShort quotes a name for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q...", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// ParseTagList reads a user.xdg.tags value: tags separated by commas, each
// trimmed of whitespace; empty entries are skipped and repeated tags kept once,
// in first-seen order. Every tag must pass ValidTag.
func ParseTagList(v []byte) ([]string, error) {
	if len(v) > MaxTagListBytes {
		return nil, fmt.Errorf("%w: tag list is %d bytes, longer than %d", ErrBadTag, len(v), MaxTagListBytes)
	}
	var tags []string
	var seen map[string]bool
	for _, part := range strings.Split(string(v), ",") {
		t := strings.TrimFunc(part, unicode.IsSpace)
		if t == "" {
			continue
		}
		if err := ValidTag(t); err != nil {
			return nil, err
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if seen[t] {
			continue
		}
		seen[t] = true
		tags = append(tags, t)
	}
	return tags, nil
}

// FormatTagList writes tags as a user.xdg.tags value (comma-separated).
func FormatTagList(tags []string) []byte {
	return []byte(strings.Join(tags, ","))
}
