package audiohook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file holds the part of RFC 8941 (Structured Field Values for HTTP)
// that HTTP message signatures need: parsing the Signature-Input and
// Signature dictionaries and serializing an inner list back, in the
// canonical form the signature base requires.

// sfKind is the type of a bare item.
type sfKind uint8

const (
	sfInteger sfKind = iota + 1
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBoolean
)

// sfBare is a bare item. Decimals are kept as their text: signatures never
// use them, but a dictionary holding one must still parse.
type sfBare struct {
	kind  sfKind
	i     int64
	s     string // string, token, decimal text
	b     []byte
	truth bool
}

type sfParam struct {
	key   string
	value sfBare
}

// sfItem is an item, or an inner list when list is set.
type sfItem struct {
	value  sfBare
	list   []sfItem
	inner  bool
	params []sfParam
}

type sfMember struct {
	key  string
	item sfItem
}

// maxSFLength bounds a header value the parser accepts: signature headers
// are a few hundred bytes.
const maxSFLength = 8192

// parseSFDictionary parses a dictionary field value (RFC 8941 §4.2.2).
func parseSFDictionary(s string) ([]sfMember, error) {
	if len(s) > maxSFLength {
		return nil, fmt.Errorf("longer than %d bytes", maxSFLength)
	}
	p := &sfParser{s: s}
	p.skip(' ')
	var out []sfMember
	seen := map[string]int{}
	for !p.done() {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		var it sfItem
		if p.peek() == '=' {
			p.i++
			if it, err = p.itemOrInnerList(); err != nil {
				return nil, err
			}
		} else {
			it.value = sfBare{kind: sfBoolean, truth: true}
			if it.params, err = p.params(); err != nil {
				return nil, err
			}
		}
		// A repeated key overrides the earlier one, keeping its place.
		if i, dup := seen[key]; dup {
			out[i].item = it
		} else {
			seen[key] = len(out)
			out = append(out, sfMember{key, it})
		}
		p.skipOWS()
		if p.done() {
			break
		}
		if p.peek() != ',' {
			return nil, p.errorf("expected ',' after a dictionary member")
		}
		p.i++
		p.skipOWS()
		if p.done() {
			return nil, p.errorf("trailing ','")
		}
	}
	return out, nil
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skip(c byte) {
	for !p.done() && p.s[p.i] == c {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) errorf(format string, args ...any) error {
	return fmt.Errorf("structured field: "+format+" at offset %d", append(args, p.i)...)
}

func isLcalpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool   { return isLcalpha(c) || (c >= 'A' && c <= 'Z') }

func isTchar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *sfParser) key() (string, error) {
	c := p.peek()
	if !isLcalpha(c) && c != '*' {
		return "", p.errorf("a key must start with a lowercase letter or '*'")
	}
	start := p.i
	for !p.done() {
		c := p.s[p.i]
		if !isLcalpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) itemOrInnerList() (sfItem, error) {
	if p.peek() == '(' {
		return p.innerList()
	}
	v, err := p.bare()
	if err != nil {
		return sfItem{}, err
	}
	ps, err := p.params()
	return sfItem{value: v, params: ps}, err
}

func (p *sfParser) innerList() (sfItem, error) {
	p.i++ // (
	it := sfItem{inner: true}
	for !p.done() {
		p.skip(' ')
		if p.peek() == ')' {
			p.i++
			var err error
			it.params, err = p.params()
			return it, err
		}
		v, err := p.bare()
		if err != nil {
			return sfItem{}, err
		}
		ps, err := p.params()
		if err != nil {
			return sfItem{}, err
		}
		it.list = append(it.list, sfItem{value: v, params: ps})
		if c := p.peek(); c != ' ' && c != ')' {
			return sfItem{}, p.errorf("expected ' ' or ')' in an inner list")
		}
	}
	return sfItem{}, p.errorf("unterminated inner list")
}

func (p *sfParser) params() ([]sfParam, error) {
	var out []sfParam
	for p.peek() == ';' {
		p.i++
		p.skip(' ')
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		v := sfBare{kind: sfBoolean, truth: true}
		if p.peek() == '=' {
			p.i++
			if v, err = p.bare(); err != nil {
				return nil, err
			}
		}
		replaced := false
		for i := range out {
			if out[i].key == key {
				out[i].value, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, sfParam{key, v})
		}
	}
	return out, nil
}

func (p *sfParser) bare() (sfBare, error) {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == ':':
		return p.bytes()
	case c == '?':
		p.i++
		switch p.peek() {
		case '0', '1':
			v := sfBare{kind: sfBoolean, truth: p.peek() == '1'}
			p.i++
			return v, nil
		}
		return sfBare{}, p.errorf("a boolean must be ?0 or ?1")
	case isAlpha(c) || c == '*':
		start := p.i
		for !p.done() && (isTchar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		return sfBare{kind: sfToken, s: p.s[start:p.i]}, nil
	case p.done():
		return sfBare{}, p.errorf("missing item")
	}
	return sfBare{}, p.errorf("unexpected character %q", c)
}

func (p *sfParser) number() (sfBare, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits, dot := 0, -1
	for !p.done() {
		c := p.s[p.i]
		if isDigit(c) {
			digits++
			p.i++
			continue
		}
		if c == '.' && dot < 0 {
			dot = digits
			p.i++
			continue
		}
		break
	}
	text := p.s[start:p.i]
	switch {
	case digits == 0:
		return sfBare{}, p.errorf("a number needs digits")
	case dot < 0:
		if digits > 15 {
			return sfBare{}, p.errorf("an integer has at most 15 digits")
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return sfBare{}, p.errorf("bad integer")
		}
		return sfBare{kind: sfInteger, i: n}, nil
	default:
		if dot > 12 || digits-dot < 1 || digits-dot > 3 {
			return sfBare{}, p.errorf("bad decimal")
		}
		return sfBare{kind: sfDecimal, s: text}, nil
	}
}

func (p *sfParser) str() (sfBare, error) {
	p.i++ // "
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.done() {
				return sfBare{}, p.errorf("unterminated escape")
			}
			e := p.s[p.i]
			if e != '"' && e != '\\' {
				return sfBare{}, p.errorf("bad escape")
			}
			b.WriteByte(e)
			p.i++
		case c == '"':
			return sfBare{kind: sfString, s: b.String()}, nil
		case c < 0x20 || c > 0x7e:
			return sfBare{}, p.errorf("a string holds printable ASCII only")
		default:
			b.WriteByte(c)
		}
	}
	return sfBare{}, p.errorf("unterminated string")
}

