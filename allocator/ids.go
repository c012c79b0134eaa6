package allocator

import (
	"strconv"
	"strings"
)

// ValidID reports whether s is a contract id: 1 to 128 bytes of
// [A-Za-z0-9._:@/-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '@' || c == '/' || c == '-':
		default:
			return false
		}
	}
	return true
}

const reservationPrefix = "r_"

// FormatReservationID renders a reservation id as the API shows it.
func FormatReservationID(id uint64) string {
	return reservationPrefix + strconv.FormatUint(id, 16)
}

// ParseReservationID parses an id rendered by FormatReservationID. Only the
// canonical rendering is accepted, so one reservation has one name.
func ParseReservationID(s string) (uint64, bool) {
	rest, ok := strings.CutPrefix(s, reservationPrefix)
	if !ok || rest == "" || len(rest) > 16 || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 16, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 16) != rest {
		return 0, false
	}
	return id, true
}
