"""A fleet of mixers over one NATS cluster (`fluxmix-mixer --fleet NAME`).

Everything the members share lives in NATS itself, one module per job:

- naming: the fleet's bucket names and key encodings;
- kvconn: the member's own NATS connection and the buckets, created or reused;
- membership: registration and heartbeat (a KV bucket whose TTL is the member TTL);
- leases: one lease per source gear (create to acquire, compare-and-set to renew, a local
  deadline on the monotonic clock that fences a paused old holder);
- checkpoints: source positions in KV, so a new lease holder continues where the old one was;
- claims: the fleet-wide de-duplication of sink writes (a claim per message id);
- desired: the fleet's one desired scenario (bytes in an Object Store, its hash in KV);
- member: the FleetMember that ties them to one mixer.
- release: settling the files and leases of a member gone for good (`fluxmix fleet release`).
"""

from fluxmix.fleet.member import FleetMember, FleetSettings

__all__ = ["FleetMember", "FleetSettings"]
