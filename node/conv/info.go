package conv

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/quicproquo/qpq/mls"
)

// ExtensionType is the GroupContext extension that says what a group is to
// quicproquo: a 1:1 DM or a named group. It is in the private range of
// RFC 9420 §17.3, and every member's leaf lists it in its capabilities
// (node/keys puts it in every KeyPackage), so a joiner reads it,
// authenticated, from the Welcome's GroupInfo.
const ExtensionType mls.ExtensionType = 0xf0a1

// Extension data, version 1:
//
//	offset size  field
//	0      1     version = 0x01
//	1      1     kind: 0x01 direct (DM), 0x02 group
//	2      1     name length n: 0 for a DM, 1 to MaxNameSize for a group
//	3      n     name, UTF-8
const (
	infoVersion = 0x01
	// MaxNameSize bounds a group name, in bytes.
	MaxNameSize = 64
)

// Kind says what a conversation is.
type Kind uint8

const (
	KindDirect Kind = 0x01 // a DM: exactly two members, group id = the channel id
	KindGroup  Kind = 0x02 // a named group
)

func (k Kind) String() string {
	switch k {
	case KindDirect:
		return "dm"
	case KindGroup:
		return "group"
	}
	return fmt.Sprintf("kind(0x%02x)", uint8(k))
}

// ErrInfo reports extension data that does not parse.
var ErrInfo = errors.New("conv: bad conversation extension")

// Info is the content of the conversation extension.
type Info struct {
	Kind Kind
	Name string
}

// Marshal encodes i; it refuses what ParseInfo would refuse.
func (i Info) Marshal() ([]byte, error) {
	if err := i.check(); err != nil {
		return nil, err
	}
	return append([]byte{infoVersion, byte(i.Kind), byte(len(i.Name))}, i.Name...), nil
}

func (i Info) check() error {
	switch i.Kind {
	case KindDirect:
		if i.Name != "" {
			return fmt.Errorf("%w: a DM has no name", ErrInfo)
		}
	case KindGroup:
		if i.Name == "" || len(i.Name) > MaxNameSize || !utf8.ValidString(i.Name) {
			return fmt.Errorf("%w: group name must be 1 to %d bytes of UTF-8", ErrInfo, MaxNameSize)
		}
		// Printable, like a username: a name is shown on every line of
		// the conversation and in the prompt.
		for _, r := range i.Name {
			if !unicode.IsPrint(r) {
				return fmt.Errorf("%w: group name holds the unprintable character %U", ErrInfo, r)
			}
		}
	default:
		return fmt.Errorf("%w: unknown kind 0x%02x", ErrInfo, uint8(i.Kind))
	}
	return nil
}

// ParseInfo decodes extension data strictly.
func ParseInfo(b []byte) (Info, error) {
	if len(b) < 3 {
		return Info{}, fmt.Errorf("%w: %d bytes", ErrInfo, len(b))
	}
	if b[0] != infoVersion {
		return Info{}, fmt.Errorf("%w: version 0x%02x", ErrInfo, b[0])
	}
	if int(b[2]) != len(b)-3 {
		return Info{}, fmt.Errorf("%w: name length %d, %d bytes follow", ErrInfo, b[2], len(b)-3)
	}
	i := Info{Kind: Kind(b[1]), Name: string(b[3:])}
	if err := i.check(); err != nil {
		return Info{}, err
	}
	return i, nil
}

func (i Info) extension() (mls.Extension, error) {
	data, err := i.Marshal()
	return mls.Extension{Type: ExtensionType, Data: data}, err
}
