package reqbody

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxModelLen is the longest model name the gateway accepts, in bytes. Real model names are far
// shorter (the longest deployment and fine-tune names run to about 100 bytes); a longer one is a
// mistake or an attack, and would be copied into every log line, audit row and metric label.
const MaxModelLen = 256

// ErrInvalidModel reports a model name the gateway refuses: longer than MaxModelLen, not valid
// UTF-8, or holding a control character. Such a name cannot be a real model, and it would end up
// in metric labels, access logs and audit rows, which need valid, printable text.
var ErrInvalidModel = errors.New("invalid model name")

// CheckModel returns nil when model is a name the gateway routes, else an error wrapping
// ErrInvalidModel that says why.
func CheckModel(model string) error {
	if len(model) > MaxModelLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidModel, MaxModelLen)
	}
	for i := 0; i < len(model); {
		c := model[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("%w: control character at byte %d", ErrInvalidModel, i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(model[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return fmt.Errorf("%w: not valid UTF-8 at byte %d", ErrInvalidModel, i)
		case r >= 0x80 && r <= 0x9f: // C1 controls
			return fmt.Errorf("%w: control character at byte %d", ErrInvalidModel, i)
		}
		i += size
	}
	return nil
}
