package mls

// Limits on what a decoder accepts from outside. Every length and count in
// a received message is checked against one of these before anything is
// allocated for it; a message beyond a limit is rejected as malformed.
// They are generous for the protocol as used today and leave room for
// post-quantum keys and signatures.
const (
	// MaxGroupIDSize bounds group_id (and psk_group_id, ReInit.group_id).
	MaxGroupIDSize = 1 << 10
	// MaxKeySize bounds HPKE and signature public keys, KEM outputs,
	// signatures, hashes, MACs, secrets and nonces.
	MaxKeySize = 1 << 13
	// MaxCredentialSize bounds a basic identity or one certificate.
	MaxCredentialSize = 1 << 16
	// MaxCertificates bounds the certificates in an X.509 credential.
	MaxCertificates = 16
	// MaxDataSize bounds application_data, authenticated_data, a
	// PrivateMessage ciphertext and an extension's data (a ratchet_tree
	// extension carries the whole tree).
	MaxDataSize = 1 << 24
	// MaxListSize bounds the bytes of a list of small items (capabilities,
	// unmerged leaves, extension lists outside GroupInfo).
	MaxListSize = 1 << 16
	// MaxExtensions bounds the entries of one extension list.
	MaxExtensions = 256
	// MaxCapabilityItems bounds each list in Capabilities.
	MaxCapabilityItems = 256
	// MaxProposals bounds the proposals of a Commit and the PSKs of a
	// GroupSecrets.
	MaxProposals = 1 << 12
	// MaxLeaves bounds the size of a group (leaves of the ratchet tree).
	MaxLeaves = 1 << 16
	// MaxPathLength bounds the nodes of an UpdatePath (the depth of a
	// MaxLeaves tree).
	MaxPathLength = 32
	// MaxWelcomeSecrets bounds the new members one Welcome addresses.
	MaxWelcomeSecrets = MaxLeaves
	// MaxPastEpochs bounds Config.PastEpochs, and the past epochs a
	// persisted group state may hold.
	MaxPastEpochs = 1 << 10
	// MaxResumptionHistory bounds Config.ResumptionHistory, and the
	// resumption PSKs a persisted group state may hold.
	MaxResumptionHistory = 1 << 16
)

// maxNodes bounds the entries of a ratchet tree.
const maxNodes = 2*MaxLeaves - 1
