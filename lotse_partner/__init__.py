"""The partner kit: what a member organisation's system needs to read its Lotse inbox and answer.

- `PartnerKeys`: the organisation's private keys (P-256 JWKs): `enc` keys open the personal data
  sealed to it, `sig` keys sign its acknowledgements. Kept in one file, mode 0600; rotation adds a key
  and keeps the old ones for records sealed before.
- `open_sealed`: the personal data (and the referral's notes) of an inbox record, opened with those keys.
- `acknowledge`: the signed acknowledgement of a forwarded withdrawal or erasure, to publish on the
  organisation's outbox.

It depends on `contracts` (the event models and the JOSE formats), never on Lotse's services.
"""

from .acks import acknowledge
from .inbox import open_sealed
from .keys import PartnerKeys

__all__ = ["PartnerKeys", "acknowledge", "open_sealed"]
