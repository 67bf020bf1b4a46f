package mls

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

type messagesVector struct {
	MLSWelcome                     hx `json:"mls_welcome"`
	MLSGroupInfo                   hx `json:"mls_group_info"`
	MLSKeyPackage                  hx `json:"mls_key_package"`
	RatchetTree                    hx `json:"ratchet_tree"`
	GroupSecrets                   hx `json:"group_secrets"`
	AddProposal                    hx `json:"add_proposal"`
	UpdateProposal                 hx `json:"update_proposal"`
	RemoveProposal                 hx `json:"remove_proposal"`
	PreSharedKeyProposal           hx `json:"pre_shared_key_proposal"`
	ReInitProposal                 hx `json:"re_init_proposal"`
	ExternalInitProposal           hx `json:"external_init_proposal"`
	GroupContextExtensionsProposal hx `json:"group_context_extensions_proposal"`
	Commit                         hx `json:"commit"`
	PublicMessageApplication       hx `json:"public_message_application"`
	PublicMessageProposal          hx `json:"public_message_proposal"`
	PublicMessageCommit            hx `json:"public_message_commit"`
	PrivateMessage                 hx `json:"private_message"`
}

// TestVectorMessages runs messages.json: every field decodes as its
// structure and re-encodes to the same bytes.
func TestVectorMessages(t *testing.T) {
	var cases []messagesVector
	testvec.Load(t, "messages.json", &cases)
	tally := testvec.NewTally(t, "messages.json")
	for i, c := range cases {
		tally.Case(t, 0, fmt.Sprint(i), func(t *testing.T) {
			roundTrip := func(field string, data []byte, v codec.Unmarshaler) {
				t.Helper()
				if err := codec.Unmarshal(data, v); err != nil {
					t.Fatalf("%s: decode: %v", field, err)
				}
				if got := codec.Marshal(v.(codec.Marshaler)); !bytes.Equal(got, data) {
					t.Fatalf("%s: re-encoded\n%x\nwant\n%x", field, got, data)
				}
			}
			wantFormat := func(field string, data []byte, wf WireFormat, ct ContentType) {
				t.Helper()
				var m MLSMessage
				roundTrip(field, data, &m)
				if m.WireFormat != wf {
					t.Fatalf("%s: wire format %d, want %d", field, m.WireFormat, wf)
				}
				if ct != 0 && m.PublicMessage.Content.ContentType != ct {
					t.Fatalf("%s: content type %d, want %d", field, m.PublicMessage.Content.ContentType, ct)
				}
			}
			wantFormat("mls_welcome", c.MLSWelcome, WireFormatWelcome, 0)
			wantFormat("mls_group_info", c.MLSGroupInfo, WireFormatGroupInfo, 0)
			wantFormat("mls_key_package", c.MLSKeyPackage, WireFormatKeyPackage, 0)
			roundTrip("ratchet_tree", c.RatchetTree, new(RatchetTree))
			roundTrip("group_secrets", c.GroupSecrets, new(GroupSecrets))
			roundTrip("add_proposal", c.AddProposal, new(AddProposal))
			roundTrip("update_proposal", c.UpdateProposal, new(UpdateProposal))
			roundTrip("remove_proposal", c.RemoveProposal, new(RemoveProposal))
			roundTrip("pre_shared_key_proposal", c.PreSharedKeyProposal, new(PreSharedKeyProposal))
			roundTrip("re_init_proposal", c.ReInitProposal, new(ReInitProposal))
			roundTrip("external_init_proposal", c.ExternalInitProposal, new(ExternalInitProposal))
			roundTrip("group_context_extensions_proposal", c.GroupContextExtensionsProposal, new(GroupContextExtensionsProposal))
			roundTrip("commit", c.Commit, new(Commit))
			wantFormat("public_message_application", c.PublicMessageApplication, WireFormatPublicMessage, ContentTypeApplication)
			wantFormat("public_message_proposal", c.PublicMessageProposal, WireFormatPublicMessage, ContentTypeProposal)
			wantFormat("public_message_commit", c.PublicMessageCommit, WireFormatPublicMessage, ContentTypeCommit)
			wantFormat("private_message", c.PrivateMessage, WireFormatPrivateMessage, 0)
		})
	}
}