func (p *sfParser) bytes() (sfBare, error) {
	p.i++ // :
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return sfBare{}, p.errorf("unterminated byte sequence")
	}
	text := p.s[p.i : p.i+end]
	p.i += end + 1
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return sfBare{}, errors.New("structured field: byte sequence is not base64")
	}
	return sfBare{kind: sfBytes, b: b}, nil
}

// serialize writes an item or inner list in canonical form (RFC 8941 §4.1).
func (it sfItem) serialize(b *strings.Builder) {
	if it.inner {
		b.WriteByte('(')
		for i, x := range it.list {
			if i > 0 {
				b.WriteByte(' ')
			}
			x.serialize(b)
		}
		b.WriteByte(')')
	} else {
		it.value.serialize(b)
	}
	it.serializeParams(b)
}

// serializeParams writes the item's parameters.
func (it sfItem) serializeParams(b *strings.Builder) {
	for _, p := range it.params {
		b.WriteByte(';')
		b.WriteString(p.key)
		if p.value.kind == sfBoolean && p.value.truth {
			continue
		}
		b.WriteByte('=')
		p.value.serialize(b)
	}
}

func (v sfBare) serialize(b *strings.Builder) {
	switch v.kind {
	case sfInteger:
		b.WriteString(strconv.FormatInt(v.i, 10))
	case sfDecimal, sfToken:
		b.WriteString(v.s)
	case sfString:
		b.WriteByte('"')
		for i := 0; i < len(v.s); i++ {
			if c := v.s[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v.s[i])
		}
		b.WriteByte('"')
	case sfBytes:
		b.WriteByte(':')
		b.WriteString(base64.StdEncoding.EncodeToString(v.b))
		b.WriteByte(':')
	case sfBoolean:
		if v.truth {
			b.WriteString("?1")
		} else {
			b.WriteString("?0")
		}
	}
}
