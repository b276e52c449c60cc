package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"
)

// The page and its assets, embedded: no CDN, no build step. The charting
// library is uPlot (MIT, static/vendor/uPlot.LICENSE), vendored minified.
//
//go:embed static
var staticFS embed.FS

// asset is one embedded file, with the ETag of its content.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets maps names under static/ to their content; built once, read only.
var assets = func() map[string]asset {
	m := map[string]asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".LICENSE", "":
			ct = "text/plain; charset=utf-8"
		}
		m[p[len("static/"):]] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard: reading embedded assets: " + err.Error())
	}
	return m
}()

// contentSecurityPolicy allows the page its own scripts, styles and API
// only: whatever a stored model name or body holds, it cannot run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func serveIndex(w http.ResponseWriter, r *http.Request) {
	serveAsset(w, r, "index.html")
}

func serveStatic(w http.ResponseWriter, r *http.Request, name string) {
	if name == "index.html" {
		http.NotFound(w, r) // one URL for the page: the mount's root
		return
	}
	serveAsset(w, r, name)
}

func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	// Revalidate each time (a 304 when unchanged): a new build's page must
	// never run an old build's script.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if name == "index.html" {
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
