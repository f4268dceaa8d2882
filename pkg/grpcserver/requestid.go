package grpcserver

// RequestIDHeader is the metadata key carrying a request id.
const RequestIDHeader = "x-request-id"

// maxRequestIDLen bounds a caller-supplied request id; a longer or
// non-printable one is replaced, so that callers cannot inject into logs.
const maxRequestIDLen = 64

func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
