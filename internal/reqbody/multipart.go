package reqbody

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"
)

// The multipart functions find the parts of a multipart/form-data body by its delimiters, as
// mime/multipart does, but keep their byte offsets so that the model field can be rewritten without
// re-encoding the file parts. mime/multipart itself exposes no offsets.

// errMultipart is wrapped by every error about a malformed multipart body.
var errMultipart = errors.New("malformed multipart body")

// span is the half-open byte range [start, end) of a part's value in a body.
type span struct{ start, end int }

// formField is one part of a multipart/form-data body.
type formField struct {
	name  string // the name parameter of Content-Disposition
	file  bool   // whether it has a filename parameter, i.e. is a file and not a value
	value span   // the part's body
}

// MultipartModel returns the value of the "model" form field (not a file) of a multipart/form-data
// body, wherever it is among the parts. It fails with ErrNoModel when there is none, and with
// ErrDuplicateModel when there are several with different values: form parsers disagree on which
// one counts (mime/multipart's FormValue takes the first, many others the last).
func MultipartModel(contentType string, body []byte) (string, error) {
	var (
		model    []byte
		found    bool
		conflict bool
	)
	err := formFields(contentType, body, func(f formField) bool {
		if f.name != "model" || f.file {
			return true
		}
		v := body[f.value.start:f.value.end]
		if !found {
			model, found = v, true
			return true
		}
		if !bytes.Equal(v, model) {
			conflict = true
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return "", err
	case !found:
		return "", ErrNoModel
	case conflict:
		return "", ErrDuplicateModel
	}
	return string(model), nil
}

// ReplaceMultipartModel returns body with the value of every "model" form field replaced by model;
// every other byte, boundary included, is kept. It fails with ErrNoModel when there is no model field,
// and returns body itself when the model is already the same.
func ReplaceMultipartModel(contentType string, body []byte, model string) ([]byte, error) {
	var (
		values []span
		found  bool
	)
	err := formFields(contentType, body, func(f formField) bool {
		if f.name == "model" && !f.file {
			found = true
			if string(body[f.value.start:f.value.end]) != model {
				values = append(values, f.value)
			}
		}
		return true
	})
	switch {
	case err != nil:
		return nil, err
	case !found:
		return nil, ErrNoModel
	case len(values) == 0:
		return body, nil
	}
	out := make([]byte, 0, len(body)+len(values)*len(model))
	prev := 0
	for _, v := range values {
		out = append(out, body[prev:v.start]...)
		out = append(out, model...)
		prev = v.end
	}
	return append(out, body[prev:]...), nil
}

// formFields calls fn for each part of a multipart/form-data body, in order, until fn returns false.
// It accepts what mime/multipart accepts: a preamble, CRLF or bare LF line endings, transport padding
// after a delimiter.
func formFields(contentType string, body []byte, fn func(formField) bool) error {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("%w: content type: %v", errMultipart, err)
	}
	boundary := params["boundary"]
	if !strings.HasPrefix(mediaType, "multipart/") || boundary == "" {
		return fmt.Errorf("%w: content type %q has no multipart boundary", errMultipart, contentType)
	}
	dash := "--" + boundary

	// The first delimiter starts the body or a line of it; what comes before it is a preamble.
	pos := 0
	if !bytes.HasPrefix(body, []byte(dash)) {
		i := bytes.Index(body, []byte("\n"+dash))
		if i < 0 {
			return fmt.Errorf("%w: no boundary %q", errMultipart, boundary)
		}
		pos = i + 1
	}
	pos += len(dash)
	if bytes.HasPrefix(body[pos:], []byte("--")) {
		return nil // a closing delimiter only: no parts
	}
	pos = skipPadding(body, pos)
	nl := "\r\n"
	switch {
	case bytes.HasPrefix(body[pos:], []byte("\r\n")):
	case bytes.HasPrefix(body[pos:], []byte("\n")):
		nl = "\n" // like mime/multipart, a body that starts with bare LF uses it throughout
	default:
		return fmt.Errorf("%w: no line break after the boundary", errMultipart)
	}
	pos += len(nl)
	delim := []byte(nl + dash)

	for {
		// Headers end at an empty line; a part may have none.
		var headers []byte
		if bytes.HasPrefix(body[pos:], []byte(nl)) {
			pos += len(nl)
		} else {
			i := bytes.Index(body[pos:], []byte(nl+nl))
			if i < 0 {
				return fmt.Errorf("%w: part headers do not end", errMultipart)
			}
			headers = body[pos : pos+i]
			pos += i + 2*len(nl)
		}
		field, err := parseDisposition(headers, nl)
		if err != nil {
			return err
		}

		// The part's body ends at the next delimiter, which must be followed by "--" or a line break.
		start := pos
		for {
			i := bytes.Index(body[pos:], delim)
			if i < 0 {
				return fmt.Errorf("%w: no closing boundary", errMultipart)
			}
			end := pos + i
			after := end + len(delim)
			if bytes.HasPrefix(body[after:], []byte("--")) {
				field.value = span{start, end}
				fn(field)
				return nil
			}
			if p := skipPadding(body, after); bytes.HasPrefix(body[p:], []byte(nl)) {
				field.value = span{start, end}
				if !fn(field) {
					return nil
				}
				pos = p + len(nl)
				break
			}
			pos = end + 1 // the boundary string inside the content: look further
		}
	}
}

// skipPadding skips the spaces and tabs mime/multipart allows after a delimiter.
func skipPadding(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// parseDisposition reads the form-data name and filename of a part from its header lines.
func parseDisposition(headers []byte, nl string) (formField, error) {
	for len(headers) > 0 {
		line := headers
		if i := bytes.Index(headers, []byte(nl)); i >= 0 {
			line, headers = headers[:i], headers[i+len(nl):]
		} else {
			headers = nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return formField{}, fmt.Errorf("%w: part header %q has no colon", errMultipart, line)
		}
		if !strings.EqualFold(string(bytes.TrimSpace(name)), "Content-Disposition") {
			continue
		}
		disposition, params, err := mime.ParseMediaType(string(bytes.TrimSpace(value)))
		if err != nil || disposition != "form-data" {
			return formField{}, nil // not a form field: mime/multipart gives it no form name either
		}
		// As in mime/multipart's ReadForm, a part with a non-empty filename is a file, not a value.
		return formField{name: params["name"], file: params["filename"] != ""}, nil
	}
	return formField{}, nil
}
