# federation.capnp — home servers of different domains relaying for each
# other's users (quicproquo federation, see docs/PROTOCOL.md).
#
# Served over QUIC v1 + TLS 1.3 with client certificates (mutual TLS),
# ALPN "qpq-fed/1"; one bidirectional stream per connection carries
# standard two-party Cap'n Proto RPC whose bootstrap capability is
# FederationService. Each side pins the other's certificate (SHA-256 of
# the DER leaf). A server answers only the peers its operator configured,
# and only calls whose origin is the domain of the certificate presented.
#
# Every call carries:
#   origin : the calling server's domain; it must be the domain the
#            answering server has pinned the caller's certificate for.
#   hops   : servers this request passed through before the caller, plus
#            one (the first server sends 1). A server that would pass a
#            request on refuses it when hops reaches its limit.
@0xa2612b20fa289bef;

using Go = import "/go.capnp";
$Go.package("fedschema");
$Go.import("github.com/quicproquo/qpq/schema/fedschema");

interface FederationService {
  # Leave an opaque payload from senderKey (a user of the caller's side) in
  # recipientKey's inbox (channelId empty, or the pair's 16-byte 1:1
  # channel). Answered once the payload is on disk. relay identifies the
  # delivery for de-duplication: a repeat (same stream, seq not above the
  # last one applied from that stream) is answered duplicate=true and
  # stored nothing.
  relayEnqueue @0 (origin :Text, hops :UInt8, relay :RelayId, senderKey :Data, recipientKey :Data, payload :Data, channelId :Data) -> (seq :UInt64, duplicate :Bool);

  # relayEnqueue to many recipients of the answering server, in one
  # transaction; seqs in request order.
  relayBatchEnqueue @1 (origin :Text, hops :UInt8, relay :RelayId, senderKey :Data, recipientKeys :List(Data), payload :Data, channelId :Data) -> (seqs :List(UInt64), duplicate :Bool);

  # NodeService.fetchKeyPackage for a user of the answering server: pops
  # one key package; empty Data when none is left.
  proxyFetchKeyPackage @2 (origin :Text, hops :UInt8, identityKey :Data) -> (package :Data);

  # NodeService.fetchHybridKey for a user of the answering server.
  proxyFetchHybridKey @3 (origin :Text, hops :UInt8, identityKey :Data) -> (hybridPublicKey :Data);

  # NodeService.resolveUser for a name registered at the answering server
  # (the part before "@domain"); empty Data when it is not registered.
  proxyResolveUser @4 (origin :Text, hops :UInt8, username :Text) -> (identityKey :Data);

  # NodeService.createChannel between callerKey (a user of the caller's
  # side) and peerKey (a user of the answering server, and the bytewise
  # lower key of the two: the home server of the lower key decides who
  # initiates). Same channelId and wasNew rules as NodeService.
  proxyCreateChannel @5 (origin :Text, hops :UInt8, callerKey :Data, peerKey :Data) -> (channelId :Data, wasNew :Bool);

  # Liveness; domain is the answering server's.
  health @6 (origin :Text) -> (status :Text, domain :Text);

  # NodeService.resolveIdentity for a key registered at the answering
  # server: its username there (without "@domain"); empty when the key is
  # not one of its users. The caller asks for a sender it has only seen
  # relayed from that server, so that its own users see a name. Servers
  # without this method answer unimplemented; the caller then keeps the
  # key unnamed, as before.
  proxyResolveIdentity @7 (origin :Text, hops :UInt8, identityKey :Data) -> (username :Text);
}

# Identifies one relayed delivery: the caller's outgoing queue to the
# answering server delivers in seq order.
struct RelayId {
  stream @0 :Data;  # 16 random bytes, new each time the caller's server starts
  seq @1 :UInt64;   # the delivery's position in that queue (increasing)
}
