package reqbody

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"strings"
	"testing"
)

// form builds a multipart/form-data body with mime/multipart, fields in order; a field whose name
// starts with "@" is a file.
func form(t *testing.T, fields ...[2]string) (contentType string, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range fields {
		var (
			pw  io.Writer
			err error
		)
		if name, ok := strings.CutPrefix(f[0], "@"); ok {
			pw, err = w.CreateFormFile(name, "audio.wav")
		} else {
			pw, err = w.CreateFormField(f[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(pw, f[1])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), buf.Bytes()
}

func TestMultipartModel(t *testing.T) {
	ctFile, file := form(t, [2]string{"@file", "RIFF\r\n--not-the-boundary\r\nmodel"}, [2]string{"language", "en"}, [2]string{"model", "whisper-1"})
	ctTwo, two := form(t, [2]string{"model", "a"}, [2]string{"@file", "x"}, [2]string{"model", "b"})
	ctSame, same := form(t, [2]string{"model", "a"}, [2]string{"@file", "x"}, [2]string{"model", "a"})
	ctFileModel, fileModel := form(t, [2]string{"model", "a"}, [2]string{"@model", "b"})
	ctCase, caseVariant := form(t, [2]string{"model", "a"}, [2]string{"Model", "b"})
	ctNone, none := form(t, [2]string{"@model", "file named model"}, [2]string{"prompt", "p"})
	ctEmpty, empty := form(t)
	tests := []struct {
		name, contentType string
		body              []byte
		want              string
		err               error
	}{
		{name: "model after the file", contentType: ctFile, body: file, want: "whisper-1"},
		{name: "two different models", contentType: ctTwo, body: two, err: ErrDuplicateModel},
		{name: "the same model twice", contentType: ctSame, body: same, want: "a"},
		{name: "a file named model is no second model", contentType: ctFileModel, body: fileModel, want: "a"},
		{name: "field names are case-sensitive", contentType: ctCase, body: caseVariant, want: "a"},
		{name: "empty second model differs", contentType: "multipart/form-data; boundary=XY",
			body: []byte("--XY\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n" +
				"--XY\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\r\n--XY--"), err: ErrDuplicateModel},
		{name: "a file is not a model", contentType: ctNone, body: none, err: ErrNoModel},
		{name: "no parts", contentType: ctEmpty, body: empty, err: ErrNoModel},
		{name: "LF line endings and preamble", contentType: `multipart/form-data; boundary="b b"`,
			body: []byte("preamble\n--b b\nContent-Disposition: form-data; name=\"model\"\n\nm1\n--b b--\n"), want: "m1"},
		{name: "boundary text inside content", contentType: "multipart/form-data; boundary=XY",
			body: []byte("--XY\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--XYZ\r\n--XY--"), want: "m\r\n--XYZ"},
		{name: "no closing boundary", contentType: ctFile, body: file[:len(file)-10], err: errMultipart},
		{name: "no boundary parameter", contentType: "multipart/form-data", body: file, err: errMultipart},
		{name: "not multipart", contentType: "application/json; boundary=x", body: file, err: errMultipart},
		{name: "bad content type", contentType: "multipart/form-data; boundary", body: file, err: errMultipart},
		{name: "unterminated headers", contentType: "multipart/form-data; boundary=XY",
			body: []byte("--XY\r\nContent-Disposition: form-data; name=\"model\"\r\n"), err: errMultipart},
		{name: "header without colon", contentType: "multipart/form-data; boundary=XY",
			body: []byte("--XY\r\nbogus\r\n\r\nm\r\n--XY--"), err: errMultipart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MultipartModel(tt.contentType, tt.body)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("MultipartModel() error = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("MultipartModel() = %q, want %q", got, tt.want)
			}
			if tt.err != nil {
				return
			}
			// mime/multipart must read the same value.
			if std := stdFormValue(t, tt.contentType, tt.body, "model"); std != tt.want {
				t.Errorf("mime/multipart reads model %q, MultipartModel %q", std, tt.want)
			}
		})
	}
}

func stdFormValue(t *testing.T, contentType string, body []byte, name string) string {
	t.Helper()
	boundary := contentType[strings.Index(contentType, "boundary=")+len("boundary="):]
	boundary = strings.Trim(boundary, `"`)
	f, err := multipart.NewReader(bytes.NewReader(body), boundary).ReadForm(1 << 20)
	if err != nil {
		t.Fatalf("mime/multipart: %v", err)
	}
	if v := f.Value[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func TestReplaceMultipartModel(t *testing.T) {
	ct, body := form(t, [2]string{"@file", "bytes\x00\xff"}, [2]string{"model", "alias"}, [2]string{"temperature", "0"})
	got, err := ReplaceMultipartModel(ct, body, "whisper-large-v3")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Replace(body, []byte("\r\n\r\nalias\r\n"), []byte("\r\n\r\nwhisper-large-v3\r\n"), 1)
	if !bytes.Equal(got, want) {
		t.Errorf("ReplaceMultipartModel() =\n%q\nwant\n%q", got, want)
	}
	if m, err := MultipartModel(ct, got); err != nil || m != "whisper-large-v3" {
		t.Errorf("model of the result = %q, %v", m, err)
	}
	if v := stdFormValue(t, ct, got, "temperature"); v != "0" {
		t.Errorf("temperature = %q after the edit", v)
	}

	same, err := ReplaceMultipartModel(ct, body, "alias")
	if err != nil || &same[0] != &body[0] {
		t.Errorf("replacing with the same model: %v, copy made: %v", err, &same[0] != &body[0])
	}

	ctDup, dup := form(t, [2]string{"model", "a"}, [2]string{"model", "b"})
	got, err = ReplaceMultipartModel(ctDup, dup, "c")
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(got, []byte("\r\n\r\nc\r\n")); n != 2 {
		t.Errorf("replaced %d of 2 model fields:\n%q", n, got)
	}

	ctNone, none := form(t, [2]string{"@file", "x"})
	if _, err := ReplaceMultipartModel(ctNone, none, "m"); !errors.Is(err, ErrNoModel) {
		t.Errorf("without a model field: error = %v, want ErrNoModel", err)
	}
}
