package jsonspan

// Member is one "key": value pair of an object, as spans of the document.
type Member struct {
	Key Span // the key with its quotes, escapes as written
	Val Span
}

// RawKey returns the key of m between its quotes, escapes as written.
func (m Member) RawKey(b []byte) []byte { return b[m.Key.Start+1 : m.Key.End-1] }

// Object walks the members of one object:
//
//	obj, err := jsonspan.NewObject(b, i, jsonspan.Strict)
//	for obj.Next() { use(obj.Key, obj.Val) }
//	if obj.Err != nil { … }
//
// In Strict mode every key and value is validated; in Loose mode keys and values are only delimited
// (StringEnd, ValueEnd), the colons and commas between them still checked.
type Object struct {
	Member          // the current member
	KeyEscaped bool // Strict: the current key holds an escape sequence; Loose: always false
	// Close is the index of the closing brace once Next has returned false with Err nil, else -1.
	Close int
	Err   error

	b    []byte
	i    int // after the last member
	n    int // members seen so far
	mode Mode
}

// NewObject starts a walk of the object at or after b[i] (after white space).
func NewObject(b []byte, i int, mode Mode) (Object, error) {
	i = SkipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		err := walkErr(b, i, mode, "'{'")
		return Object{Close: -1, Err: err}, err
	}
	return Object{b: b, i: i + 1, Close: -1, mode: mode}, nil
}

// walkErr is the error of a walk that does not find want at b[i]: a description in Strict mode, the
// allocation-free errLoose in Loose mode.
func walkErr(b []byte, i int, mode Mode, want string) error {
	if mode == Strict {
		return SyntaxError(b, i, want)
	}
	return errLoose
}

// Next advances to the next member and reports whether there is one.
func (o *Object) Next() bool {
	if o.Err != nil || o.Close >= 0 {
		return false
	}
	b := o.b
	i := SkipSpace(b, o.i)
	if i < len(b) && b[i] == '}' {
		o.Close = i
		return false
	}
	if o.n > 0 {
		if i >= len(b) || b[i] != ',' {
			return o.fail(i, "',' or '}'")
		}
		i = SkipSpace(b, i+1)
	}
	keyStart := i
	if o.mode == Strict {
		var err error
		if i, o.KeyEscaped, err = ScanString(b, i); err != nil {
			o.Err = err
			return false
		}
	} else if i = StringEnd(b, i); i < 0 {
		o.Err = errLoose
		return false
	}
	o.Key = Span{keyStart, i}
	i = SkipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return o.fail(i, "':'")
	}
	if o.mode == Strict {
		if o.Val, o.Err = ScanValue(b, i+1); o.Err != nil {
			return false
		}
	} else {
		start := SkipSpace(b, i+1)
		end := ValueEnd(b, start)
		if end < 0 {
			o.Err = errLoose
			return false
		}
		o.Val = Span{start, end}
	}
	o.i = o.Val.End
	o.n++
	return true
}

// fail ends the walk with an error at b[i] and returns false.
func (o *Object) fail(i int, want string) bool {
	o.Err = walkErr(o.b, i, o.mode, want)
	return false
}

// KeyIs reports whether the current key is name. In Strict mode an escaped key is decoded first; in
// Loose mode the key is compared as written.
func (o *Object) KeyIs(name string) bool {
	raw := o.RawKey(o.b)
	if !o.KeyEscaped {
		return string(raw) == name
	}
	k, err := Unquote(o.Key.In(o.b))
	return err == nil && k == name
}

// FindMember returns the first member named name, compared as written, of the object at or after b[i],
// walked in Loose mode.
func FindMember(b []byte, i int, name string) (Member, bool) {
	obj, _ := NewObject(b, i, Loose)
	for obj.Next() {
		if string(obj.RawKey(b)) == name {
			return obj.Member, true
		}
	}
	return Member{}, false
}

// Array walks the elements of one array, as Object walks members:
//
//	arr, err := jsonspan.NewArray(b, i, jsonspan.Strict)
//	for arr.Next() { use(arr.Val) }
//	if arr.Err != nil { … }
type Array struct {
	Val Span // the current element
	// Close is the index of the closing bracket once Next has returned false with Err nil, else -1.
	Close int
	Err   error

	b    []byte
	i    int
	n    int
	mode Mode
}

// NewArray starts a walk of the array at or after b[i] (after white space).
func NewArray(b []byte, i int, mode Mode) (Array, error) {
	i = SkipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		err := walkErr(b, i, mode, "'['")
		return Array{Close: -1, Err: err}, err
	}
	return Array{b: b, i: i + 1, Close: -1, mode: mode}, nil
}

// Next advances to the next element and reports whether there is one.
func (a *Array) Next() bool {
	if a.Err != nil || a.Close >= 0 {
		return false
	}
	b := a.b
	i := SkipSpace(b, a.i)
	if i < len(b) && b[i] == ']' {
		a.Close = i
		return false
	}
	if a.n > 0 {
		if i >= len(b) || b[i] != ',' {
			a.Err = walkErr(b, i, a.mode, "',' or ']'")
			return false
		}
		i++
	}
	if a.mode == Strict {
		if a.Val, a.Err = ScanValue(b, i); a.Err != nil {
			return false
		}
	} else {
		start := SkipSpace(b, i)
		end := ValueEnd(b, start)
		if end < 0 {
			a.Err = errLoose
			return false
		}
		a.Val = Span{start, end}
	}
	a.i = a.Val.End
	a.n++
	return true
}

// ObjectElems walks, in Strict mode, the elements of an array that are objects, giving an Object
// positioned before each one's first member:
//
//	elems, err := jsonspan.NewObjectElems(b, i)
//	for elems.Next() { for elems.Obj.Next() { … } }
//	if elems.Err != nil { … }
//
// Whatever the caller leaves of an object is walked by the following Next, so every element is read
// once, not once to find its end and again to look inside. Other elements are validated and skipped.
type ObjectElems struct {
	Obj Object // the current element
	Err error

	b     []byte
	i     int // after the last element
	n     int // elements seen so far
	inObj bool
	done  bool
}

// NewObjectElems starts a walk of the array at or after b[i] (after white space).
func NewObjectElems(b []byte, i int) (ObjectElems, error) {
	i = SkipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		err := SyntaxError(b, i, "'['")
		return ObjectElems{Err: err}, err
	}
	return ObjectElems{b: b, i: i + 1}, nil
}

// Next advances to the next object element and reports whether there is one.
func (s *ObjectElems) Next() bool {
	b := s.b
	for s.Err == nil && !s.done {
		if s.inObj {
			for s.Obj.Next() {
			}
			if s.Err = s.Obj.Err; s.Err != nil {
				return false
			}
			s.i, s.inObj = s.Obj.Close+1, false
		}
		i := SkipSpace(b, s.i)
		if i < len(b) && b[i] == ']' {
			s.done = true
			return false
		}
		if s.n > 0 {
			if i >= len(b) || b[i] != ',' {
				s.Err = SyntaxError(b, i, "',' or ']'")
				return false
			}
			i = SkipSpace(b, i+1)
		}
		s.n++
		if i < len(b) && b[i] == '{' {
			s.Obj = Object{b: b, i: i + 1, Close: -1}
			s.inObj = true
			return true
		}
		var v Span
		if v, s.Err = ScanValue(b, i); s.Err == nil {
			s.i = v.End
		}
	}
	return false
}
