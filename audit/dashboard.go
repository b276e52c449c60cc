package audit

// DatabasePath returns the absolute path of the app's live database file
// once provisioned (the configured Path before that). Readers such as the
// usage dashboard list its archives with DatabaseFiles.
func (a *App) DatabasePath() string {
	if k, ok := a.key.(string); ok {
		return k
	}
	return a.Path
}
