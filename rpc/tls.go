package rpc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol of NodeService over QUIC.
const ALPN = "capnp"

// Fingerprint is the SHA-256 of a server's DER-encoded leaf certificate.
type Fingerprint [sha256.Size]byte

// FingerprintOf returns the fingerprint of a DER certificate.
func FingerprintOf(der []byte) Fingerprint { return sha256.Sum256(der) }

const fingerprintPrefix = "sha256:"

// String returns "sha256:<64 lowercase hex digits>", the form printed by
// `qpq serve` and accepted by ParseFingerprint.
func (f Fingerprint) String() string { return fingerprintPrefix + hex.EncodeToString(f[:]) }

// IsZero reports whether f is unset.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// ParseFingerprint parses "sha256:<hex>" (the prefix is optional, hex
// case-insensitive, and ':' separators between byte pairs are allowed, as
// some tools print them).
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	h := strings.TrimSpace(s)
	if len(h) > len(fingerprintPrefix) && strings.EqualFold(h[:len(fingerprintPrefix)], fingerprintPrefix) {
		h = h[len(fingerprintPrefix):]
	}
	if len(h) == 3*len(f)-1 {
		h = strings.ReplaceAll(h, ":", "")
	}
	if len(h) != 2*len(f) {
		return Fingerprint{}, fmt.Errorf("rpc: fingerprint %q: want sha256: and 64 hex digits", s)
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return Fingerprint{}, fmt.Errorf("rpc: fingerprint %q: %w", s, err)
	}
	return f, nil
}

// Files under a data directory's tls/ folder.
const (
	tlsDir       = "tls"
	certFileName = "cert.pem"
	keyFileName  = "key.pem"
)

// certValidity is long because nothing checks it but the pin; a home
// server's fingerprint must not change under its users.
const certValidity = 100 * 365 * 24 * time.Hour

// LoadOrCreateCertificate returns the server certificate kept under
// dataDir/tls/ (cert.pem, key.pem with mode 0600), creating a self-signed
// ECDSA P-256 certificate there on first use.
func LoadOrCreateCertificate(dataDir string) (tls.Certificate, error) {
	dir := filepath.Join(dataDir, tlsDir)
	certPath, keyPath := filepath.Join(dir, certFileName), filepath.Join(dir, keyFileName)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCertificate(certPath, keyPath)
	case !errors.Is(certErr, os.ErrNotExist) || !errors.Is(keyErr, os.ErrNotExist):
		return tls.Certificate{}, fmt.Errorf("rpc: %s holds only part of a certificate (cert: %v, key: %v); remove it or restore both files", dir, certErr, keyErr)
	}
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("rpc: %w", err)
	}
	// The key first: a crash between the two writes leaves no certificate
	// without its key (the partial state above is reported, not papered over).
	if err := writeFileSync(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileSync(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return LoadCertificate(certPath, keyPath)
}

// LoadCertificate loads an operator-given PEM certificate chain and key.
func LoadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("rpc: load certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// CertificateFingerprint returns the fingerprint of cert's leaf.
func CertificateFingerprint(cert tls.Certificate) Fingerprint {
	if len(cert.Certificate) == 0 {
		return Fingerprint{}
	}
	return FingerprintOf(cert.Certificate[0])
}

func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: serial: %w", err)
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "quicproquo home server"},
		NotBefore:             now,
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"quicproquo"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: create certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// writeFileSync writes a new file and syncs it and its directory, so the
// certificate a fingerprint was printed for survives a crash.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("rpc: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("rpc: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("rpc: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}

// ServerTLSConfig is the TLS 1.3 configuration of a listener serving cert
// for the application protocol alpn, with no client certificates.
func ServerTLSConfig(cert tls.Certificate, alpn string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		MinVersion:   tls.VersionTLS13,
	}
}

// resetKeyInfo labels the stateless reset key HKDF derives from a
// listener's private key, keeping it apart from any other use of that key;
// the listener's first ALPN follows it (after a space), so that the home
// server's two listeners, one certificate, have keys of their own.
const resetKeyInfo = "quicproquo/rpc/quic-stateless-reset/v1"

// statelessResetKey derives the key QUIC stateless reset tokens are made
// with from the private key of tlsConf's first certificate: the key must
// outlive the process, because a reset is what a restarted server sends to
// a client still using a connection of its previous run. The same
// certificate and ALPN give the same key. Without a certificate, or with a private
// key that has no PKCS #8 form (an opaque crypto.Signer), it returns nil:
// resets are off, and such a client waits for the idle timeout as before.
func statelessResetKey(tlsConf *tls.Config) *quic.StatelessResetKey {
	if len(tlsConf.Certificates) == 0 {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(tlsConf.Certificates[0].PrivateKey)
	if err != nil {
		return nil
	}
	info := resetKeyInfo
	if len(tlsConf.NextProtos) > 0 {
		info += " " + tlsConf.NextProtos[0]
	}
	k, err := hkdf.Key(sha256.New, der, nil, info, len(quic.StatelessResetKey{}))
	if err != nil { // only for a length SHA-256 cannot give
		return nil
	}
	return (*quic.StatelessResetKey)(k)
}

// FingerprintMismatchError is returned by Dial when the server presents a
// certificate other than the pinned one. It may mean the server was
// reinstalled or that someone is in the middle; either way the caller
// must not proceed without asking its user.
type FingerprintMismatchError struct {
	Want, Got Fingerprint
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("rpc: server certificate fingerprint is %s, but %s is pinned", e.Got, e.Want)
}

// PinnedClientTLSConfig is the TLS 1.3 configuration of a client of alpn
// that verifies the server only by its pinned fingerprint (any
// certificate when tofu is set); seen, if not nil, receives the
// fingerprint the server presented. Add Certificates to present a client
// certificate.
func PinnedClientTLSConfig(alpn string, pin Fingerprint, tofu bool, seen *Fingerprint) *tls.Config {
	if seen == nil {
		seen = new(Fingerprint)
	}
	return &tls.Config{
		NextProtos: []string{alpn},
		MinVersion: tls.VersionTLS13,
		// Chain validation is replaced by the pin below: a home server's
		// certificate is self-signed and named by its fingerprint.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("rpc: server sent no certificate")
			}
			got := FingerprintOf(raw[0])
			*seen = got
			if !tofu && got != pin {
				return &FingerprintMismatchError{Want: pin, Got: got}
			}
			return nil
		},
	}
}
