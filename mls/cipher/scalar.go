package cipher

// NIST-curve private keys (ECDSA and DHKEM) are big-endian scalars. RFC 9180
// and SEC 1 give them a fixed length (32, 48, 66 bytes), but some MLS
// implementations write the minimal big-endian form, and the official test
// vectors for suite 0x0005 carry 65-byte P-521 keys. Readers therefore
// accept a shorter encoding and left-pad it; writers always produce the
// fixed length.

// padScalar returns b left-padded with zeros to size bytes. An empty b or
// one longer than size is returned unchanged for the parser to reject.
func padScalar(b []byte, size int) []byte {
	if len(b) == 0 || len(b) >= size {
		return b
	}
	p := make([]byte, size)
	copy(p[size-len(b):], b)
	return p
}
