// Package pake fixes the OPAQUE (RFC 9807) parameters of the quicproquo
// wire protocol and implements the client's side of registration and
// login, so a password never leaves the device.
//
// Parameters: bytemare/opaque DefaultConfiguration() (ristretto255,
// SHA-512, Argon2id as the key-stretching function) with Context
// "quicproquo/opaque/v1", AKE identities left at the library default (the
// two public keys), and the username as credential identifier.
//
// Messages, as carried by opaqueRegister*/opaqueLogin* (sizes for these
// parameters):
//
//	RegistrationRequest   32 bytes    client -> server (registerStart)
//	RegistrationResponse  64 bytes    server -> client
//	RegistrationRecord   192 bytes    client -> server (registerFinish)
//	KE1                   96 bytes    client -> server (loginStart)
//	KE2                  320 bytes    server -> client
//	KE3                   64 bytes    client -> server (loginFinish)
//
// The server side lives in relay/auth.
package pake

import (
	"errors"
	"fmt"

	"github.com/bytemare/opaque"
)

// Context is the OPAQUE context string that binds every run to this
// protocol.
const Context = "quicproquo/opaque/v1"

// Configuration returns the protocol's OPAQUE configuration. Each call
// returns a fresh value the caller may keep.
func Configuration() *opaque.Configuration {
	c := opaque.DefaultConfiguration()
	c.Context = []byte(Context)
	return c
}

// MaxPasswordSize bounds a password, so a caller cannot feed the
// key-stretching function unbounded input.
const MaxPasswordSize = 1024

// ErrWrongPassword is returned by Login.Finish when the server's answer
// does not open with the password: a wrong password, or an unknown user
// (the server answers those with a fake record so the two look alike).
var ErrWrongPassword = errors.New("pake: wrong username or password")

func checkPassword(password []byte) error {
	if len(password) == 0 {
		return errors.New("pake: empty password")
	}
	if len(password) > MaxPasswordSize {
		return fmt.Errorf("pake: password longer than %d bytes", MaxPasswordSize)
	}
	return nil
}

// Registration is a client's registration in progress.
type Registration struct{ c *opaque.Client }

// StartRegistration blinds password and returns the state and the
// RegistrationRequest to send with opaqueRegisterStart.
func StartRegistration(password []byte) (*Registration, []byte, error) {
	if err := checkPassword(password); err != nil {
		return nil, nil, err
	}
	c, err := Configuration().Client()
	if err != nil {
		return nil, nil, fmt.Errorf("pake: %w", err)
	}
	req, err := c.RegistrationInit(password)
	if err != nil {
		return nil, nil, fmt.Errorf("pake: %w", err)
	}
	return &Registration{c: c}, req.Serialize(), nil
}

// Finish takes the server's RegistrationResponse and returns the
// RegistrationRecord to upload with opaqueRegisterFinish.
func (r *Registration) Finish(response []byte) ([]byte, error) {
	defer r.c.ClearState()
	resp, err := r.c.Deserialize.RegistrationResponse(response)
	if err != nil {
		return nil, fmt.Errorf("pake: server's registration response: %w", err)
	}
	rec, _, err := r.c.RegistrationFinalize(resp, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("pake: %w", err)
	}
	return rec.Serialize(), nil
}

// Login is a client's login in progress.
type Login struct{ c *opaque.Client }

// StartLogin blinds password and returns the state and the KE1 to send
// with opaqueLoginStart.
func StartLogin(password []byte) (*Login, []byte, error) {
	if err := checkPassword(password); err != nil {
		return nil, nil, err
	}
	c, err := Configuration().Client()
	if err != nil {
		return nil, nil, fmt.Errorf("pake: %w", err)
	}
	ke1, err := c.GenerateKE1(password)
	if err != nil {
		return nil, nil, fmt.Errorf("pake: %w", err)
	}
	return &Login{c: c}, ke1.Serialize(), nil
}

// Finish takes the server's KE2 and returns the KE3 to send with
// opaqueLoginFinish. ErrWrongPassword means the password does not open
// the server's answer; the login must then be abandoned.
func (l *Login) Finish(ke2 []byte) ([]byte, error) {
	defer l.c.ClearState()
	msg, err := l.c.Deserialize.KE2(ke2)
	if err != nil {
		return nil, fmt.Errorf("pake: server's KE2: %w", err)
	}
	ke3, _, _, err := l.c.GenerateKE3(msg, nil, nil)
	if err != nil {
		if errors.Is(err, opaque.ErrAuthentication) {
			return nil, ErrWrongPassword
		}
		return nil, fmt.Errorf("pake: %w", err)
	}
	return ke3.Serialize(), nil
}
